"""Starting the dashboard (and, for tests, demos and benchmarks, a service) as child processes on
loopback, and waiting until they answer."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
APP = Path(__file__).resolve().parent / "app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def streamlit_command(port: int, host: str = "127.0.0.1") -> list[str]:
    # showErrorDetails off: an unexpected error shows a short message, never a traceback.
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless=true",
            f"--server.port={port}", f"--server.address={host}", "--browser.gatherUsageStats=false",
            "--client.showErrorDetails=false", "--client.toolbarMode=minimal", "--server.fileWatcherType=none"]


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


def start_service(port: int, env: dict[str, str], log_path: Path | None = None) -> subprocess.Popen:
    """`python -m service` on 127.0.0.1:port with extra SEPSIS_* env; returns once /ready is 200."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
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
