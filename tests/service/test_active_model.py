"""A model switch outlives the process that made it (issue 17 item 4): a restart serves the switched
model, not the configured one, and every other process on the database follows the switch."""
from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import create_engine

from service.lifecycle import active as active_model
from tests.service.conftest import client_for, hdr, obs

SWITCH = {"name": "sepsis-cfc", "version": "2", "by": "dr admin", "note": "upgrade"}


def _active(client) -> str:
    r = client.get("/models", headers=hdr("viewer"))
    assert r.status_code == 200, r.text
    return r.json()["active"]["version"]


def test_a_restart_serves_the_switched_model(db_url, models_root):
    with client_for(db_url, models_root, model_follow_s=0) as c:  # configured: version 1
        assert c.post("/predict", json=obs("r1", 0, HR=80.0), headers=hdr("ingest")).json()["model_version"] == "1"
        assert c.post("/models/active", json=SWITCH, headers=hdr("admin")).status_code == 200
    with client_for(db_url, models_root, model_follow_s=0) as c:  # the same configuration, restarted
        assert _active(c) == "2"
        assert c.get("/ready").json()["model_version"] == "2"
        r = c.post("/predict", json=obs("r1", 1, HR=85.0), headers=hdr("ingest")).json()
        assert r["model_version"] == "2"


def test_another_process_follows_a_switch(db_url, models_root):
    with client_for(db_url, models_root, model_follow_s=0.1) as a, \
            client_for(db_url, models_root, model_follow_s=0.1) as b:
        assert _active(a) == _active(b) == "1"
        assert b.post("/predict", json=obs("f1", 0, HR=80.0), headers=hdr("ingest")).status_code == 200
        assert a.post("/models/active", json=SWITCH, headers=hdr("admin")).status_code == 200
        deadline = time.monotonic() + 20
        while _active(b) != "2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _active(b) == "2", "the second process did not follow the switch"
        assert b.post("/predict", json=obs("f1", 1, HR=82.0), headers=hdr("ingest")).json()["model_version"] == "2"


def test_a_recorded_model_missing_here_falls_back_to_the_configured_one(sqlite_url, models_root):
    with client_for(sqlite_url, models_root, model_follow_s=0):
        pass  # migrated
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        active_model.record(conn, "sepsis-cfc", "99", dt.datetime.now(dt.timezone.utc), "someone")
    engine.dispose()
    with client_for(sqlite_url, models_root, model_follow_s=0) as c:
        assert _active(c) == "1"
        assert c.post("/predict", json=obs("m1", 0, HR=80.0), headers=hdr("ingest")).json()["model_version"] == "1"
