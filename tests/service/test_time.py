"""Times ahead of the service's clock are refused (one observation in 2036 used to block its patient
for good), and an admin can remove a patient's observations after a time, audited, with the
patient's state rebuilt from what remains."""
from __future__ import annotations

import datetime as dt

import pytest

from tests.service.conftest import client_for, hdr, iso

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
