"""What a patient-hour costs on disk: the live model's hourly row (values, risk, contributions and the
state a late value rewinds to), the messages it was filed from, and each shadow model's score and state.

Real test-split stays (patient split seed 0), each sent as one JSON row per hour (`plan_stay`, the
replay's layout) into a fresh in-process service on SQLite with the shipped model active and
`--shadows` scored beside it. Then, per table, the rows, the bytes of the stored states
(`length(state)`) and the database file per stored hour, and what that makes per patient-day and
for a 1,000-bed hospital's year.

    python bench/storage_growth.py --data ../shared/data/physionet2019/physionet2019_dev.tar.xz \
        --stays 300 --shadows sepsis-cfc:3 --out results/service_storage/sqlite_300_one_shadow.json

`--prune` then discharges every stay at its end (the replay's outcome), drops the ended stays'
per-hour states (service/lifecycle/retention.py, as `python -m service prune-states` does), runs
SQLite's VACUUM and measures again: what an ended stay keeps on disk.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from models.registry import resolve  # noqa: E402
from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.lifecycle.retention import prune_states  # noqa: E402
from training.sepsis.replay import discharge_outcome, plan_stay, select_stays  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
KEY = "sk_storage_admin"
H = {"X-API-Key": KEY}
TABLES = ("observations", "messages", "shadow_scores", "shadow_states", "alarms", "audit_events", "patients")


def measure(db: Path) -> dict:
    eng = create_engine(f"sqlite:///{db}")
    out = {}
    with eng.connect() as conn:
        for t in TABLES:
            out[t] = {"rows": conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()}
        for t in ("observations", "shadow_scores", "shadow_states"):
            out[t]["state_bytes"] = int(conn.execute(text(f"SELECT coalesce(sum(length(state)), 0) FROM {t}")).scalar_one())
        # what SQLite itself holds per table and its indexes (the dbstat virtual table, when compiled in)
        try:
            for name, size in conn.execute(text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")):
                for t in TABLES:
                    if name == t or name.startswith(f"ix_{t}") or name.startswith(f"sqlite_autoindex_{t}"):
                        out[t]["pages_bytes"] = out[t].get("pages_bytes", 0) + int(size)
        except Exception:  # noqa: BLE001 - dbstat is optional in SQLite builds
            pass
    eng.dispose()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--stays", type=int, default=100, help="a seeded random subset of the test split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default="models")
    p.add_argument("--shadows", default="sepsis-cfc:3", help="name:version,... scored beside the active model")
    p.add_argument("--prune", action="store_true", help="then discharge every stay, prune its states, VACUUM, measure")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    stays = select_stays(a.data, "test", 0, None)
    pick = np.random.default_rng(a.seed).choice(len(stays), min(a.stays, len(stays)), replace=False)
    plans = [plan_stay(f"g{stays[i].patient_id}", stays[i].values, stays[i].labels, START) for i in sorted(pick)]
    active = resolve("sepsis-cfc", None, a.models)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "growth.db"
        settings = Settings(db_url=f"sqlite:///{db}", models_dir=a.models, model=active.name,
                            model_version=active.version, shadow_models=a.shadows, bootstrap_keys=f"admin:{KEY}",
                            microbatch="off", device="cpu")
        with TestClient(create_app(settings)) as c:
            for pl in tqdm(plans, desc="stays", unit="stay"):
                assert c.post("/patients", json=pl.admission, headers=H).status_code in (200, 201)
                r = c.post("/predict/batch", json={"observations": [o["body"] for o in pl.observations]}, headers=H)
                assert r.status_code == 200, r.text[:300]
            if a.prune:
                for pl in plans:
                    r = c.post(f"/patients/{pl.patient_id}/outcome", json=discharge_outcome(pl), headers=H)
                    assert r.status_code == 200, r.text[:300]
        size = db.stat().st_size
        tables = measure(db)
        pruned = None
        if a.prune:
            eng = create_engine(f"sqlite:///{db}")
            result = prune_states(eng, dt.datetime.now(dt.timezone.utc))
            with eng.connect() as conn:
                conn.execute(text("VACUUM"))
            eng.dispose()
            after = measure(db)
            pruned = {**result.as_dict(), "database_file_bytes": db.stat().st_size, "tables": after,
                      "database_file_bytes_per_stored_hour": round(db.stat().st_size / max(tables["observations"]["rows"], 1), 1)}
    hours = tables["observations"]["rows"]
    shadows = [s for s in a.shadows.split(",") if s]
    per_hour = {
        "database_file_bytes": round(size / hours, 1),
        "live_state_bytes": round(tables["observations"]["state_bytes"] / hours, 1),
        "shadow_state_bytes_per_shadow": round(tables["shadow_scores"]["state_bytes"] / hours / max(len(shadows), 1), 1),
        **{f"{t}_pages_bytes": round(v["pages_bytes"] / hours, 1) for t, v in tables.items() if "pages_bytes" in v},
    }
    out = {"stays": len(plans), "hours": hours, "model": f"{active.name}/{active.version}", "shadows": shadows,
           "db": "sqlite", "explain": settings.explain, "database_file_bytes": size, "tables": tables,
           "per_stored_hour": per_hour,
           "per_patient_day_kb": round(per_hour["database_file_bytes"] * 24 / 1024, 1),
           "per_1000_beds_year_gb": round(per_hour["database_file_bytes"] * 24 * 365 * 1000 / 1e9, 1)}
    if pruned is not None:
        out["after_discharge_and_prune"] = pruned
    print(json.dumps(out, indent=2))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
