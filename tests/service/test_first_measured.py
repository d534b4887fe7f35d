"""A patient is monitored from their first measured value (models.alarm_figures): the hours the
service steps between the ICU admission and the first vital sign or lab raise no alarm, whatever
the risk the demographics alone give, and /stats counts no hour before the first measured one.

Under the `always` fixture model (threshold 0) every risk is at the threshold, so any hour the
rule let through would alarm."""
from __future__ import annotations

import datetime as dt

from tests.service.conftest import T0, client_for, hdr, iso, obs

H = dt.timedelta(hours=1)


def admit(c, pid: str) -> None:
    r = c.post("/patients", json={"patient_id": pid, "age": 71, "gender": 1, "unit": "MICU",
                                  "icu_admit_time": iso(T0)}, headers=hdr("ingest"))
    assert r.status_code == 201, r.text


def post(c, pid: str, hour: float, **vitals) -> dict:
    r = c.post("/predict", json=obs(pid, hour, **vitals), headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    return r.json()


def test_no_alarm_before_the_first_measured_value_and_one_at_it(db_url, models_root):
    with client_for(db_url, models_root, model="always", clock="simulated") as c:
        admit(c, "fm1")
        empty = [post(c, "fm1", h) for h in (0.5, 1.5, 2.5)]  # hours 1-3: ticks, nothing measured
        # a risk from the demographics alone, at the threshold: no alarm, and the answer says so
        assert [(e["iculos"], e["alarm"], e["alarm_id"]) for e in empty] == [(1, False, None), (2, False, None),
                                                                             (3, False, None)]
        assert all(e["risk"] >= e["threshold"] for e in empty)
        first = post(c, "fm1", 3.0, HR=88.0)  # hour 4 (its start): the first measured value
        assert (first["iculos"], first["alarm"]) == (4, True) and first["alarm_id"] is not None
        alarms = c.get("/alarms", params={"patient_id": "fm1"}, headers=hdr("viewer")).json()
        timeline = c.get("/patients/fm1", headers=hdr("viewer")).json()["timeline"]
        bundle = c.get("/fhir/RiskAssessment", params={"patient": "Patient/fm1"}, headers=hdr("viewer")).json()
    assert [a["raised_at"] for a in alarms] == [iso(T0 + 3 * H)]
    assert [t["alarm"] for t in timeline] == [False, False, False, True]
    # FHIR says the same: the threshold is not applied before the first measured hour
    notes = [r["resource"]["note"][0]["text"] for r in sorted(bundle["entry"], key=lambda e: e["resource"]["occurrenceDateTime"])]
    assert all("not applied" in n and "at or above" not in n for n in notes[:3]), notes
    assert "at or above" in notes[3] and "alarm" in notes[3]


def test_stats_count_hours_from_the_first_measured_one(db_url, models_root):
    with client_for(db_url, models_root, model="always", clock="simulated") as c:
        admit(c, "fm2")
        for h in (0.5, 1.5):   # hours 1-2: nothing measured
            post(c, "fm2", h)
        for h in (2.0, 3.0, 4.0):  # hours 3-5, each at its start
            post(c, "fm2", h, HR=90.0)
        r = c.post("/patients/fm2/outcome", json={"outcome": "no_sepsis", "discharged_at": iso(T0 + 6 * H)},
                   headers=hdr("clinician"))
        assert r.status_code == 200, r.text
        stats = c.get("/stats", headers=hdr("viewer")).json()
    assert (stats["patients"], stats["alarms"]) == (1, 1)
    assert stats["patient_days"] == 3 / 24  # hours 3, 4 and 5; not the two before
    assert stats["alarms_per_patient_day"] == 8.0


def test_a_late_value_that_becomes_the_first_measured_one_starts_monitoring_there(db_url, models_root):
    """Alarms follow the latest hour: a late value for hour 2 makes the stay monitored from hour 2,
    and the latest hour (3), now monitored, raises the alarm, saying it came from a late result."""
    with client_for(db_url, models_root, model="always", clock="simulated") as c:
        admit(c, "fm3")
        for h in (0.5, 1.5, 2.5):
            assert post(c, "fm3", h)["alarm_id"] is None
        late = post(c, "fm3", 1.0, Lactate=3.1)  # drawn at hour 2's start, resulted after hour 3's tick
        assert late["iculos"] == 2 and late["revised_hours"] == [2, 3]
        [alarm] = c.get("/alarms", params={"patient_id": "fm3"}, headers=hdr("viewer")).json()
        stats = c.get("/stats", headers=hdr("viewer")).json()
        timeline = c.get("/patients/fm3", headers=hdr("viewer")).json()["timeline"]
    assert alarm["raised_at"] == iso(T0 + 2.5 * H) and alarm["late_result"] is True  # hour 3's tick
    assert stats["patient_days"] == 2 / 24  # hours 2 and 3
    assert [t["alarm"] for t in timeline] == [False, True, True]


def test_a_correction_that_removes_the_first_measured_hour_ends_monitoring_until_the_next_one(db_url, models_root):
    with client_for(db_url, models_root, model="always", clock="simulated") as c:
        admit(c, "fm4")
        post(c, "fm4", 0.5)
        assert post(c, "fm4", 1.0, HR=90.0)["alarm_id"] is not None  # hour 2: measured, alarms
        r = c.delete("/patients/fm4/observations", params={"after": iso(T0 + 0.75 * H), "by": "dr a",
                                                           "reason": "wrong patient"}, headers=hdr("admin"))
        assert r.status_code == 200, r.text
        assert c.get("/patients/fm4", headers=hdr("viewer")).json()["first_measured"] is None
        again = post(c, "fm4", 1.5)  # hour 2 again, nothing measured now
        first = post(c, "fm4", 2.0, HR=91.0)  # hour 3: the first measured hour now
        detail = c.get("/patients/fm4", headers=hdr("viewer")).json()
    assert (again["iculos"], again["alarm"], again["alarm_id"]) == (2, False, None)
    assert (first["iculos"], first["alarm"]) == (3, True) and first["alarm_id"] is not None
    assert detail["first_measured"] == iso(T0 + 2 * H)
