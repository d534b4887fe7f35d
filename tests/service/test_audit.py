"""The audit: every action records its actor (the API key's identity and the person's
name), its time on the service clock and its note, in the same transaction as the action; the API
returns it (GET /audit, an alarm's history, a patient's audit)."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event

from service.auth import identify
from tests.service.conftest import KEYS, T0, client_for, hdr, iso

UTC = dt.timezone.utc


@pytest.fixture
def c(db_url, models_root):
    """Every observation alarms (threshold 0); the simulated clock makes every stamp predictable."""
    with client_for(db_url, models_root, model="always", clock="simulated") as client:
        yield client


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def when(text):
    return None if text is None else dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def post(c, patient, hours, **vitals):
    r = c.post("/predict", json={"patient_id": patient, "timestamp": iso(at(hours)), "vitals": vitals or {"HR": 90.0}},
               headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    return r.json()


def key_of(c, role):
    return identify(c.app.state.services.factory, KEYS[role])


def actor_of(c, role, person):
    key = key_of(c, role)
    return {"key_id": key.id, "key_name": key.name, "role": role, "person": person}


SYSTEM = {"key_id": None, "key_name": None, "role": "system", "person": None}


def audit(c, **params):
    r = c.get("/audit", params=params, headers=hdr("viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def test_every_alarm_action_is_audited_with_key_person_time_and_note(c):
    a = post(c, "p1", 0)["alarm_id"]
    post(c, "p1", 1)
    r = c.post(f"/alarms/{a}/snooze", json={"by": "rn.jones", "minutes": 30}, headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    r = c.post(f"/alarms/{a}/ack", json={"by": "rn.smith", "reason": "already_treated", "note": "on antibiotics"},
               headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    post(c, "p1", 2)
    r = c.post(f"/alarms/{a}/resolve", json={"by": "dr.grey", "note": "sepsis ruled out"}, headers=hdr("admin"))
    assert r.status_code == 200, r.text
    history = r.json()["history"]
    assert [e["action"] for e in history] == ["alarm_raised", "snooze", "acknowledge", "resolve"]
    raised, snooze, ack, resolve = history
    assert raised["actor"] == SYSTEM and when(raised["at"]) == at(0) and raised["details"]["risk"] >= 0
    # the snooze row names who, when and until when (the hole the issue found)
    assert snooze["actor"] == actor_of(c, "clinician", "rn.jones")
    assert when(snooze["at"]) == at(1) and snooze["details"]["minutes"] == 30
    assert when(snooze["details"]["snoozed_until"]) == at(1.5)
    assert ack["actor"] == actor_of(c, "clinician", "rn.smith") and ack["note"] == "on antibiotics"
    assert ack["details"] == {"reason": "already_treated"}
    # the resolve note is recorded, with the admin key that sent it
    assert resolve["actor"] == actor_of(c, "admin", "dr.grey") and resolve["note"] == "sepsis ruled out"
    assert when(resolve["at"]) == at(2)
    assert all(e["alarm_id"] == a and e["patient_id"] == "p1" for e in history)
    # the same rows from GET /audit (newest first) and from the patient's page
    assert [e["id"] for e in audit(c, alarm_id=a)] == [e["id"] for e in reversed(history)]
    detail = c.get("/patients/p1", headers=hdr("viewer")).json()
    assert detail["audit"] == history and detail["alarms"][0]["history"] == history
    listed = c.get("/alarms", params={"patient_id": "p1"}, headers=hdr("viewer")).json()
    assert listed[0]["history"] == history
    assert listed[0]["snoozed_by"] == "rn.jones" and when(listed[0]["snoozed_at"]) == at(1)


def test_outcome_records_its_recorder_and_the_alarm_it_resolved(c):
    a = post(c, "o1", 0)["alarm_id"]
    post(c, "o1", 4)
    r = c.post("/patients/o1/outcome", json={"outcome": "sepsis", "onset_time": iso(at(3)), "recorded_by": "dr.house"},
               headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    rows = audit(c, patient_id="o1")
    assert [e["action"] for e in rows] == ["outcome", "alarm_resolved_by_outcome", "alarm_raised"]
    outcome, resolved, _ = rows
    assert outcome["actor"] == actor_of(c, "clinician", "dr.house") and when(outcome["at"]) == at(4)
    assert outcome["details"]["outcome"] == "sepsis" and when(outcome["details"]["onset_time"]) == at(3)
    assert outcome["details"]["resolved_alarms"] == [a]
    assert resolved["alarm_id"] == a and resolved["note"] == "outcome recorded: sepsis"
    # the same outcome again changes nothing, so nothing new is audited
    assert c.post("/patients/o1/outcome", json={"outcome": "sepsis", "onset_time": iso(at(3))},
                  headers=hdr("clinician")).status_code == 200
    assert len(audit(c, patient_id="o1")) == 3


def test_supersession_is_audited_as_the_systems(c):
    a = post(c, "s1", 0)["alarm_id"]
    assert c.post(f"/alarms/{a}/snooze", json={"by": "rn", "minutes": 60}, headers=hdr("clinician")).status_code == 200
    b = post(c, "s1", 1)["alarm_id"]
    [superseded] = audit(c, alarm_id=a, action="alarm_superseded")
    assert superseded["actor"] == SYSTEM and superseded["details"] == {"superseded_by": b}
    assert when(superseded["at"]) == at(1) and superseded["note"] == f"superseded by alarm {b}"


def test_correction_is_audited_with_the_admin_key(c):
    post(c, "k1", 0)
    post(c, "k1", 1)
    r = c.delete("/patients/k1/observations", params={"after": iso(at(0)), "by": "it.admin", "reason": "clock skew"},
                 headers=hdr("admin"))
    assert r.status_code == 200, r.text
    [row] = audit(c, patient_id="k1", action="correction")
    assert row["actor"] == actor_of(c, "admin", "it.admin") and row["note"] == "clock skew"
    assert row["details"]["correction_id"] == r.json()["correction_id"]
    assert row["details"]["removed_observations"] == 1 and when(row["details"]["after"]) == at(0)


def test_a_refused_action_leaves_no_audit_row(c):
    a = post(c, "r1", 0)["alarm_id"]
    assert c.post(f"/alarms/{a}/resolve", json={"by": "rn"}, headers=hdr("clinician")).status_code == 200
    before = audit(c, alarm_id=a)
    for action, body in (("ack", {"by": "rn", "reason": "confirmed"}), ("snooze", {"by": "rn", "minutes": 5}),
                         ("resolve", {"by": "rn"})):
        assert c.post(f"/alarms/{a}/{action}", json=body, headers=hdr("clinician")).status_code == 409
    assert c.post(f"/alarms/{a}/ack", json={"by": "rn", "reason": "confirmed"}, headers=hdr("viewer")).status_code == 403
    assert audit(c, alarm_id=a) == before


def test_an_action_and_its_audit_row_commit_together(c):
    """If the audit row cannot be written the action is not applied either."""
    a = post(c, "t1", 0)["alarm_id"]
    engine = c.app.state.services.engine

    def refuse_audit(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
            raise RuntimeError("audit store unavailable")

    event.listen(engine, "before_cursor_execute", refuse_audit)
    try:
        r = c.post(f"/alarms/{a}/ack", json={"by": "rn", "reason": "confirmed"}, headers=hdr("clinician"))
    finally:
        event.remove(engine, "before_cursor_execute", refuse_audit)
    assert r.status_code == 500
    [alarm] = c.get("/alarms", params={"patient_id": "t1"}, headers=hdr("viewer")).json()
    assert alarm["state"] == "open" and alarm["acknowledged_by"] is None


def test_audit_filters_and_roles(c):
    a = post(c, "f1", 0)["alarm_id"]
    b = post(c, "f2", 2)["alarm_id"]
    for alarm_id in (a, b):
        assert c.post(f"/alarms/{alarm_id}/ack", json={"by": "rn", "reason": "false_alarm"},
                      headers=hdr("clinician")).status_code == 200
    assert {e["patient_id"] for e in audit(c, patient_id="f1")} == {"f1"}
    assert [e["action"] for e in audit(c, alarm_id=b)] == ["acknowledge", "alarm_raised"]
    # since: by the action's time on the service clock (f1's ack came when the feed was at T0 + 2 h)
    assert [(e["alarm_id"], e["action"]) for e in audit(c, since=iso(at(1)))] == [
        (b, "acknowledge"), (a, "acknowledge"), (b, "alarm_raised")]
    assert len(audit(c, limit=1)) == 1 and audit(c, limit=1)[0]["alarm_id"] == b
    assert c.get("/audit", headers=hdr("ingest")).status_code == 403
    assert c.get("/audit").status_code == 401
    bad = c.get("/audit", params={"alarm_id": 0}, headers=hdr("viewer"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "alarm_id"
