"""`python -m service --workers N` makes a folder for the workers' metrics files at start and removes
it when the server stops: every start used to leave a sepsis-metrics-* folder behind."""
from __future__ import annotations

import subprocess
import sys

import httpx

from devtools.processes import free_port, stop, wait_for
from tests.service.conftest import hdr
from tests.service.live import ROOT, service_env


def _folders(tmp) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("sepsis-metrics-"))


def _serve(env: dict, tmp) -> list[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "2"], cwd=ROOT, env={**env, "TMPDIR": str(tmp)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/ready", proc, timeout_s=90)
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", headers=hdr("monitor"), timeout=30).status_code == 200
        return _folders(tmp)
    finally:
        stop(proc)
        assert proc.returncode == 0, proc.returncode


def test_the_metrics_folder_is_removed_when_the_server_stops(sqlite_url, models_root, tmp_path):
    env = service_env(sqlite_url, models_root)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    while_running = _serve(env, tmp)
    assert len(while_running) == 1 and _folders(tmp) == []

