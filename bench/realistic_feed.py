"""A realistic feed through the service: does it show the validated risk, and at what cost?

Test-split stays (patient split seed 0: never trained on, no threshold chosen on them), each sent as
`training.sepsis.feed.realistic_feed` sends it: every measured value its own message, vitals at a
random second inside their hour, resulted labs stamped with their draw time and sent 30-150 min
later (after later vitals), 5% of messages twice, 2% of labs first sent wrong and amended; a
quarter of the stays as single FHIR Observations (`POST /fhir/Observation`), the rest as JSON
(`POST /predict`). All stays' messages go in one arrival order, one request each, into a fresh
in-process service (the shipped model, SQLite or the PostgreSQL URL given).

Then, per stay, the hourly risks the service shows (GET /patients/ID) against `evaluate-onnx`'s
stream of the same rows through the same exported step, as the files hold them and as the service
steps them (`--from-admission`: from the ICU admission's hour 1): hours compared, hours missing, the
largest difference. Every value is sent as the archive holds it: one outside its plausible range
(FiO2 of 2, a Hgb of 32) is stored and scored as charted with a warning (service/ranges.py), and
the warnings are counted; a value the service refuses (none in the archive) would be left out of
both sides. The same stays sent as today's one-row-per-hour JSON posts give the baseline cost.

    python bench/realistic_feed.py --data ../shared/data/physionet2019/physionet2019_dev.tar.xz --stays 200

The whole test split is about 1.9 M messages: `--shard K/N` runs every N-th stay from the K-th in
its own fresh service (a process each, in parallel), and `--combine` adds the shards' records up.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from models.contract import FEATURES, INDEX, elapsed_hours  # noqa: E402
from models.grid import from_admission  # noqa: E402
from models.registry import resolve  # noqa: E402
from models.runtime import StepRuntime  # noqa: E402
from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.ranges import check_value, implausible  # noqa: E402
from training.sepsis.evaluate_onnx import stream  # noqa: E402
from training.sepsis.feed import realistic_feed  # noqa: E402
from training.sepsis.fhir_bundle import feed_observation  # noqa: E402
from training.sepsis.replay import plan_stay, select_stays  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
KEY = "sk_feed_admin"
H = {"X-API-Key": KEY}
FHIR = {**H, "Content-Type": "application/fhir+json"}


def in_range(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The rows with every value the service refuses (service/ranges.py: none the archive holds) set
    to not measured."""
    out = values.copy()
    dropped = 0
    for j, name in enumerate(FEATURES[:34]):
        col = out[:, j]
        for t in np.flatnonzero(np.isfinite(col)):
            if check_value(name, float(col[t])) is not None:
                col[t] = np.nan
                dropped += 1
    return out, dropped


def implausible_count(values: np.ndarray) -> int:
    """How many measured values of the rows lie outside their plausible range (service/ranges.py)."""
    return sum(implausible(name, float(v)) is not None for j, name in enumerate(FEATURES[:34])
               for v in values[np.isfinite(values[:, j]), j])


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def service(db_url: str, a) -> TestClient:
    settings = Settings(db_url=db_url, models_dir=a.models, model=a.model, model_version=a.version,
                        bootstrap_keys=f"admin:{KEY}", microbatch="off", key_cache_seconds=60.0, device="cpu",
                        explain=a.explain == "on")
    return TestClient(create_app(settings))


def refusal_reason(r) -> str:
    """The reason a refusal gives, whole: JSON's `detail`, a FHIR OperationOutcome's first diagnostics."""
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(i.get("diagnostics", "") for i in body.get("issue", []) if i.get("severity") == "error")[:300]
    return str(body.get("detail", body) if isinstance(body, dict) else body)[:300]


def send_messages(c: TestClient, stays, feeds) -> dict:
    order = sorted(((m.sent, k, i) for k, (pid, msgs, fhir) in enumerate(feeds) for i, m in enumerate(msgs)))
    latencies, refused, revised, warned = [], {}, 0, 0
    began = time.perf_counter()
    for _, k, i in tqdm(order, desc="messages", unit="msg", mininterval=5):
        pid, msgs, fhir = feeds[k]
        m = msgs[i]
        t = time.perf_counter()
        if fhir:
            r = c.post("/fhir/Observation", json=feed_observation(pid, m.charted), headers=FHIR)
        else:
            r = c.post("/predict", headers=H, json={"patient_id": pid, "timestamp": m.charted.time.isoformat(),
                                                    "vitals": {m.charted.variable: m.charted.value},
                                                    "status": m.charted.status})
        latencies.append((time.perf_counter() - t) * 1000)
        if r.status_code not in (200, 201):
            why = f"{r.status_code} {refusal_reason(r)}"
            refused[why] = refused.get(why, 0) + 1
        elif fhir:
            warned += sum(n.get("text", "").startswith("warning:") for n in r.json().get("note", []))
        else:
            body = r.json()
            revised += bool(body.get("revised_hours"))
            warned += len(body.get("warnings", []))
    wall = time.perf_counter() - began
    return {"messages": len(order), "seconds": round(wall, 1), "messages_per_s": round(len(order) / wall, 1),
            "p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2),
            "refused": sum(refused.values()), "refusals": refused, "json_answers_that_revised_stored_hours": revised,
            "answers_warning_of_implausible_values": warned}, np.asarray(latencies, np.float32)


def send_hourly(c: TestClient, plans) -> dict:
    posts = sorted(((o["body"]["timestamp"], k, j) for k, pl in enumerate(plans) for j, o in enumerate(pl.observations)))
    latencies, refused = [], 0
    began = time.perf_counter()
    for _, k, j in tqdm(posts, desc="hourly rows", unit="row", mininterval=5):
        body = plans[k].observations[j]["body"]
        t = time.perf_counter()
        r = c.post("/predict", headers=H, json=body)
        latencies.append((time.perf_counter() - t) * 1000)
        refused += r.status_code != 200
    wall = time.perf_counter() - began
    return {"requests": len(posts), "seconds": round(wall, 1), "requests_per_s": round(len(posts) / wall, 1),
            "p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2),
            "refused": refused}


def compare(c: TestClient, plans, rows, offline) -> dict:
    """Per kind of stay: the files that start at ICULOS 1 (the service steps from the admission's
    hour 1 as they do) and those that start later (the service steps the hours before their first
    row empty, which the offline stream does not: docs/service.md)."""
    out = {}
    for kind in ("first_row_at_iculos_1", "first_row_later"):
        compared = missing = over = stays = 0
        worst, worst_stay = 0.0, None
        for pl, x, want in zip(plans, rows, offline):
            if (x[0, INDEX["ICULOS"]] == 1) != (kind == "first_row_at_iculos_1"):
                continue
            measured = [int(x[t, INDEX["ICULOS"]]) for t in range(len(x)) if np.isfinite(x[t, :34]).any()]
            if not measured:
                continue
            stays += 1
            timeline = c.get(f"/patients/{pl.patient_id}", headers=H).json().get("timeline", [])
            got = {int(e["iculos"]): e["risk"] for e in timeline}
            for t in range(len(x)):
                hour = int(x[t, INDEX["ICULOS"]])
                if hour > max(measured):
                    break
                if hour not in got:
                    missing += 1
                    continue
                compared += 1
                d = abs(got[hour] - float(want[t]))
                over += d > 1e-4
                if d > worst:
                    worst, worst_stay = d, pl.patient_id
        out[kind] = {"stays": stays, "hours_compared": compared, "hours_missing": missing,
                     "max_abs_difference": worst, "hours_over_1e-4": over, "worst_stay": worst_stay}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--models", default="models")
    p.add_argument("--model", default="sepsis-cfc")
    p.add_argument("--version", default=None, help="default: the model's highest version (the registry's default)")
    p.add_argument("--stays", type=int, default=None, help="a seeded random subset of the test split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", default=None, help="a PostgreSQL URL (default: a fresh SQLite file)")
    p.add_argument("--skip-hourly", action="store_true", help="no one-row-per-hour baseline")
    p.add_argument("--split", choices=["test", "all"], default="test",
                   help="test: the test split of --data (patient split seed 0); all: every stay of --data (an archive "
                        "cut to the test split beforehand, e.g. to carry it to another machine)")
    p.add_argument("--shard", default=None, help="K/N: only every N-th stay from the K-th (0-based)")
    p.add_argument("--explain", choices=["on", "off"], default="on",
                   help="the service's contributions (SEPSIS_EXPLAIN); they do not change a risk, only the cost")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="add up the records of shards (each with its .latencies.npy beside it) into --out")
    p.add_argument("--cut", default=None, metavar="TAR_XZ",
                   help="write the selected stays' files, as --data holds them, into a new archive and stop")
    p.add_argument("--only-implausible", action="store_true",
                   help="only the stays holding a value outside its plausible range")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime threads of the offline stream (1 when shards run side by side; the service uses SEPSIS_MODEL_THREADS, default 1)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.combine:
        out = combine([Path(f) for f in a.combine])
        print(json.dumps(out, indent=2))
        if a.out:
            Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
        return 0

    stays = select_stays(a.data, a.split, 0, None)
    if a.stays is not None and a.stays < len(stays):
        pick = np.random.default_rng(a.seed).choice(len(stays), a.stays, replace=False)
        stays = [stays[i] for i in sorted(pick)]
    if a.only_implausible:
        stays = [s for s in stays if implausible_count(s.values)]
    if a.shard:
        k, n = (int(x) for x in a.shard.split("/"))
        stays = stays[k::n]
    if a.cut:
        cut(a.data, {(s.patient_id, s.hospital) for s in stays}, Path(a.cut))
        print(f"{len(stays)} stays written to {a.cut}")
        return 0
    rows, plans, feeds, dropped, doubtful = [], [], [], 0, 0
    for s in stays:
        x, d = in_range(s.values)
        dropped += d
        doubtful += implausible_count(x)
        pid = f"f{s.patient_id}"
        pl = plan_stay(pid, x, s.labels, START)
        first = dt.datetime.fromisoformat(pl.observations[0]["body"]["timestamp"])
        fhir = zlib.crc32(pid.encode()) % 4 == 0  # a quarter of the stays as FHIR
        rows.append(x)
        plans.append(pl)
        feeds.append((pid, realistic_feed(pid, x, first, a.seed), fhir))
    info = resolve(a.model, a.version, a.models)
    runtime = StepRuntime.open(info, device="cpu", intra_op_threads=a.threads)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in rows])])
    values = np.concatenate(rows)
    risks = stream(runtime, values, elapsed_hours(values, offsets), offsets)
    offline = [risks[offsets[i]:offsets[i + 1]] for i in range(len(rows))]
    # evaluate-onnx --from-admission: every stay stepped from the admission's hour 1, as served
    padded, padded_offsets, kept = from_admission(values, offsets)
    risks = stream(runtime, padded, elapsed_hours(padded, padded_offsets), padded_offsets)[kept]
    as_served = [risks[offsets[i]:offsets[i + 1]] for i in range(len(rows))]
    print(f"{len(stays)} test stays, {sum(len(f[1]) for f in feeds)} messages "
          f"({sum(f[2] for f in feeds)} stays as FHIR), {doubtful} values outside their plausible range, "
          f"{dropped} refused values left out", flush=True)

    out = {"stays": len(stays), "subset_seed": a.seed if a.stays else None, "shard": a.shard,
           "model": f"{info.name}/{info.version}", "db": "postgresql" if a.db else "sqlite", "explain": a.explain,
           "values_outside_plausible_range": doubtful, "values_left_out_refused": dropped}
    latencies = None
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("messages", "hourly"):
            if mode == "hourly" and a.skip_hourly:
                continue
            url = a.db or f"sqlite:///{tmp}/{mode}.db"
            with service(url, a) as c:
                admitted = [c.post("/patients", json=pl.admission, headers=H).status_code for pl in plans]
                assert all(s in (200, 201) for s in admitted), admitted
                if mode == "messages":
                    out["realistic_feed"], latencies = send_messages(c, stays, feeds)
                    out["served_vs_offline"] = compare(c, plans, rows, offline)
                    out["served_vs_offline_from_admission"] = compare(c, plans, rows, as_served)
                else:
                    out["one_row_per_hour"] = send_hourly(c, plans)
            if a.db:
                from sqlalchemy import create_engine, text
                eng = create_engine(a.db)
                with eng.begin() as conn:  # the next mode starts empty
                    for t in ("shadow_scores", "shadow_states", "audit_events", "alarms", "messages", "observations",
                              "patients"):
                        conn.execute(text(f"DELETE FROM {t}"))
                eng.dispose()
    print(json.dumps(out, indent=2))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
        if latencies is not None and a.shard:
            np.save(Path(a.out).with_suffix(".latencies.npy"), latencies)
    return 0


def cut(source: str, keep: set[tuple[str, str]], target: Path) -> None:
    """The members of the archive `source` whose stay is in `keep`, byte for byte, into `target`."""
    import tarfile

    from training.sepsis.data import stay_identity
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source) as src, tarfile.open(target, "w:xz") as dst:
        for m in src:
            if m.isfile() and m.name.endswith(".psv") and stay_identity(m.name) in keep:
                dst.addfile(m, src.extractfile(m))


def combine(files: list[Path]) -> dict:
    """The shards' records as one: counts added up, the worst difference kept, latency percentiles
    over every message; throughput per process (each shard ran in its own)."""
    parts = [json.loads(f.read_text()) for f in files]
    lat = np.concatenate([np.load(f.with_suffix(".latencies.npy")) for f in files])
    feed = [q["realistic_feed"] for q in parts]
    refusals: dict[str, int] = {}
    for f in feed:
        for why, n in f["refusals"].items():
            refusals[why] = refusals.get(why, 0) + n
    out = {"stays": sum(q["stays"] for q in parts),
           "shards": sorted((q["shard"] for q in parts), key=lambda k: [int(x) for x in k.split("/")]),
           "model": parts[0]["model"], "db": parts[0]["db"], "explain": parts[0]["explain"],
           "values_outside_plausible_range": sum(q["values_outside_plausible_range"] for q in parts),
           "values_left_out_refused": sum(q["values_left_out_refused"] for q in parts),
           "realistic_feed": {
               "messages": sum(f["messages"] for f in feed), "refused": sum(f["refused"] for f in feed),
               "refusals": refusals,
               "answers_warning_of_implausible_values": sum(f["answers_warning_of_implausible_values"] for f in feed),
               "json_answers_that_revised_stored_hours": sum(f["json_answers_that_revised_stored_hours"] for f in feed),
               "messages_per_s_per_process": [min(f["messages_per_s"] for f in feed), max(f["messages_per_s"] for f in feed)],
               "p50_ms": round(percentile(lat.tolist(), 50), 2), "p99_ms": round(percentile(lat.tolist(), 99), 2)}}
    assert {q["model"] for q in parts} == {out["model"]}, "shards of different models"
    for key in ("served_vs_offline", "served_vs_offline_from_admission"):
        out[key] = {}
        for kind in parts[0][key]:
            rows = [q[key][kind] for q in parts]
            worst = max(rows, key=lambda r: r["max_abs_difference"])
            out[key][kind] = {"stays": sum(r["stays"] for r in rows),
                              "hours_compared": sum(r["hours_compared"] for r in rows),
                              "hours_missing": sum(r["hours_missing"] for r in rows),
                              "max_abs_difference": worst["max_abs_difference"],
                              "hours_over_1e-4": sum(r["hours_over_1e-4"] for r in rows),
                              "worst_stay": worst["worst_stay"]}
    return out


if __name__ == "__main__":
    sys.exit(main())
