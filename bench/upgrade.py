"""Whole-ward model switch: real stays loaded into a SQLite service on one model,
then every monitored patient rebuilt on another by `POST /models/active`'s path
(`service.lifecycle.upgrades.Upgrades.switch`: the ward stepped together in lockstep, then the swap under
every patient lock), against the one-patient-at-a-time rebuild the service does otherwise
(read the patient's history, `service.scoring.rebuild.replay` of that one stay, as ingest does for a
state of another model), in the same run,
on the same model object settings (one intra-op thread each).

The one-at-a-time rebuild is timed on a sample of the ward's patients (--baseline-patients; all
of them would take minutes for sepsis-cfc/3) and compared per patient-hour; the sample's states
from both paths must agree (printed). Stored observations are checked unchanged by the switch.

    python bench/upgrade.py --data ../shared/data/physionet2019/physionet2019_dev.tar.xz \\
        --sizes 1000 5000 --out results/service_upgrade/upgrade.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402  (after the path: runnable as a script)

from service import schemas  # noqa: E402
from service.config import Settings  # noqa: E402
from service.scoring.inference import Model  # noqa: E402
from service.scoring import rebuild  # noqa: E402
from service.inputs import state_from_bytes  # noqa: E402
from service.ranges import check_value  # noqa: E402
from service.services import Services  # noqa: E402
from service.storage.tables import Observation, Patient  # noqa: E402
from training.sepsis.replay import plan_stay  # noqa: E402

START = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
ROWS_PER_BATCH = 1000


def load_ward(services: Services, stays) -> dict:
    """Admit each stay and post its rows (values the service refuses as implausible dropped, as the
    replay does), in batches across patients; no outcome recorded: every patient is monitored."""
    start = time.perf_counter()
    rows, dropped = [], 0
    for i, stay in enumerate(stays):
        plan = plan_stay(f"s{i:05d}", stay.values, stay.labels, START)
        services.admissions.admit(schemas.Admission.model_validate(plan.admission))
        for o in plan.observations:
            body = o["body"]
            vitals = {k: v for k, v in body["vitals"].items() if check_value(k, v) is None}
            dropped += len(body["vitals"]) - len(vitals)
            rows.append(schemas.Observation.model_validate({**body, "vitals": vitals}))
    for k in range(0, len(rows), ROWS_PER_BATCH):
        services.ingestor.predict_batch(rows[k:k + ROWS_PER_BATCH])
    seconds = time.perf_counter() - start
    return {"patients": len(stays), "observations": len(rows), "dropped_values": dropped, "seconds": seconds}


def stored_digest(engine) -> str:
    """A hash of every stored observation, in id order (a switch must not change one)."""
    h = hashlib.sha256()
    table = Observation.__table__
    with engine.connect() as conn:
        for r in conn.execute(select(table).order_by(table.c.id)):
            h.update(repr(tuple(r)).encode())
    return h.hexdigest()


def one_at_a_time(services: Services, target: Model, ids: list[str]) -> tuple[dict, dict]:
    """The service's per-patient rebuild (one stay through `rebuild.replay`) for each of `ids`."""
    states, hours = {}, 0
    start = time.perf_counter()
    with services.engine.connect() as conn:
        for pid in ids:
            row = conn.execute(select(Patient).where(Patient.id == pid)).one()
            history = conn.execute(select(Observation).where(Observation.patient_id == pid)
                                   .order_by(Observation.ts)).all()
            states[pid] = rebuild.replay(target, [rebuild.stay(pid, history, rebuild.demographics_of(row))])[1][0]
            hours += len(history)
    seconds = time.perf_counter() - start
    return {"patients": len(ids), "hours": hours, "seconds": seconds, "patients_per_second": len(ids) / seconds,
            "hours_per_second": hours / seconds}, states


def run_size(stays, n: int, a, tmp: Path) -> dict:
    settings = Settings(db_url=f"sqlite:///{tmp / f'ward{n}.db'}", model=a.model, model_version=a.from_version,
                        device="cpu", microbatch="off", explain=False, bootstrap_keys="")
    services = Services(settings)
    try:
        loaded = load_ward(services, stays[:n])
        print(f"[{n}] loaded {loaded['observations']} observations of {n} stays in {loaded['seconds']:.1f} s", flush=True)
        before = stored_digest(services.engine)
        target = Model.load(settings, services.metrics, a.model, a.to_version, active=False)
        baseline_model = Model.load(settings, services.metrics, a.model, a.to_version, active=False)
        with services.engine.connect() as conn:
            ids = sorted(conn.execute(select(Patient.id)).scalars())
            hours_stored = conn.execute(select(func.count()).select_from(Observation)).scalar()
        sample = sorted(random.Random(0).sample(ids, min(a.baseline_patients, len(ids))))
        one, states = one_at_a_time(services, baseline_model, sample)
        print(f"[{n}] one at a time: {one['patients']} patients {one['hours']} h in {one['seconds']:.2f} s "
              f"= {one['hours_per_second']:,.0f} h/s", flush=True)
        progress = services.upgrades.switch(target, by="bench", note="bench/upgrade.py")
        ward = {k: v for k, v in progress.as_dict().items() if k not in ("by", "note", "error", "phase")}
        ward = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in ward.items()}
        print(f"[{n}] whole ward: {progress.patients_rebuilt} patients {progress.hours_rebuilt} h in "
              f"{progress.seconds:.2f} s = {progress.hours_per_second:,.0f} h/s (writes paused "
              f"{progress.pause_seconds * 1000:.0f} ms)", flush=True)
        with services.engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(Patient).where(Patient.id.in_(sample)))}
        diff = max(float(np.max(np.abs(state_from_bytes(rows[pid].state, target.state_size) - states[pid])))
                   for pid in sample)
        unchanged = stored_digest(services.engine) == before
        print(f"[{n}] sample states: max |lockstep - one at a time| = {diff:.2e}; stored observations unchanged: "
              f"{unchanged}", flush=True)
        return {"patients": n, "observations_stored": hours_stored, "load": loaded, "whole_ward": ward,
                "one_at_a_time_sample": one,
                "speedup_hours_per_second": progress.hours_per_second / one["hours_per_second"],
                "speedup_patients_per_second": progress.patients_per_second / one["patients_per_second"],
                "max_abs_state_diff_sample": diff, "stored_observations_unchanged": unchanged}
    finally:
        services.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="PhysioNet 2019 archive or folder")
    p.add_argument("--cache-dir", default=str(ROOT / ".cache" / "sepsis"))
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    p.add_argument("--model", default="sepsis-cfc")
    p.add_argument("--from-version", default="2")
    p.add_argument("--to-version", default="3")
    p.add_argument("--baseline-patients", type=int, default=200,
                   help="patients timed through the one-at-a-time rebuild (a seeded sample of the ward)")
    p.add_argument("--out", default=None, help="JSON file for the results")
    a = p.parse_args()

    from training.sepsis.data import load_cohort

    cohort = load_cohort(a.data, cache_dir=Path(a.cache_dir))
    stays = [cohort.stay(i) for i in range(max(a.sizes))]  # the archive's first stays, in file order
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            results.append(run_size(stays, n, a, Path(tmp)))
    out = {"command": " ".join(["python"] + sys.argv), "model": a.model, "from_version": a.from_version,
           "to_version": a.to_version, "database": "sqlite (WAL, synchronous FULL)", "device": "cpu",
           "intra_op_threads": 1, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                              "python": platform.python_version()},
           "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "results": results}
    for r in results:
        print(f"{r['patients']:>6} patients {r['whole_ward']['hours_rebuilt']:>8} h: whole ward "
              f"{r['whole_ward']['patients_per_second']:8,.0f} patients/s {r['whole_ward']['hours_per_second']:>9,.0f} h/s; "
              f"one at a time {r['one_at_a_time_sample']['hours_per_second']:>7,.0f} h/s; "
              f"x{r['speedup_hours_per_second']:.1f}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
