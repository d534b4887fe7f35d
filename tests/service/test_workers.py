"""`python -m service --workers N`: several processes behind one port, one set of metrics.

Each uvicorn worker is its own process; a scrape reaches one of them. The service points
prometheus_client at a shared folder, so every scrape reports the whole server's counts."""
from __future__ import annotations

import re
import subprocess
import sys

import httpx

from devtools.processes import free_port, stop, wait_for
from tests.service.conftest import T0, hdr, iso
from tests.service.live import ROOT, service_env


def _predictions(text: str) -> float:
    found = re.findall(r'^sepsis_predictions_total\{[^}]*\} ([0-9.e+]+)$', text, re.M)
    return sum(float(v) for v in found)


def test_metrics_count_every_worker(sqlite_url, models_root):
    env = service_env(sqlite_url, models_root)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "2"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/ready", proc, timeout_s=90)
        n = 24
        # a fresh connection per request, so the kernel spreads them over both workers
        for i in range(n):
            body = {"patient_id": f"w{i % 6}", "timestamp": iso(T0.replace(hour=i // 6)), "vitals": {"HR": 80.0 + i}}
            r = httpx.post(f"http://127.0.0.1:{port}/predict", json=body, headers=hdr("ingest"), timeout=30)
            assert r.status_code == 200, r.text
        seen = set()
        for _ in range(8):
            r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=hdr("monitor"), timeout=30)
            assert r.status_code == 200, r.text
            seen.add(_predictions(r.text))
        assert seen == {float(n)}, f"scrapes reported {sorted(seen)} predictions, not the {n} the server stored"
    finally:
        stop(proc)
