"""Fairness under big batches: how long one other patient's observation waits while a feeder posts
--rows observations (one per patient) through /predict/batch, for each row cap.

Issue 16: 20,000 patients in one batch took 9-20 s, and a single observation for another patient
sent 2 s into it waited 7.3 s (SQLite) and 18.2 s (PostgreSQL). For each database and each cap in
--caps this starts the service (`python -m service`, one worker, the registry's default model,
SEPSIS_MAX_BATCH_ROWS=cap, a fresh database) from --root, then

  idle    --idle single /predict calls for a side patient with nothing else running: their latency;
  during  one feeder thread posts the --rows rows as consecutive requests of `cap` rows each (what a
          client does after a 413), while a side thread posts one /predict for its own patient every
          --every seconds until the feeder is done: the side latencies, the first one sent at least
          2 s in (the issue's figure), and the feeder's total time and rows/s.

Prints a table and writes --out (JSON). PostgreSQL runs when --pg-url is given (a private schema
per run, dropped afterwards).

    python bench/batch_fairness.py --pg-url postgresql+psycopg://postgres:@127.0.0.1:5432/test
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.databases import private_pg_schema  # noqa: E402
from devtools.processes import free_port, wait_for  # noqa: E402  (after the path: runnable as a script)

KEY = "sk_bench_admin"
HEADERS = {"X-API-Key": KEY}
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def row(pid: str, hour: int, rng) -> dict:
    """An unremarkable hour of a ward patient (few alarms: each one raised is one more insert)."""
    return {"patient_id": pid, "timestamp": (T0 + dt.timedelta(hours=hour)).isoformat(),
            "vitals": {"HR": round(float(rng.uniform(60, 100)), 1), "MAP": round(float(rng.uniform(65, 95)), 1),
                       "O2Sat": round(float(rng.uniform(94, 100)), 1), "Resp": round(float(rng.uniform(12, 20)), 1),
                       "Temp": round(float(rng.uniform(36.5, 37.5)), 1)}}


@contextlib.contextmanager
def database(kind: str, pg_url: str | None, tmp: Path):
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'fair-{uuid.uuid4().hex[:8]}.db'}"
        return
    with private_pg_schema(pg_url, prefix="bench") as url:
        yield url


@contextlib.contextmanager
def service(root: Path, db_url: str, cap: int):
    port = free_port()
    env = {**os.environ, "SEPSIS_DB_URL": db_url, "SEPSIS_BOOTSTRAP_KEYS": f"admin:{KEY}", "SEPSIS_DEVICE": "cpu",
           "SEPSIS_MAX_BATCH_ROWS": str(cap), "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port)], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/ready", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def pct(values: list[float]) -> dict:
    a = np.array(values) * 1000
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "max_ms": round(float(a.max()), 1)}


def measure(url: str, rows: int, cap: int, every: float, idle: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    items = [row(f"fair-{i:05d}", 0, rng) for i in range(rows)]
    chunks = [items[i:i + cap] for i in range(0, rows, cap)]
    side_hour = [0]

    def side_once(client: httpx.Client) -> float:
        start = time.perf_counter()
        r = client.post("/predict", json=row("side", side_hour[0], rng), headers=HEADERS)
        side_hour[0] += 1
        if r.status_code != 200:
            raise RuntimeError(f"side request: HTTP {r.status_code} {r.text[:300]}")
        return time.perf_counter() - start

    with httpx.Client(base_url=url, timeout=600) as client:
        side_once(client)  # warm-up: connection, the patient's first row
        idle_lat = [side_once(client) for _ in range(idle)]

    done = threading.Event()
    feeder: dict = {}

    def feed():
        try:
            with httpx.Client(base_url=url, timeout=600) as client:
                start = time.perf_counter()
                for chunk in chunks:
                    r = client.post("/predict/batch", json={"observations": chunk}, headers=HEADERS)
                    if r.status_code != 200:
                        raise RuntimeError(f"batch: HTTP {r.status_code} {r.text[:300]}")
                feeder["seconds"] = time.perf_counter() - start
        except BaseException as err:  # reported by the main thread
            feeder["error"] = err
        finally:
            done.set()

    sent_at, during = [], []
    thread = threading.Thread(target=feed)
    with httpx.Client(base_url=url, timeout=600) as client:
        start = time.perf_counter()
        thread.start()
        k = 0
        while not done.is_set():
            delay = start + k * every - time.perf_counter()
            if delay > 0 and done.wait(delay):
                break
            sent_at.append(time.perf_counter() - start)
            during.append(side_once(client))
            k = max(k + 1, int((time.perf_counter() - start) / every) + 1)
    thread.join()
    if "error" in feeder:
        raise feeder["error"]
    at_2s = next((lat for t, lat in zip(sent_at, during) if t >= 2.0), None)
    return {"cap": cap, "requests": len(chunks), "feeder_seconds": round(feeder["seconds"], 2),
            "rows_per_s": round(rows / feeder["seconds"], 1), "idle": pct(idle_lat), "during": pct(during),
            "sent_2s_in_ms": None if at_2s is None else round(at_2s * 1000, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="the source tree whose service is measured")
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--caps", default="20000,5000,2000,1000,500,200")
    p.add_argument("--every", type=float, default=0.25, help="seconds between side requests")
    p.add_argument("--idle", type=int, default=20, help="side requests with nothing else running")
    p.add_argument("--pg-url", default=None, help="also measure on PostgreSQL (a private schema per run)")
    p.add_argument("--label", default=None, help="what was measured (e.g. the commit of --root), kept in --out")
    p.add_argument("--out", default=str(ROOT / "results" / "service_contract" / "batch_fairness.json"))
    args = p.parse_args()
    caps = [int(c) for c in args.caps.split(",")]
    kinds = ["sqlite"] + (["postgres"] if args.pg_url else [])
    root = Path(args.root).resolve()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for cap in caps:
                with database(kind, args.pg_url, Path(tmp)) as url, service(root, url, cap) as base:
                    m = {"database": kind, **measure(base, args.rows, cap, args.every, args.idle)}
                results.append(m)
                d, i = m["during"], m["idle"]
                print(f"{kind:8s} cap {cap:>6} ({m['requests']:>3} requests): feeder {m['feeder_seconds']:6.2f} s "
                      f"{m['rows_per_s']:7.0f} rows/s | side idle p50 {i['p50_ms']:6.1f} ms | during: n {d['n']:3d} "
                      f"p50 {d['p50_ms']:7.1f} p95 {d['p95_ms']:7.1f} max {d['max_ms']:7.1f} ms | "
                      f"sent 2 s in: {m['sent_2s_in_ms']} ms", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"label": args.label, "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                               "rows": args.rows,
                               "every_s": args.every, "model": "the registry's default", "results": results},
                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
