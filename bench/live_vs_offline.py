"""Does the service, replayed with nobody acting, show the offline figures? The benchmark.

Streams the test split's stays (patient split seed 0 of the PhysioNet 2019 archive) through a fresh
in-process service (SQLite, simulated clock, the registry's default model at its default operating
point and alarm policy): each stay admitted as the replay client admits it
(`training.sepsis.replay.plan_stay`: ICU admission placed so that row k is posted at admission +
(ICULOS_k - 1) h, the service's hourly grid `models.grid.hour_of`), one JSON row per hour, every
stay side by side hour by hour through POST /predict/batch, values the service refuses left out as
the replay client leaves them out, nobody acting on any alarm, then each stay's outcome as the
replay records it (sepsis with onset = first SepsisLabel hour + 6 h; else no_sepsis discharged an
hour after the last row). Then GET /stats.

Offline: the same stays' rows through the ONNX step (`training.sepsis.evaluate_onnx.stream`, what
`python -m training sepsis evaluate-onnx` runs), each stay's hourly risks through
`models.alarm_policy` with the unit's policy and nobody acting (`training.sepsis.ward_simulation`
scenario "none"), and `models.alarm_figures.figures`. On both sides a stay is monitored from its
first measured hour (models.alarm_figures.first_measured): the service raises no alarm before it
and /stats counts no hour before it; offline, each stay's alarms and hours start at that row.

Every figure side by side, live minus offline, and whether |difference| <= --tolerance (0.01).
The committed operating-points table's test figures at the point stand beside them (whole test
split only): they count one alarm per episode (no re-alert), where the service runs the unit's
policy. Two diagnostic columns: the offline figures over the risks the service returned (separates a
difference of risks from one of alarm bookkeeping), and the offline alarms with the service's open
spans (an alarm whose risk dipped stays open on the ward until somebody acts or a newer alarm
supersedes it, where the policy's episode ends at the dip).

Why side by side through /predict/batch and not the replay client's one stay after another: the
simulated clock is the latest stored observation, and it stamps when a superseded alarm stopped
being open; stays streamed one after another would stamp an early stay's supersessions with a
later stay's hours (and the wall clock with today), so "open" spans would not be the data's.

    python bench/live_vs_offline.py --data /work/shared/data/physionet2019/physionet2019_dev.tar.xz \\
        --out results/live_vs_offline/test_split.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from models.alarm_figures import Stay, figures, first_measured  # noqa: E402
from models.alarm_policy import RESOLVED, AlarmPolicy  # noqa: E402
from models.grid import from_admission  # noqa: E402
from models.contract import INDEX, elapsed_hours  # noqa: E402
from models.grid import hour_of  # noqa: E402
from models.registry import resolve  # noqa: E402
from models.runtime import StepRuntime  # noqa: E402
from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.ranges import check_value  # noqa: E402
from training.sepsis.batching import per_stay  # noqa: E402
from training.sepsis.data import load_cohort  # noqa: E402
from training.sepsis.evaluate_onnx import CHUNK_STAYS, stream  # noqa: E402
from training.sepsis.replay import plan_stay  # noqa: E402
from training.sepsis.splits import patient_split  # noqa: E402
from training.sepsis.ward_simulation import ward_stays  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
KEY = "sk_bench_admin"
H = {"X-API-Key": KEY}
BATCH = 1000

# GET /stats field -> models.alarm_figures.Figures field: the same figure under its two names.
FIGURES = {
    "caught_in_window": "caught_in_window",
    "median_lead_time_hours": "median_lead_time_in_window_hours",
    "alarmed_before_onset": "sensitivity",
    "median_lead_time_before_onset_hours": "median_lead_time_hours",
    "ppv_per_stay": "ppv",
    "positive_predictive_value": "ppv_alarms",
    "alarms_per_patient_day": "alarms_per_patient_day",
    "red_share": "red_share",
    "false_positive_rate": "non_septic_alarmed",
}
COUNTS = {"patients": "stays", "septic_patients": "septic", "patient_days": "patient_days", "alarms": "alarms",
          "true_alarms": "true_alarms", "false_alarms": "false_alarms",
          "septic_patients_alarmed_in_time": "septic_caught_in_window"}


def ts_of(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def choose_stays(cohort, split_seed: int, n: int | None, seed: int) -> np.ndarray:
    """The test split's stay indices, sorted; a seeded random `n` of them when asked."""
    test = np.array(sorted(patient_split(cohort, seed=split_seed).test), dtype=np.int64)
    if n is not None and n < len(test):
        test = np.sort(np.random.default_rng(seed).choice(test, size=n, replace=False))
    return test


def live(cohort, models: str, model: str | None, version: str | None) -> dict:
    """Stream `cohort` through a fresh in-process service; its /stats, units, and per stay the risks
    and alarms it returned."""
    plans = [plan_stay(f"t{cohort.patient_ids[i]}", *_stay(cohort, i), START) for i in range(len(cohort))]
    for i, pl in enumerate(plans):  # the same steps on both sides: each row lands on its file hour
        admit = ts_of(pl.admission["icu_admit_time"])
        hours = [hour_of(ts_of(o["body"]["timestamp"]), admit) for o in pl.observations]
        if hours != [int(h) for h in _stay(cohort, i)[0][:, INDEX["ICULOS"]]]:
            raise SystemExit(f"{pl.patient_id}: posted rows fall on ICULOS {hours[:5]}..., not the file's")
    by_ts: dict[dt.datetime, list[dict]] = defaultdict(list)
    dropped: list[dict] = []
    for pl in plans:
        for o in pl.observations:
            body = o["body"]
            # a value the service refuses (a feed's 422) is left out and the row kept, as the replay client does
            kept = {k: v for k, v in body["vitals"].items() if check_value(k, v) is None}
            dropped += [{"patient_id": pl.patient_id, "timestamp": body["timestamp"], "variable": k, "value": v,
                         "reason": check_value(k, v)} for k, v in body["vitals"].items() if k not in kept]
            by_ts[ts_of(body["timestamp"])].append({**body, "vitals": kept})
    risks: dict[str, list[float]] = defaultdict(list)
    alarms: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db_url=f"sqlite:///{tmp}/live.db", models_dir=models, model=model, model_version=version,
                            bootstrap_keys=f"admin:{KEY}", clock="simulated", explain=False, microbatch="off",
                            key_cache_seconds=60.0)
        with TestClient(create_app(settings)) as c:
            ready = c.get("/ready", headers=H).json()
            units = c.get("/operating-points", headers=H).json()["units"]
            for pl in tqdm(plans, desc="admitting", unit="stay"):
                r = c.post("/patients", json=pl.admission, headers=H)
                assert r.status_code == 201, r.text
            for ts in tqdm(sorted(by_ts), desc="service: hours side by side", unit="hour"):
                rows = by_ts[ts]
                for i in range(0, len(rows), BATCH):
                    r = c.post("/predict/batch", json={"observations": rows[i:i + BATCH]}, headers=H)
                    assert r.status_code == 200, r.text[:500]
                    for res in r.json()["results"]:
                        risks[res["patient_id"]].append(res["risk"])
                        if res["alarm_id"] is not None:
                            alarms[res["patient_id"]].append((ts.isoformat(), res["alarm_kind"]))
            for pl in tqdm(plans, desc="outcomes", unit="stay"):
                r = c.post(f"/patients/{pl.patient_id}/outcome", json=pl.outcome, headers=H)
                assert r.status_code == 200, r.text
            stats = c.get("/stats", headers=H).json()
    return {"stats": stats, "units": units, "ready": ready, "dropped_values": dropped, "plans": plans,
            "risks": risks, "alarms": alarms, "hours": len(by_ts)}


def _stay(cohort, i: int):
    a, b = int(cohort.offsets[i]), int(cohort.offsets[i + 1])
    return cohort.values[a:b], cohort.labels[a:b]


def offline_risks(cohort, model_dir: Path) -> np.ndarray:
    runtime = StepRuntime.open(model_dir, device="cpu")
    return stream(runtime, cohort.values, elapsed_hours(cohort.values, cohort.offsets), cohort.offsets,
                  CHUNK_STAYS, progress=True)


def offline_as_served(cohort, model_dir: Path, policy: AlarmPolicy) -> dict:
    """The offline figures with every stay stepped from the ICU admission's hour 1, as the service
    steps it (`evaluate-onnx --from-admission`, models.grid.from_admission): a file that starts at
    ICULOS s > 1 gets its s - 1 earlier hours as empty rows, which count as monitored hours (label
    0); the figures start at each stay's first measured hour, as live."""
    runtime = StepRuntime.open(model_dir, device="cpu")
    padded, offsets, kept = from_admission(cohort.values, cohort.offsets)
    risks = stream(runtime, padded, elapsed_hours(padded, offsets), offsets, CHUNK_STAYS, progress=True)
    labels = np.zeros(len(padded), cohort.labels.dtype)
    labels[kept] = cohort.labels
    return figures(ward_stays(per_stay(labels, offsets), per_stay(risks, offsets), policy, "none",
                              first_measured(padded, offsets))).as_dict()


def policy_of(units: list[dict]) -> AlarmPolicy:
    """The one policy every unit runs at (the bench compares at one operating point)."""
    policies = {json.dumps({k: u["alarm_policy"][k] for k in ("threshold", "rise_factor", "lockout_hours", "tiers")},
                           sort_keys=True) for u in units}
    if len(policies) != 1:
        raise SystemExit(f"units run different policies: {sorted(policies)}; the bench compares one point")
    p = json.loads(policies.pop())
    return AlarmPolicy(p["threshold"], p["rise_factor"], p["lockout_hours"], tuple(p["tiers"]))


def open_until_acted(stays: list[Stay]) -> list[Stay]:
    """The offline stays with the service's open spans: a stored alarm whose risk dipped below the
    threshold stays open on the ward until somebody acts or a newer alarm supersedes it
    (docs/alarms.md), where the policy's episode closes at the dip. Diagnostic only."""
    out = []
    for s in stays:
        events = list(s.alarms)
        kept = [replace(e, closed_at=events[k + 1].time if k + 1 < len(events) else None, closed_by=None)
                if e.closed_by == RESOLVED else e for k, e in enumerate(events)]
        out.append(replace(s, alarms=tuple(kept)))
    return out


def table_figures(model_dir: Path, point_id: str | None) -> dict:
    """The committed operating-points table's test figures at `point_id` (one alarm per episode:
    nobody acting and no re-alert, `SILENT_FOR_GOOD`), {} when the model ships none."""
    path = model_dir / "operating_points.json"
    if point_id is None or not path.exists():
        return {}
    point = next((p for p in json.loads(path.read_text())["points"] if p["id"] == point_id), None)
    return {} if point is None else dict(point["test"])


def side_by_side(stats: dict, offline: dict, on_live_risks: dict, open_until: dict, table: dict,
                 tolerance: float) -> list[dict]:
    rows = []
    for live_key, key in FIGURES.items():
        lv, ov = stats.get(live_key), offline.get(key)
        diff = None if lv is None or ov is None else lv - ov
        rows.append({"figure": key, "live_field": live_key, "live": lv, "offline": ov, "difference": diff,
                     "within_tolerance": diff is not None and abs(diff) <= tolerance,
                     "table_test_one_alarm_per_episode": table.get(key),
                     "offline_on_live_risks": on_live_risks.get(key),
                     "offline_open_until_acted": open_until.get(key)})
    for live_key, key in COUNTS.items():
        lv, ov = stats.get(live_key), offline.get(key)
        rows.append({"figure": key, "live_field": live_key, "live": lv, "offline": ov,
                     "difference": None if lv is None or ov is None else lv - ov, "count": True,
                     "offline_on_live_risks": on_live_risks.get(key),
                     "offline_open_until_acted": open_until.get(key)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--models", default="models")
    p.add_argument("--model", default=None, help="registry name (default: the registry's default)")
    p.add_argument("--version", default=None, help="default: the model's highest version")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--stays", type=int, default=None, help="a seeded random N of the test stays (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of --stays' draw")
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--cache-dir", default=".cache/sepsis")
    p.add_argument("--out", default=None, help="write the comparison as JSON here")
    a = p.parse_args(argv)
    if a.stays is not None and a.stays < 1:
        p.error("--stays must be at least 1")

    t0 = time.perf_counter()
    info = resolve(a.model, a.version, a.models)
    full = load_cohort(a.data, cache_dir=Path(a.cache_dir))
    chosen = choose_stays(full, a.split_seed, a.stays, a.seed)
    cohort = full.subset(chosen)
    print(f"{len(cohort)} test stays ({int(sum(lab.any() for lab in per_stay(cohort.labels, cohort.offsets)))} septic), "
          f"{len(cohort.values)} hours; model {info.name} {info.version}", flush=True)

    t_live = time.perf_counter()
    got = live(cohort, a.models, info.name, info.version)
    t_live = time.perf_counter() - t_live
    policy = policy_of(got["units"])
    t_off = time.perf_counter()
    risks = offline_risks(cohort, info.path)
    t_off = time.perf_counter() - t_off
    labels = per_stay(cohort.labels, cohort.offsets)
    starts = first_measured(cohort.values, cohort.offsets)  # each stay monitored from its first measured row
    offline_stays = ward_stays(labels, per_stay(risks, cohort.offsets), policy, "none", starts)
    offline = figures(offline_stays).as_dict()
    open_until = figures(open_until_acted(offline_stays)).as_dict()
    # the service's own risks through the offline bookkeeping: isolates risk differences
    ids = [pl.patient_id for pl in got["plans"]]
    live_risks = [np.asarray(got["risks"][pid], dtype=np.float64) for pid in ids]
    on_live = figures(ward_stays(labels, live_risks, policy, "none", starts)).as_dict()
    offline_by_stay = per_stay(risks, cohort.offsets)
    gaps = int(sum((np.diff(cohort.values[int(cohort.offsets[i]):int(cohort.offsets[i + 1]), INDEX["ICULOS"]]) != 1).any()
                   for i in range(len(cohort))))
    refused_stays = {d["patient_id"] for d in got["dropped_values"]}
    differing = {pid for pid, lr, o in zip(ids, live_risks, offline_by_stay)
                 if len(lr) != len(o) or (np.abs(lr - o) > 1e-4).any()}
    risk_diff = np.concatenate([np.abs(lr - o) for lr, o in zip(live_risks, offline_by_stay) if len(lr) == len(o)])
    point_ids = {u["point_id"] for u in got["units"]}
    table = table_figures(info.path, point_ids.pop()) if len(point_ids) == 1 and a.stays is None else {}
    rows = side_by_side(got["stats"], offline, on_live, open_until, table, a.tolerance)
    served = offline_as_served(cohort, info.path, policy)
    for r in rows:  # the same comparison against the offline evaluation stepped as served
        ov = served.get(r["figure"])
        r["offline_as_served"] = ov
        if not r.get("count"):
            diff = None if r["live"] is None or ov is None else r["live"] - ov
            r["difference_as_served"] = diff
            r["within_tolerance_as_served"] = diff is not None and abs(diff) <= a.tolerance
    out = {
        "command": "python bench/live_vs_offline.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": f"{info.name} {info.version}", "provider": got["ready"].get("provider"),
        "stays": len(cohort), "subset": None if a.stays is None else {"n": a.stays, "seed": a.seed},
        "split_seed": a.split_seed, "hours": int(len(cohort.values)),
        "operating_point": {u["unit"]: {"point_id": u["point_id"], "threshold": u["threshold"]} for u in got["units"]},
        "alarm_policy": {"threshold": policy.threshold, "rise_factor": policy.rise_factor,
                         "lockout_hours": policy.lockout_hours, "tiers": list(policy.tiers),
                         "description": policy.describe()},
        "tolerance": a.tolerance,
        "all_within_tolerance": all(r["within_tolerance"] for r in rows if not r.get("count")),
        "all_within_tolerance_as_served": all(r["within_tolerance_as_served"] for r in rows if not r.get("count")),
        "figures": rows,
        "live_alarms_by_kind": got["stats"].get("alarms_by_kind"),
        "offline_alarms_by_kind": offline["alarms_by_kind"],
        "diagnostics": {
            "values_refused_by_service_left_out": len(got["dropped_values"]),
            "refused_values": got["dropped_values"][:50],
            "stays_with_iculos_gaps": gaps,
            "stays_with_other_step_counts": int(sum(len(lr) != len(o) for lr, o in zip(live_risks, offline_by_stay))),
            "max_abs_risk_difference": float(risk_diff.max()) if len(risk_diff) else None,
            "hours_with_risk_difference_over_1e-4": int((risk_diff > 1e-4).sum()),
            "stays_with_risk_difference_over_1e-4": len(differing),
            "of_those_with_a_value_the_service_refused": len(differing & refused_stays),
            "stays_with_other_alarm_count": int(sum(
                len(got["alarms"].get(pid, [])) != len(s.alarms)
                for pid, s in zip(ids, offline_stays))),
        },
        "seconds": {"service": round(t_live, 1), "offline_scoring": round(t_off, 1),
                    "total": round(time.perf_counter() - t0, 1)},
    }
    width = max(len(r["figure"]) for r in rows)
    print(f"{'figure':<{width}}  {'live':>10}  {'offline':>10}  {'diff':>9}  ok    offline on live risks / open until acted / table")
    for r in rows:
        f = lambda x: "n/a" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)  # noqa: E731
        ok = "" if r.get("count") else ("yes" if r["within_tolerance"] else "NO")
        print(f"{r['figure']:<{width}}  {f(r['live']):>10}  {f(r['offline']):>10}  {f(r['difference']):>9}  {ok:<4}  "
              f"{f(r['offline_on_live_risks']):>10}  {f(r['offline_open_until_acted']):>10}  "
              f"{f(r.get('table_test_one_alarm_per_episode')):>10}")
    print(json.dumps({k: out[k] for k in ("live_alarms_by_kind", "offline_alarms_by_kind", "diagnostics", "seconds")}))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
