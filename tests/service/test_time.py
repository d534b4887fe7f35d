"""Times ahead of the service's clock are refused (one observation in 2036 used to block its patient
for good), and an admin can remove a patient's observations after a time, audited, with the
patient's state rebuilt from what remains."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text

from tests.service.conftest import T0, client_for, hdr, iso, obs, reference_risks

H = dt.timedelta(hours=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _obs(pid: str, t: dt.datetime, **vitals) -> dict:
    return {"patient_id": pid, "timestamp": iso(t), "vitals": vitals or {"HR": 80.0}}


def test_observation_ahead_of_the_clock_is_422_naming_the_field(client):
    now = _now()
    r = client.post("/predict", json=_obs("f1", now + 2 * H), headers=hdr("ingest"))
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["timestamp"]
    assert "ahead of the service's clock" in r.json()["errors"][0]["reason"]
    assert client.get("/patients/f1", headers=hdr("viewer")).status_code == 404  # nothing stored
    # within the margin (1 h by default) is accepted, and the patient goes on
    assert client.post("/predict", json=_obs("f1", now + 0.5 * H), headers=hdr("ingest")).status_code == 200
    batch = [_obs("f2", now - H), _obs("f2", now + 3 * H), _obs("f3", dt.datetime(2036, 1, 1, tzinfo=dt.timezone.utc))]
    r = client.post("/predict/batch", json={"observations": batch}, headers=hdr("ingest"))
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["observations.1.timestamp",
                                                                                 "observations.2.timestamp"]
    assert client.get("/patients/f2", headers=hdr("viewer")).status_code == 404  # all or nothing


def test_admission_and_outcome_times_ahead_of_the_clock_are_422(client):
    now = _now()
    r = client.post("/patients", json={"patient_id": "f4", "icu_admit_time": iso(now + 5 * H)}, headers=hdr("ingest"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "icu_admit_time"
    assert client.post("/patients", json={"patient_id": "f4", "icu_admit_time": iso(now - H)},
                       headers=hdr("ingest")).status_code == 201
    for body, field in (({"outcome": "sepsis", "onset_time": iso(now + 2 * H)}, "onset_time"),
                        ({"outcome": "no_sepsis", "discharged_at": iso(now + 2 * H)}, "discharged_at")):
        r = client.post("/patients/f4/outcome", json=body, headers=hdr("clinician"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text
    assert client.get("/patients/f4", headers=hdr("viewer")).json()["outcome"] is None


def test_the_margin_is_a_setting(sqlite_url, models_root):
    now = _now()
    with client_for(sqlite_url, models_root, future_margin_hours=0) as c:
        r = c.post("/predict", json=_obs("f5", now + dt.timedelta(minutes=5)), headers=hdr("ingest"))
        assert r.status_code == 422 and "at most 0 h ahead" in r.json()["errors"][0]["reason"]
    with client_for(sqlite_url, models_root, future_margin_hours=48) as c:
        assert c.post("/predict", json=_obs("f5", now + 24 * H), headers=hdr("ingest")).status_code == 200


def _rows(engine, table: str, pid: str, where: str = "") -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} WHERE patient_id = :p {where} ORDER BY id"),
                                               {"p": pid})]


def test_admin_correction_removes_what_follows_and_monitoring_resumes(db_url, models_root):
    rows = [(float(h), {"HR": 70.0 + 3 * h, "Temp": 37.0 + h / 10}) for h in range(6)]
    with client_for(db_url, models_root, model="always") as c:  # every observation crosses the threshold
        engine = c.app.state.services.engine
        for h, v in rows:
            assert c.post("/predict", json=obs("k1", h, **v), headers=hdr("ingest")).status_code == 200
        first_alarm = c.get("/patients/k1", headers=hdr("viewer")).json()["alarms"][0]["id"]
        c.post(f"/alarms/{first_alarm}/resolve", json={"by": "rn"}, headers=hdr("clinician"))
        # a year ahead is refused outright: it would step every hour in between
        ahead = c.post("/predict", json=obs("k1", 24 * 400, HR=88.0), headers=hdr("ingest"))
        assert ahead.status_code == 409 and "SEPSIS_MAX_GAP_HOURS" in ahead.json()["detail"]
        wrong = c.post("/predict", json=obs("k1", 105, HR=88.0), headers=hdr("ingest")).json()  # a clock 4 days ahead
        assert wrong["iculos"] == 106
        blocked = c.post("/predict", json=obs("k1", 6, HR=90.0), headers=hdr("ingest"))
        assert blocked.status_code == 409 and "revises at most the last 72 hours" in blocked.json()["detail"]
        after = iso(T0 + dt.timedelta(hours=5))
        kept_obs = _rows(engine, "observations", "k1")[:6]
        kept_alarms = _rows(engine, "alarms", "k1", f"AND raised_at <= '{(T0 + dt.timedelta(hours=5)).strftime('%Y-%m-%d %H:%M:%S')}'")
        if db_url.startswith("postgresql"):
            kept_alarms = [a for a in _rows(engine, "alarms", "k1") if a[2] <= T0 + dt.timedelta(hours=5)]
        gone_alarms = {a[0] for a in _rows(engine, "alarms", "k1")} - {a[0] for a in kept_alarms}
        assert wrong["alarm_id"] is None or wrong["alarm_id"] in gone_alarms

        query = {"after": after, "by": "dr.admin", "reason": "monitor 7's clock was set days ahead"}
        for role in ("ingest", "clinician", "viewer"):
            r = c.delete("/patients/k1/observations", params=query, headers=hdr(role))
            assert r.status_code == 403 and "admin" in r.json()["detail"]
        assert len(_rows(engine, "observations", "k1")) == 106  # refused: nothing changed
        r = c.delete("/patients/k1/observations", params=query, headers=hdr("admin"))
        assert r.status_code == 200, r.text
        out = r.json()
        assert (out["removed_observations"], out["removed_alarms"], out["remaining_observations"]) == (
            100, len(gone_alarms), 6)
        # everything at or before `after` is exactly as it was stored
        assert _rows(engine, "observations", "k1") == kept_obs and _rows(engine, "alarms", "k1") == kept_alarms
        assert c.delete("/patients/k1/observations", params=query, headers=hdr("admin")).status_code == 409

        # monitoring resumes: the next real observation is scored as if the wrong one never came
        nxt = c.post("/predict", json=obs("k1", 6, HR=90.0), headers=hdr("ingest")).json()
        for h, v in rows + [(6.0, {"HR": 90.0})]:
            fresh = c.post("/predict", json=obs("k2", h, **v), headers=hdr("ingest")).json()
        assert nxt["risk"] == fresh["risk"] and nxt["elapsed_hours"] == 1.0 and nxt["iculos"] == 7
        assert nxt["risk"] == pytest.approx(reference_risks(rows + [(6.0, {"HR": 90.0})])[-1], rel=1e-5, abs=1e-6)
        assert nxt["alarm_id"] is not None  # the removed alarm no longer suppresses
        detail = c.get("/patients/k1", headers=hdr("viewer")).json()
        assert detail["n_observations"] == 7 and detail["last_observation"].startswith(iso(T0 + dt.timedelta(hours=6))[:19])

        with engine.connect() as conn:
            audit = conn.execute(text("SELECT * FROM corrections")).mappings().all()
        assert len(audit) == 1
        a = audit[0]
        assert (a["patient_id"], a["corrected_by"], a["reason"], a["key_name"]) == (
            "k1", "dr.admin", "monitor 7's clock was set days ahead", "bootstrap")
        assert a["key_id"] is not None and a["removed_observations"] == 100 and a["removed_alarms"] == len(gone_alarms)
        removed = a["removed"] if isinstance(a["removed"], dict) else json.loads(a["removed"])
        assert removed["observations"][-1]["vitals"] == {"HR": 88.0}
        assert {x["id"] for x in removed["alarms"]} == gone_alarms
        assert [(m["variable"], m["value"]) for m in removed["messages"]] == [("HR", 88.0)]  # the message goes too


def test_correction_of_every_observation_lets_the_patient_start_again(client):
    for h in (0, 1):
        client.post("/predict", json=obs("k3", 24 * 400 + h, HR=80.0), headers=hdr("ingest"))
    r = client.delete("/patients/k3/observations", params={"after": iso(T0 - dt.timedelta(days=1)), "by": "a",
                                                           "reason": "wrong patient"}, headers=hdr("admin"))
    assert r.status_code == 200 and r.json()["remaining_observations"] == 0
    first = client.post("/predict", json=obs("k3", 0, HR=80.0), headers=hdr("ingest")).json()
    assert (first["iculos"], first["elapsed_hours"]) == (1, 0)  # its ICU admission was the removed first one
    assert first["risk"] == pytest.approx(reference_risks([(0.0, {"HR": 80.0})])[0], rel=1e-5, abs=1e-6)
    assert client.delete("/patients/nobody/observations", params={"after": iso(T0), "by": "a", "reason": "xyz"},
                         headers=hdr("admin")).status_code == 404
