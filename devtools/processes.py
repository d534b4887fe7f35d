"""Starting the service and the dashboard as child processes on loopback and waiting until they
answer: for tests, the demo and the benchmarks (not part of any shipped image)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from dashboard.launch import APP, ROOT, streamlit_command

__all__ = ["APP", "ROOT", "free_port", "start_dashboard", "start_service", "stop", "wait_for"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 60.0, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with code {proc.returncode} before answering")
        try:
            if httpx.get(url, timeout=2.0).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:g} s")


def start_service(port: int, env: dict[str, str], log_path: Path | None = None, workers: int = 1) -> subprocess.Popen:
    """`python -m service` on 127.0.0.1:port with extra SEPSIS_* env; returns once /ready is 200."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", str(workers)],
                            cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{port}/ready", proc)
    except Exception:
        stop(proc)
        raise
    return proc


def start_dashboard(port: int, api_url: str, api_key: str, env: dict[str, str] | None = None,
                    log_path: Path | None = None, host: str = "127.0.0.1") -> subprocess.Popen:
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(streamlit_command(port, host), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "SEPSIS_DASHBOARD_API_URL": api_url,
                                 "SEPSIS_DASHBOARD_API_KEY": api_key, **(env or {})})
    try:
        wait_for(f"http://127.0.0.1:{port}/_stcore/health", proc)
    except Exception:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
