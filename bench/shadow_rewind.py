"""What a late value costs a shadow model: runtime steps and request time of a rewind, through the
service in-process (SQLite, fixture models: the active one and one shadow of the same size).

Feeds `--stays` synthetic stays of `--hours` hourly rows (one batch each), then posts, to every
stay, a late lab for each hour of `--late` (half an hour into it, after the later hours' vitals).
Prints, per late hour h, the runtime calls of the live model and of the shadow for that one
request (one call per hour stepped: a single patient's rows are stepped one hour at a time) and
its median time. A shadow that rewinds as the live model does re-steps hours h..n (n - h + 1
calls); one that replays the stay from the admission on every rewind makes n.

    python bench/shadow_rewind.py --stays 3 --hours 72 --late 4,36,70
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from models.testing import CountingStep, write_fixture_model  # noqa: E402
from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
KEY = "sk_bench_admin"
H = {"X-API-Key": KEY}


def _at(hours: float) -> str:
    return (START + dt.timedelta(hours=hours)).isoformat()


def _stay(pid: str, hours: int, rng) -> list[dict]:
    rows = []
    for h in range(hours):
        v = {"HR": round(float(rng.uniform(60, 140)), 1), "MAP": round(float(rng.uniform(50, 100)), 1)}
        if h == 0:
            v.update(Age=67.0, Gender=1.0, Unit1=1.0, Unit2=0.0, HospAdmTime=-3.5)
        rows.append({"patient_id": pid, "timestamp": _at(h), "vitals": v})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stays", type=int, default=3)
    p.add_argument("--hours", type=int, default=72)
    p.add_argument("--late", default="4,36,70", help="the ICULOS hours the late values fall in")
    p.add_argument("--state-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    late = [int(h) for h in a.late.split(",")]
    if any(not 1 <= h <= a.hours for h in late):
        p.error(f"--late: every hour must lie in 1..{a.hours}")
    rng = np.random.default_rng(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        write_fixture_model(models / "sepsis-cfc" / "1", state_size=a.state_size, threshold=0.5)
        write_fixture_model(models / "sepsis-cfc" / "2", state_size=a.state_size, threshold=0.5, version="2", seed=7)
        settings = Settings(db_url=f"sqlite:///{tmp}/bench.db", models_dir=str(models), model="sepsis-cfc",
                            model_version="1", shadow_models="sepsis-cfc:2", bootstrap_keys=f"admin:{KEY}",
                            device="cpu", microbatch="off", explain=False, key_cache_seconds=0.0)
        with TestClient(create_app(settings)) as c:
            services = c.app.state.services
            live_rt, shadow_rt = services.model.runtime, services.shadows.models[0].runtime
            live = live_rt.step = CountingStep(live_rt.step)
            shadow = shadow_rt.step = CountingStep(shadow_rt.step)
            ids = [f"s{k}" for k in range(a.stays)]
            for pid in ids:
                r = c.post("/predict/batch", json={"observations": _stay(pid, a.hours, rng)}, headers=H)
                assert r.status_code == 200, r.text
            print(f"{a.stays} stays of {a.hours} h, state size {a.state_size}; one late lab per stay and hour")
            print("late hour | live steps | shadow steps | median ms per late request")
            for h in late:
                live_n, shadow_n, ms = [], [], []
                for pid in ids:
                    live.calls.clear()
                    shadow.calls.clear()
                    body = {"patient_id": pid, "timestamp": _at(h - 0.5), "vitals": {"Lactate": 2.0 + h / 100}}
                    t0 = time.perf_counter()
                    r = c.post("/predict", json=body, headers=H)
                    ms.append((time.perf_counter() - t0) * 1e3)
                    assert r.status_code == 200, r.text
                    live_n.append(len(live.calls))
                    shadow_n.append(len(shadow.calls))
                print(f"{h:9d} | {statistics.mean(live_n):10.1f} | {statistics.mean(shadow_n):12.1f} | "
                      f"{statistics.median(ms):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
