"""The alarm lifecycle against the ward's workflow: an outcome or the end of the
stay resolves the patient's alarm with the reason, a new episode supersedes a snoozed alarm whose
snooze ended (never two active alarms), and a confirmed-sepsis patient stays listed in treatment."""
from __future__ import annotations

import datetime as dt

import pytest

from tests.service.conftest import T0, client_for, hdr, iso, obs


@pytest.fixture
def aclient(db_url, models_root):
    """A model whose threshold is 0: every observation crosses it."""
    with client_for(db_url, models_root, model="always") as c:
        yield c


def post(c, patient, hour):
    r = c.post("/predict", json=obs(patient, hour, HR=90), headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    return r.json()


def alarms_of(c, patient):
    return c.get("/alarms", params={"patient_id": patient}, headers=hdr("viewer")).json()


def listed(c, patient):
    return next(p for p in c.get("/patients", headers=hdr("viewer")).json() if p["patient_id"] == patient)


@pytest.mark.parametrize("state", ["open", "acknowledged", "snoozed"])
def test_sepsis_outcome_resolves_the_alarm_with_its_reason(aclient, state):
    c = aclient
    alarm_id = post(c, "o1", 0)["alarm_id"]
    if state == "acknowledged":
        assert c.post(f"/alarms/{alarm_id}/ack", json={"by": "rn", "reason": "confirmed"},
                      headers=hdr("clinician")).status_code == 200
    if state == "snoozed":
        assert c.post(f"/alarms/{alarm_id}/snooze", json={"by": "rn", "minutes": 30},
                      headers=hdr("clinician")).status_code == 200
    r = c.post("/patients/o1/outcome", json={"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=2)),
                                            "recorded_by": "dr.house"}, headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    assert r.json()["active_alarm_id"] is None and r.json()["status"] == "in_treatment"
    [a] = alarms_of(c, "o1")
    assert (a["id"], a["state"], a["resolved_by"], a["resolve_note"]) == (alarm_id, "resolved", "dr.house",
                                                                        "outcome recorded: sepsis")
    assert a["resolved_at"] is not None
    assert c.get("/alarms", params={"state": "active"}, headers=hdr("viewer")).json() == []
    # the feed goes on: the patient is in treatment, so no new alarm reopens the question
    later = post(c, "o1", 3)
    assert later["alarm"] and later["alarm_id"] is None
    # the same outcome again is unchanged and resolves nothing twice
    again = c.post("/patients/o1/outcome", json={"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=2))},
                   headers=hdr("clinician"))
    assert again.status_code == 200 and alarms_of(c, "o1")[0]["resolved_by"] == "dr.house"


def test_discharge_resolves_the_alarm_as_the_stay_ended(aclient):
    c = aclient
    alarm_id = post(c, "d1", 0)["alarm_id"]
    other = post(c, "d2", 0)["alarm_id"]  # another patient's alarm is not touched
    discharged = T0 + dt.timedelta(hours=5)
    r = c.post("/patients/d1/outcome", json={"outcome": "no_sepsis", "discharged_at": iso(discharged)},
               headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    [a] = alarms_of(c, "d1")
    assert (a["id"], a["state"], a["resolved_by"]) == (alarm_id, "resolved", "system")
    assert a["resolve_note"] == f"outcome recorded: no_sepsis; stay ended (discharged_at {discharged.isoformat()})"
    assert [x["state"] for x in alarms_of(c, "d2")] == ["open"] and alarms_of(c, "d2")[0]["id"] == other
    assert listed(c, "d1")["status"] == "discharged" and listed(c, "d2")["status"] == "monitoring"


def test_new_episode_supersedes_a_snoozed_alarm_whose_snooze_ended(aclient):
    c = aclient
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    body = lambda t: {"patient_id": "s1", "timestamp": iso(t), "vitals": {"HR": 90}}  # noqa: E731
    first = c.post("/predict", json=body(now - dt.timedelta(hours=1)), headers=hdr("ingest")).json()["alarm_id"]
    assert c.post(f"/alarms/{first}/snooze", json={"by": "rn", "minutes": 20}, headers=hdr("clinician")).status_code == 200
    assert c.post("/predict", json=body(now + dt.timedelta(minutes=10)), headers=hdr("ingest")).json()["alarm_id"] is None
    second = c.post("/predict", json=body(now + dt.timedelta(minutes=40)), headers=hdr("ingest")).json()["alarm_id"]
    assert second not in (None, first)
    by_id = {a["id"]: a for a in alarms_of(c, "s1")}
    assert by_id[first]["state"] == "resolved" and by_id[first]["resolved_by"] == "system"
    assert by_id[first]["resolve_note"] == f"superseded by alarm {second}"
    active = c.get("/alarms", params={"state": "active", "patient_id": "s1"}, headers=hdr("viewer")).json()
    assert [(a["id"], a["state"]) for a in active] == [(second, "open")]
    assert c.get("/patients/s1", headers=hdr("viewer")).json()["active_alarm_id"] == second


def test_a_septic_patient_stays_listed_in_treatment(aclient):
    c = aclient
    post(c, "t1", 0)
    post(c, "m1", 0)
    assert listed(c, "t1")["status"] == "monitoring"
    r = c.post("/patients/t1/outcome", json={"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=1))},
               headers=hdr("clinician"))
    assert r.status_code == 200
    assert listed(c, "t1")["status"] == "in_treatment" and listed(c, "m1")["status"] == "monitoring"
    assert c.get("/patients/t1", headers=hdr("viewer")).json()["status"] == "in_treatment"
    ids = [p["patient_id"] for p in c.get("/patients", params={"with_outcome": "true"}, headers=hdr("viewer")).json()]
    assert ids == ["t1"]


def test_a_patient_in_treatment_is_discharged_later_once(aclient):
    """Sepsis confirmed at onset, the stay ending hours later: the same outcome posted again with the
    discharge time takes the patient off the ward, audited; the discharge is recorded once."""
    c = aclient
    post(c, "d1", 0)
    onset = iso(T0 + dt.timedelta(hours=1))
    sepsis = {"outcome": "sepsis", "onset_time": onset, "recorded_by": "dr a"}
    assert c.post("/patients/d1/outcome", json=sepsis, headers=hdr("clinician")).json()["status"] == "in_treatment"
    discharge = {**sepsis, "discharged_at": iso(T0 + dt.timedelta(hours=2)), "recorded_by": "rn b"}
    r = c.post("/patients/d1/outcome", json=discharge, headers=hdr("clinician"))
    assert r.status_code == 200 and r.json()["status"] == "discharged", r.text
    detail = c.get("/patients/d1", headers=hdr("viewer")).json()
    assert detail["discharged_at"].startswith(iso(T0 + dt.timedelta(hours=2))[:19])
    rows = [a for a in detail["audit"] if a["action"] == "discharge"]
    assert len(rows) == 1 and rows[0]["actor"]["person"] == "rn b"
    assert c.post("/patients/d1/outcome", json=discharge, headers=hdr("clinician")).status_code == 200  # the same again
    assert len([a for a in c.get("/patients/d1", headers=hdr("viewer")).json()["audit"] if a["action"] == "discharge"]) == 1
    other = c.post("/patients/d1/outcome", json={**discharge, "discharged_at": iso(T0 + dt.timedelta(hours=3))},
                   headers=hdr("clinician"))
    assert other.status_code == 409 and "already discharged" in other.json()["detail"]


def test_a_discharge_before_the_onset_is_refused(aclient):
    c = aclient
    post(c, "d2", 0)
    sepsis = {"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=3))}
    assert c.post("/patients/d2/outcome", json=sepsis, headers=hdr("clinician")).status_code == 200
    r = c.post("/patients/d2/outcome", json={**sepsis, "discharged_at": iso(T0 + dt.timedelta(hours=2))},
               headers=hdr("clinician"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "discharged_at", r.text
    assert c.get("/patients/d2", headers=hdr("viewer")).json()["status"] == "in_treatment"


@pytest.mark.postgres
def test_supersession_that_loses_to_an_acknowledgement_starts_over(models_root):
    """A clinician acknowledges the expired snoozed alarm between the observation's read of it and
    its supersession (possible on PostgreSQL only: SQLite's BEGIN IMMEDIATE admits no writer in
    between). The observation's write starts over, sees the acknowledgement and raises nothing."""
    from sqlalchemy import event, text

    from tests.service.conftest import PG_URL, _pg_schema
    if not PG_URL:
        pytest.skip("SEPSIS_TEST_PG_URL is not set")
    with _pg_schema() as url, client_for(url, models_root, model="always") as c:
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        body = lambda t: {"patient_id": "r1", "timestamp": iso(t), "vitals": {"HR": 90}}  # noqa: E731
        first = c.post("/predict", json=body(now - dt.timedelta(hours=1)), headers=hdr("ingest")).json()["alarm_id"]
        assert c.post(f"/alarms/{first}/snooze", json={"by": "rn", "minutes": 1},
                      headers=hdr("clinician")).status_code == 200
        engine = c.app.state.services.engine
        fired = []

        def ack_in_between(conn, cursor, statement, *args):
            if statement.startswith("INSERT INTO alarms") and not fired:
                fired.append(True)
                with engine.connect() as other:
                    other.execute(text("UPDATE alarms SET state = 'acknowledged', acknowledged_by = 'rn' WHERE id = :i"),
                                  {"i": first})
                    other.commit()

        event.listen(engine, "before_cursor_execute", ack_in_between)
        try:
            r = c.post("/predict", json=body(now + dt.timedelta(minutes=30)), headers=hdr("ingest")).json()
        finally:
            event.remove(engine, "before_cursor_execute", ack_in_between)
        assert fired and r["alarm"] and r["alarm_id"] is None
        assert [(a["id"], a["state"]) for a in alarms_of(c, "r1")] == [(first, "acknowledged")]


def test_no_observation_after_the_discharge(aclient):
    """A stay that ended takes no more observations: a late one from before the discharge is scored,
    one after it is a 409 naming the discharge, and nothing of the refused request is stored."""
    c = aclient
    post(c, "x1", 0)
    out = {"outcome": "no_sepsis", "discharged_at": iso(T0 + dt.timedelta(hours=2))}
    assert c.post("/patients/x1/outcome", json=out, headers=hdr("clinician")).status_code == 200
    assert post(c, "x1", 1.5)["alarm_id"] is None  # measured before the discharge, arriving late
    late = c.post("/predict/batch", json={"observations": [obs("x1", 1.75, HR=88), obs("x1", 3, HR=95)]},
                  headers=hdr("ingest"))
    assert late.status_code == 409 and "was discharged at" in late.json()["detail"], late.text
    assert c.get("/patients/x1", headers=hdr("viewer")).json()["n_observations"] == 2
