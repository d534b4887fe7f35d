"""What FHIR costs against the JSON API: the same synthetic stays (PhysioNet-shaped rows) sent hour by
hour as FHIR transaction Bundles (training/sepsis/fhir_bundle.py, POST /fhir) and as /predict
posts, in one process through the ASGI app (no network), SQLite, the shipped default model. Prints
per-hour request latency (median, p90) for both paths and the share of a FHIR request spent
reading and mapping the bundle (fhir.resources validation + the LOINC/UCUM mapping) alone.

    python bench/fhir_ingest.py --stays 20 --hours 24
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402

from models.contract import FEATURES, INDEX  # noqa: E402
from models.fhir_codes import load_codes  # noqa: E402
from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.fhir.mapping import map_entries  # noqa: E402
from service.fhir.reading import read_bundle  # noqa: E402
from training.sepsis.fhir_bundle import stay_bundles  # noqa: E402
from training.sepsis.replay import plan_stay  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def synthetic_stay(hours: int, rng) -> np.ndarray:
    """Rows as the archive has them: vitals most hours, a lab panel every 6 h, demographics."""
    v = np.full((hours, len(FEATURES)), np.nan, np.float32)
    for name, lo, hi in (("HR", 60, 130), ("O2Sat", 88, 100), ("SBP", 90, 160), ("MAP", 55, 100), ("DBP", 40, 90),
                         ("Resp", 10, 30), ("Temp", 35.5, 39.5)):
        v[:, INDEX[name]] = np.round(rng.uniform(lo, hi, hours), 1)
    for name, lo, hi in (("Lactate", 0.5, 5), ("WBC", 3, 20), ("Creatinine", 0.5, 3), ("Glucose", 70, 250),
                         ("BUN", 5, 60), ("Platelets", 50, 400), ("Hgb", 7, 15), ("Potassium", 3, 5.5)):
        v[::6, INDEX[name]] = np.round(rng.uniform(lo, hi, len(v[::6])), 2)
    v[:, INDEX["Age"]], v[:, INDEX["Gender"]], v[:, INDEX["Unit1"]], v[:, INDEX["Unit2"]] = 63.5, 1, 1, 0
    v[:, INDEX["HospAdmTime"]] = -4.2
    v[:, INDEX["ICULOS"]] = np.arange(1, hours + 1)
    return v


def pct(xs, q):
    return float(np.percentile(xs, q))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stays", type=int, default=20)
    p.add_argument("--hours", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    stays = [synthetic_stay(a.hours, rng) for _ in range(a.stays)]
    key = "sk_bench_admin"
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db_url=f"sqlite:///{tmp}/bench.db", bootstrap_keys=f"admin:{key}", key_cache_seconds=0.0)
        headers = {"X-API-Key": key}
        fhir_ms, json_ms, read_ms = [], [], []
        codes = load_codes()
        with TestClient(create_app(settings)) as c:
            for k, values in enumerate(stays):
                plan = plan_stay(f"json-{k}", values, np.zeros(len(values), np.int8), START)
                assert c.post("/patients", json=plan.admission, headers=headers).status_code == 201
                for o in plan.observations:
                    t0 = time.perf_counter()
                    r = c.post("/predict", json=o["body"], headers=headers)
                    json_ms.append((time.perf_counter() - t0) * 1e3)
                    assert r.status_code == 200, r.text
                for ts, b in stay_bundles(f"fhir-{k}", values, START, codes):
                    body = json.dumps(b)
                    t0 = time.perf_counter()
                    r = c.post("/fhir", content=body, headers={**headers, "Content-Type": "application/fhir+json"})
                    fhir_ms.append((time.perf_counter() - t0) * 1e3)
                    assert r.status_code == 200, r.text
                    t0 = time.perf_counter()
                    map_entries(read_bundle(json.loads(body))[1], codes)
                    read_ms.append((time.perf_counter() - t0) * 1e3)
            services = c.app.state.services
            model = f"{services.model.name}/{services.model.version}"
    out = {"stays": a.stays, "hours": a.hours, "model": model, "machine": f"{platform.node()} {os.cpu_count()} cores",
           "predict_ms": {"median": statistics.median(json_ms), "p90": pct(json_ms, 90)},
           "fhir_ms": {"median": statistics.median(fhir_ms), "p90": pct(fhir_ms, 90)},
           "fhir_read_and_map_ms": {"median": statistics.median(read_ms), "p90": pct(read_ms, 90)}}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
