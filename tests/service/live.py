"""Real service processes for tests that need more than one worker: each `python -m service` has its
own interpreter, connection pool and in-process locks, so only the database can keep them in step."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from devtools.processes import free_port, stop, wait_for
from tests.service.conftest import BOOTSTRAP

ROOT = Path(__file__).resolve().parents[2]


def service_env(db_url: str, models_root, model: str = "sepsis-cfc", version: str = "1", **extra) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEPSIS_DB_URL": db_url, "SEPSIS_MODELS_DIR": str(models_root),
           "SEPSIS_MODEL": model, "SEPSIS_MODEL_VERSION": version, "SEPSIS_DEVICE": "cpu",
           "SEPSIS_MICROBATCH": "off", "SEPSIS_BOOTSTRAP_KEYS": BOOTSTRAP}
    env.update({f"SEPSIS_{k.upper()}": str(v) for k, v in extra.items()})
    return env


@contextlib.contextmanager
def live_servers(count: int, env: dict[str, str]):
    """`count` servers on one database, started side by side; yields their base URLs."""
    ports = [free_port() for _ in range(count)]
    procs = [subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(p)], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        for proc, port in zip(procs, ports):
            wait_for(f"http://127.0.0.1:{port}/ready", proc, timeout_s=90)
        yield [f"http://127.0.0.1:{p}" for p in ports]
    finally:
        for proc in procs:
            stop(proc)
