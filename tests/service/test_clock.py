"""One clock: actions are stamped on the service clock, which is the wall clock by
default or the feed's own time (SEPSIS_CLOCK=simulated), so a snooze holds for its minutes of the
clock the observations carry and no action is stamped before the alarm it acts on."""
from __future__ import annotations

import datetime as dt

import pytest

from service.clock import ServiceClock
from tests.service.conftest import T0, client_for, hdr, iso, make_settings

UTC = dt.timezone.utc


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def post(c, patient, t: dt.datetime, **vitals):
    r = c.post("/predict", json={"patient_id": patient, "timestamp": iso(t), "vitals": vitals or {"HR": 90.0}},
               headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    return r.json()


def act(c, alarm_id, action, **body):
    r = c.post(f"/alarms/{alarm_id}/{action}", json={"by": "rn.jones", **body}, headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    return r.json()


def when(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def simulated(db_url, models_root):
    """Every observation alarms (threshold 0); actions take the feed's time."""
    with client_for(db_url, models_root, model="always", clock="simulated") as c:
        yield c


def test_snooze_holds_on_the_feeds_clock_with_a_fast_feed(simulated):
    c = simulated
    first = post(c, "s1", at(0))["alarm_id"]
    post(c, "other", at(1))  # the feed's time is now T0 + 1 h (any patient's latest observation)
    snoozed = act(c, first, "snooze", minutes=60)
    # stamped on the feed's clock, not the wall clock (T0 is in 2024)
    assert when(snoozed["snoozed_at"]) == at(1) and when(snoozed["snoozed_until"]) == at(2)
    # a feed far faster than real time: the next hours arrive within milliseconds of wall time
    for hours in (1.25, 1.5, 1.75):
        held = post(c, "s1", at(hours))
        assert held["alarm"] and held["alarm_id"] is None, hours  # still snoozed: no second alarm
    ended = post(c, "s1", at(2))  # the snooze's end, on the same clock
    assert ended["alarm_id"] is not None
    old = c.get("/alarms", params={"patient_id": "s1"}, headers=hdr("viewer")).json()[-1]
    assert old["id"] == first and old["state"] == "resolved"
    assert old["resolve_note"] == f"superseded by alarm {ended['alarm_id']}"
    assert when(old["resolved_at"]) == at(2)  # the new episode's time, not the wall clock's


def test_on_the_wall_clock_a_snooze_outlasts_a_fast_feed_of_past_data(db_url, models_root):
    """The default: a snooze is wall minutes, so data from the past posted fast stays snoozed."""
    with client_for(db_url, models_root, model="always") as c:
        first = post(c, "w1", at(0))["alarm_id"]
        before = dt.datetime.now(UTC)
        snoozed = act(c, first, "snooze", minutes=60)
        assert before <= when(snoozed["snoozed_at"]) <= dt.datetime.now(UTC)
        assert when(snoozed["snoozed_until"]) - when(snoozed["snoozed_at"]) == dt.timedelta(minutes=60)
        assert post(c, "w1", at(5))["alarm_id"] is None


@pytest.mark.parametrize("mode", ["wall", "simulated"])
def test_no_action_is_stamped_before_its_alarm(db_url, models_root, mode):
    """An observation stamped ahead of the wall clock (within the accepted margin) raises an alarm
    later than 'now': every action on it is stamped at its raise time at the earliest."""
    with client_for(db_url, models_root, model="always", clock=mode) as c:
        ahead = (dt.datetime.now(UTC) + dt.timedelta(minutes=30)).replace(microsecond=0)
        behind = ahead - dt.timedelta(hours=2)
        post(c, "early", behind)  # in simulated mode the clock follows the feed's latest time
        a1 = post(c, "n1", ahead)["alarm_id"]
        a2 = post(c, "n2", ahead)["alarm_id"]
        a3 = post(c, "n3", ahead)["alarm_id"]
        a4 = post(c, "n4", ahead)["alarm_id"]
        got = [act(c, a1, "ack", reason="false_alarm"), act(c, a2, "snooze", minutes=5),
               act(c, a3, "resolve", note="reviewed")]
        stamps = [when(got[0]["acknowledged_at"]), when(got[1]["snoozed_at"]), when(got[2]["resolved_at"])]
        assert all(s >= ahead for s in stamps), stamps
        assert when(got[1]["snoozed_until"]) >= ahead + dt.timedelta(minutes=5)
        r = c.post("/patients/n4/outcome", json={"outcome": "no_sepsis", "recorded_by": "dr.who"},
                   headers=hdr("clinician"))
        assert r.status_code == 200, r.text
        [a] = c.get("/alarms", params={"patient_id": "n4"}, headers=hdr("viewer")).json()
        assert a["id"] == a4 and when(a["resolved_at"]) >= ahead
        for alarm_id in (a1, a2, a3, a4):
            for event in c.get("/audit", params={"alarm_id": alarm_id}, headers=hdr("viewer")).json():
                assert when(event["at"]) >= ahead, event


def test_clock_endpoint_and_ready_show_the_mode(db_url, models_root):
    with client_for(db_url, models_root, clock="simulated") as c:
        assert c.get("/ready").json()["clock"] == "simulated"
        empty = c.get("/clock", headers=hdr("viewer")).json()
        assert empty["mode"] == "simulated" and empty["latest_observation"] is None
        post(c, "c1", at(3))
        post(c, "c2", at(1))
        now = c.get("/clock", headers=hdr("viewer")).json()
        assert when(now["now"]) == at(3) == when(now["latest_observation"])
        assert c.get("/clock", headers=hdr("ingest")).status_code == 403
    with client_for(db_url, models_root) as c:
        assert c.get("/ready").json()["clock"] == "wall"
        post(c, "c1", at(3))
        before = dt.datetime.now(UTC)
        now = c.get("/clock", headers=hdr("viewer")).json()
        assert now["mode"] == "wall" and when(now["now"]) >= before and when(now["latest_observation"]) == at(3)


def test_an_unknown_clock_is_refused_at_start_up(sqlite_url, models_root):
    with pytest.raises(ValueError, match="SEPSIS_CLOCK"):
        ServiceClock("feed")
    from service.services import Services
    with pytest.raises(ValueError, match="SEPSIS_CLOCK"):
        Services(make_settings(sqlite_url, models_root, clock="feed"))
