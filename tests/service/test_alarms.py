"""Alarm lifecycle, suppression while one is active, and alarm statistics once outcomes are known."""
from __future__ import annotations

import datetime as dt

import pytest

from tests.service.conftest import T0, client_for, hdr, iso, obs


@pytest.fixture
def aclient(db_url, models_root):
    """A model whose threshold is 0: every observation crosses it."""
    with client_for(db_url, models_root, model="always") as c:
        yield c


def post(c, patient, hour, **vitals):
    r = c.post("/predict", json=obs(patient, hour, HR=90, **vitals), headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    return r.json()


def test_one_alarm_while_open_or_acknowledged_then_new_after_resolve(aclient):
    c = aclient
    first = post(c, "a1", 0)
    assert first["alarm"] and first["alarm_id"] is not None
    assert post(c, "a1", 1)["alarm_id"] is None          # open: suppressed
    alarm_id = first["alarm_id"]
    r = c.post(f"/alarms/{alarm_id}/ack", json={"by": "dr.x", "reason": "confirmed"}, headers=hdr("clinician"))
    assert r.status_code == 200 and r.json()["state"] == "acknowledged" and r.json()["acknowledged_by"] == "dr.x"
    assert post(c, "a1", 2)["alarm_id"] is None          # acknowledged: still suppressed
    r = c.post(f"/alarms/{alarm_id}/resolve", json={"by": "dr.x"}, headers=hdr("clinician"))
    assert r.json()["state"] == "resolved"
    again = post(c, "a1", 3)
    assert again["alarm_id"] not in (None, alarm_id)
    # invalid transitions are 409 with the reason; unknown alarms 404
    r = c.post(f"/alarms/{alarm_id}/ack", json={"by": "dr.y", "reason": "false_alarm"}, headers=hdr("clinician"))
    assert r.status_code == 409 and "resolved" in r.json()["detail"]
    assert c.post("/alarms/999999/ack", json={"by": "x", "reason": "confirmed"}, headers=hdr("clinician")).status_code == 404
    r = c.post(f"/alarms/{again['alarm_id']}/ack", json={"by": "x", "reason": "maybe"}, headers=hdr("clinician"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"
    timeline = c.get("/patients/a1", headers=hdr("viewer")).json()
    assert [e["alarm_id"] for e in timeline["timeline"]] == [alarm_id, None, None, again["alarm_id"]]
    assert timeline["active_alarm_id"] == again["alarm_id"]


def test_snooze_suppresses_until_it_ends(aclient):
    c = aclient
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    body = lambda t: {"patient_id": "s1", "timestamp": iso(t), "vitals": {"HR": 90}}  # noqa: E731
    first = c.post("/predict", json=body(now - dt.timedelta(hours=1)), headers=hdr("ingest")).json()
    # the snooze runs from the service's clock; observations stay within the 1 h future margin
    r = c.post(f"/alarms/{first['alarm_id']}/snooze", json={"by": "rn", "minutes": 20}, headers=hdr("clinician"))
    assert r.status_code == 200 and r.json()["state"] == "snoozed"
    assert c.post("/predict", json=body(now + dt.timedelta(minutes=10)), headers=hdr("ingest")).json()["alarm_id"] is None
    later = c.post("/predict", json=body(now + dt.timedelta(minutes=40)), headers=hdr("ingest")).json()
    assert later["alarm_id"] is not None and later["alarm_id"] != first["alarm_id"]


def test_alarm_filters(aclient):
    c = aclient
    a = post(c, "f1", 0)["alarm_id"]
    b = post(c, "f2", 5)["alarm_id"]
    c.post(f"/alarms/{a}/ack", json={"by": "x", "reason": "already_treated"}, headers=hdr("clinician"))
    ids = lambda **q: [x["id"] for x in c.get("/alarms", params=q, headers=hdr("viewer")).json()]  # noqa: E731
    assert ids(state="open") == [b]
    assert ids(state="acknowledged") == [a]
    assert ids(patient_id="f2") == [b]
    assert ids(since=iso(T0 + dt.timedelta(hours=1))) == [b]
    assert sorted(ids(state="active")) == sorted([a, b])
    r = c.get("/alarms", params={"since": "2024-03-01T08:00:00"}, headers=hdr("viewer"))
    assert r.status_code == 422 and "time zone" in r.json()["detail"]


def test_stats_after_outcomes(aclient):
    c = aclient
    # septic patient: alarm at hour 0, onset at hour 8 -> true alarm, lead time 8 h
    post(c, "t1", 0)
    post(c, "t1", 11)  # still inside the 12 h lockout: the unanswered alarm is not sent again
    # septic patient alarmed 20 h before onset -> false (too early)
    post(c, "t2", 0)
    # discharged without sepsis -> its alarm is false; n1 had no alarm... it always alarms, so use two stays
    post(c, "n1", 0)
    post(c, "n1", 11)
    post(c, "u1", 0)  # no outcome yet: unknown, excluded from PPV
    ok = lambda pid, body: c.post(f"/patients/{pid}/outcome", json=body, headers=hdr("clinician"))  # noqa: E731
    assert ok("t1", {"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=8))}).status_code == 200
    assert ok("t2", {"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=20))}).status_code == 200
    assert ok("n1", {"outcome": "no_sepsis", "discharged_at": iso(T0 + dt.timedelta(hours=12))}).status_code == 200
    r = ok("n1", {"outcome": "sepsis", "onset_time": iso(T0)})
    assert r.status_code == 409  # a recorded outcome cannot be silently rewritten
    s = c.get("/stats", headers=hdr("viewer")).json()
    assert s["alarms"] == 4 and s["patients"] == 4
    assert s["patient_days"] == pytest.approx((12 + 1 + 12 + 1) / 24)
    assert s["alarms_per_patient_day"] == pytest.approx(4 / ((12 + 1 + 12 + 1) / 24))
    assert (s["true_alarms"], s["false_alarms"], s["alarms_with_outcome"]) == (1, 2, 3)
    assert s["positive_predictive_value"] == pytest.approx(1 / 3)
    assert s["false_positive_rate"] == 1.0  # the one non-septic patient was alarmed
    # caught in time (models.alarm_figures): t1 by its alarm inside the window, 8 h before onset; t2
    # by its alarm of hour 0, nobody having acted on it by the window's start (hour 8): 20 h
    assert s["septic_patients_alarmed_in_time"] == 2 and s["caught_in_window"] == 1.0
    assert s["median_lead_time_hours"] == pytest.approx(14.0)
    assert s["alarmed_before_onset"] == 1.0 and s["median_lead_time_before_onset_hours"] == pytest.approx(14.0)
    assert s["ppv_per_stay"] == pytest.approx(2 / 3)  # t1, t2 septic; n1 not; u1 has no outcome
    assert s["alarms_by_kind"]["raised"] == 4 and sum(s["alarms_by_kind"].values()) == 4
    verdicts = {a["patient_id"]: a["verdict"] for a in c.get("/alarms", headers=hdr("viewer")).json()}
    assert verdicts == {"t1": "true", "t2": "false", "n1": "false", "u1": "unknown"}
    later = c.get("/stats", params={"since": iso(T0 + dt.timedelta(hours=1))}, headers=hdr("viewer")).json()
    assert later["alarms"] == 0
    metrics = c.get("/metrics", headers=hdr("admin")).text
    assert 'sepsis_alarms_by_verdict{verdict="true"} 1.0' in metrics
    assert 'sepsis_alarm_events_total{event="raised"} 4.0' in metrics
