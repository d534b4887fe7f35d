"""Does a dismissed alarm still silence a patient? The probe, through the service.

Streams the test split's stays (patient split seed 0 of the PhysioNet 2019 archive: never trained
on, no threshold chosen on them) through the service in-process (SQLite, simulated clock, the
shipped model at its default point and alarm policy), all stays side by side hour by hour through
POST /predict/batch, with the ward of `training.sepsis.ward_simulation`'s "dismiss_early": each
stay's first alarm dismissed (acknowledged, reason false_alarm) the hour it is raised when it came
12 h or more before onset (always, on a stay that never turns septic); later alarms left open.

Prints, over septic stays dismissed early whose risk then rose to at least twice the dismissed risk
inside [onset - 12 h, onset + 3 h]: how many got a new alarm inside the window (the bar: 0.9), and
GET /stats of the whole ward (alarms per patient-day, caught in the window).

    python bench/realert_probe.py --data /work/shared/data/physionet2019/physionet2019_dev.tar.xz
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from models.alarm_figures import AFTER_HOURS, BEFORE_HOURS  # noqa: E402
from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.ranges import check_value  # noqa: E402
from training.sepsis.replay import plan_stay, select_stays  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
KEY = "sk_probe_admin"
H = {"X-API-Key": KEY}


def ts_of(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--models", default="models")
    p.add_argument("--model", default="sepsis-cfc")
    p.add_argument("--version", default=None, help="default: the model's highest version (the registry's default)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N test stays")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    a = p.parse_args(argv)

    t0 = time.perf_counter()
    stays = select_stays(a.data, "test", a.split_seed, a.limit)
    plans = [plan_stay(f"t{s.patient_id}", s.values, s.labels, START) for s in stays]
    onset = {pl.patient_id: ts_of(pl.outcome["onset_time"]) for pl in plans if pl.outcome["outcome"] == "sepsis"}
    by_ts: dict[dt.datetime, list[dict]] = defaultdict(list)
    dropped = 0
    for pl in plans:
        for o in pl.observations:
            body = o["body"]
            # a value the service refuses (a feed's 422) is left out, as the replay client counts it
            kept = {k: v for k, v in body["vitals"].items() if check_value(k, v) is None}
            dropped += len(body["vitals"]) - len(kept)
            by_ts[ts_of(body["timestamp"])].append({**body, "vitals": kept})
    print(f"{len(plans)} test stays ({len(onset)} septic), {sum(map(len, by_ts.values()))} observations, "
          f"{dropped} out-of-range values left out, loaded in {time.perf_counter() - t0:.0f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db_url=f"sqlite:///{tmp}/probe.db", models_dir=a.models, model=a.model,
                            model_version=a.version, bootstrap_keys=f"admin:{KEY}", clock="simulated",
                            explain=False, microbatch="off", key_cache_seconds=60.0)
        with TestClient(create_app(settings)) as c:
            units = c.get("/operating-points", headers=H).json()["units"]
            print("units:", json.dumps([{k: u[k] for k in ("unit", "point_id", "threshold")} | {
                "policy": u["alarm_policy"]["description"]} for u in units]), flush=True)
            for pl in plans:
                r = c.post("/patients", json=pl.admission, headers=H)
                assert r.status_code == 201, r.text
            risks: dict[str, list[tuple[dt.datetime, float]]] = defaultdict(list)
            alarms: dict[str, list[tuple[dt.datetime, str, float]]] = defaultdict(list)
            dismissed: dict[str, tuple[dt.datetime, float]] = {}
            for ts in sorted(by_ts):
                rows = by_ts[ts]
                for i in range(0, len(rows), 1000):
                    r = c.post("/predict/batch", json={"observations": rows[i:i + 1000]}, headers=H)
                    assert r.status_code == 200, r.text[:500]
                    for res in r.json()["results"]:
                        pid = res["patient_id"]
                        risks[pid].append((ts, res["risk"]))
                        if res["alarm_id"] is None:
                            continue
                        first = not alarms[pid]
                        alarms[pid].append((ts, res["alarm_kind"], res["risk"]))
                        early = pid not in onset or ts <= onset[pid] - dt.timedelta(hours=BEFORE_HOURS)
                        if first and early:
                            r2 = c.post(f"/alarms/{res['alarm_id']}/ack", json={"by": "probe", "reason": "false_alarm"},
                                        headers=H)
                            assert r2.status_code == 200, r2.text
                            dismissed[pid] = (ts, res["risk"])
            for pl in plans:
                r = c.post(f"/patients/{pl.patient_id}/outcome", json=pl.outcome, headers=H)
                assert r.status_code == 200, r.text
            stats = c.get("/stats", headers=H).json()

    qualifying, realerted = [], []
    for pid, (at, risk) in dismissed.items():
        if pid not in onset:
            continue
        lo, hi = onset[pid] - dt.timedelta(hours=BEFORE_HOURS), onset[pid] + dt.timedelta(hours=AFTER_HOURS)
        if any(lo <= t <= hi and t > at and r >= 2 * risk for t, r in risks[pid]):
            qualifying.append(pid)
            if any(lo <= t <= hi and t > at for t, _, _ in alarms[pid]):
                realerted.append(pid)
    kinds = defaultdict(int)
    for pid in alarms:
        for _, k, _ in alarms[pid]:
            kinds[k] += 1
    out = {
        "stays": len(plans), "septic": len(onset),
        "septic_dismissed_early": sum(pid in onset for pid in dismissed),
        "dismissed_then_doubled_in_window": len(qualifying),
        "of_those_new_alarm_in_window": len(realerted),
        "share_new_alarm": len(realerted) / len(qualifying) if qualifying else None,
        "alarms_by_kind": dict(kinds),
        "ward": {k: stats[k] for k in ("alarms", "patient_days", "alarms_per_patient_day", "caught_in_window",
                                       "median_lead_time_hours", "alarmed_before_onset", "positive_predictive_value",
                                       "ppv_per_stay")},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
