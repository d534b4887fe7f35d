"""An acknowledged alarm no longer silences a patient for good: the unit's alarm policy
(models.alarm_policy, the table's `alarm_policy` at the unit's operating point) sends a new alarm,
linked to the one it replaces, when the risk is still above the threshold after the lockout or
rose by the policy's factor over the acknowledged risk. The service's alarms are the events the
offline replay of its stored risks and actions gives.

The fixture model's risks for a steady stream (Temp 35 every hour) are computed independently
(`reference_risks`) and each test's threshold and rise factor are picked from them."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from models.alarm_figures import Stay, figures
from models.alarm_policy import ACKNOWLEDGE, LOCKOUT_ENDED, RAISED, RISK_DOUBLED, Action, AlarmPolicy, alarm_events
from models.testing import fixture_operating_points, write_fixture_model
from tests.service.conftest import T0, client_for, hdr, iso, obs, reference_risks

HOURS = 30
ROWS = [(float(h), {"Temp": 35.0}) for h in range(HOURS)]
RISKS = reference_risks(ROWS)  # 0.42 at hour 0, rising to 0.63 at hour 12, then falling
LOW = 0.40                     # below every risk of the stream: each hour is at or above it
CARD = 0.99                    # the card's threshold, which the table's default point replaces


def write_model(root, threshold: float, rise_factor: float | None, lockout_hours: float | None):
    points = fixture_operating_points(threshold, "sepsis-cfc", "1")
    points["default_point"] = "utility_optimum"  # the point at `threshold`
    points["alarm_policy"] = {"rise_factor": rise_factor, "lockout_hours": lockout_hours, "tiers": [],
                              "chosen_by": "this test"}
    write_fixture_model(root / "sepsis-cfc" / "1", threshold=CARD, operating_points=points)
    return root


@pytest.fixture
def serve(db_url, tmp_path):
    """serve(threshold, rise_factor, lockout_hours) -> a client whose units alarm under that policy."""
    opened = []

    def start(threshold: float, rise_factor: float | None = None, lockout_hours: float | None = 12.0):
        root = write_model(tmp_path / f"models{len(opened)}", threshold, rise_factor, lockout_hours)
        cm = client_for(db_url, root, clock="simulated")
        opened.append(cm)
        return cm.__enter__()

    yield start
    for cm in opened:
        cm.__exit__(None, None, None)


def post(c, pid: str, hour: int) -> dict:
    r = c.post("/predict", json=obs(pid, float(hour), **ROWS[hour][1]), headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["risk"] == pytest.approx(RISKS[hour], abs=1e-5)
    return body


def ack(c, alarm_id: int) -> dict:
    r = c.post(f"/alarms/{alarm_id}/ack", json={"by": "rn.kim", "reason": "false_alarm"}, headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    return r.json()


def alarms_of(c, pid: str) -> dict[int, dict]:
    r = c.get("/alarms", params={"patient_id": pid}, headers=hdr("viewer"))
    assert r.status_code == 200, r.text
    return {a["id"]: a for a in r.json()}


def audit(c, **params) -> list[dict]:
    r = c.get("/audit", params=params, headers=hdr("viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def test_acknowledged_alarm_is_sent_again_when_the_risk_is_still_high_after_the_lockout(serve):
    c = serve(LOW, rise_factor=None, lockout_hours=12.0)
    first = post(c, "p1", 0)
    assert (first["alarm_kind"], first["threshold"]) == (RAISED, LOW)  # the table's default point, not the card's
    ack(c, first["alarm_id"])
    assert [post(c, "p1", h)["alarm_id"] for h in range(1, 12)] == [None] * 11  # inside the lockout
    again = post(c, "p1", 12)
    assert again["alarm_id"] is not None and again["alarm_kind"] == LOCKOUT_ENDED
    alarms = alarms_of(c, "p1")
    new, old = alarms[again["alarm_id"]], alarms[first["alarm_id"]]
    assert (new["kind"], new["previous_alarm_id"], new["state"]) == (LOCKOUT_ENDED, first["alarm_id"], "open")
    assert (old["state"], old["resolved_by"], old["resolve_note"]) == \
        ("resolved", "system", f"superseded by alarm {again['alarm_id']}")
    [realerted] = audit(c, alarm_id=again["alarm_id"], action="alarm_realerted")
    assert realerted["details"]["kind"] == LOCKOUT_ENDED
    assert realerted["details"]["previous_alarm_id"] == first["alarm_id"]
    assert audit(c, alarm_id=first["alarm_id"], action="alarm_superseded")
    card = next(k for k in c.get("/alarms/queue", headers=hdr("viewer")).json()["cards"] if k["patient_id"] == "p1")
    assert (card["alarm_id"], card["kind"], card["previous_alarm_id"]) == \
        (again["alarm_id"], LOCKOUT_ENDED, first["alarm_id"])
    metrics = c.get("/metrics", headers=hdr("admin")).text
    assert 'sepsis_alarm_events_total{event="raised"} 1.0' in metrics
    assert 'sepsis_alarm_events_total{event="realerted"} 1.0' in metrics


def test_a_rise_by_the_units_factor_breaks_through_the_lockout(serve):
    factor = 1.3
    doubled = next(h for h, r in enumerate(RISKS) if r >= factor * RISKS[0])
    assert 1 < doubled < 12  # the stream rises past 1.3 x its first risk inside the lockout
    c = serve(LOW, rise_factor=factor, lockout_hours=12.0)
    first = post(c, "p2", 0)
    ack(c, first["alarm_id"])
    got = [post(c, "p2", h) for h in range(1, doubled + 1)]
    assert [g["alarm_id"] for g in got[:-1]] == [None] * (doubled - 1)
    assert got[-1]["alarm_id"] is not None and got[-1]["alarm_kind"] == RISK_DOUBLED
    assert alarms_of(c, "p2")[got[-1]["alarm_id"]]["previous_alarm_id"] == first["alarm_id"]


def test_no_new_alarm_when_the_risk_is_below_the_threshold_after_the_lockout(serve):
    start = 10
    threshold = RISKS[start] - 1e-4  # the service's float32 risk may sit just below the reference
    above = [h for h, r in enumerate(RISKS) if r >= threshold]
    assert above[0] == start and RISKS[start + 12] < threshold  # quiet again when the lockout ends
    c = serve(threshold, rise_factor=None, lockout_hours=12.0)
    assert [post(c, "p3", h)["alarm_id"] for h in range(start)] == [None] * start
    first = post(c, "p3", start)
    assert first["alarm_kind"] == RAISED
    ack(c, first["alarm_id"])
    assert [post(c, "p3", h)["alarm_id"] for h in range(start + 1, HOURS)] == [None] * (HOURS - start - 1)
    assert list(alarms_of(c, "p3")) == [first["alarm_id"]]


def test_a_snooze_still_blocks_until_its_end(serve):
    c = serve(LOW, rise_factor=1.3, lockout_hours=12.0)
    first = post(c, "p4", 0)
    r = c.post(f"/alarms/{first['alarm_id']}/snooze", json={"by": "rn.kim", "minutes": 8 * 60}, headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    # the risk passes 1.3 x the snoozed one at hour 5: a snooze is the ward's, the policy waits for its end
    assert [post(c, "p4", h)["alarm_id"] for h in range(1, 8)] == [None] * 7
    after = post(c, "p4", 8)
    assert after["alarm_id"] is not None and after["alarm_kind"] == RAISED
    alarms = alarms_of(c, "p4")
    assert alarms[after["alarm_id"]]["previous_alarm_id"] == first["alarm_id"]
    assert alarms[first["alarm_id"]]["state"] == "resolved"


def test_a_recorded_outcome_still_stops_alarms(serve):
    c = serve(LOW, rise_factor=1.3, lockout_hours=12.0)
    first = post(c, "p5", 0)
    ack(c, first["alarm_id"])
    r = c.post("/patients/p5/outcome", json={"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=1))},
               headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    assert [post(c, "p5", h)["alarm_id"] for h in range(1, HOURS)] == [None] * (HOURS - 1)
    assert [a["state"] for a in alarms_of(c, "p5").values()] == ["resolved"]


def test_operating_points_show_each_units_policy_and_the_default_point(serve):
    c = serve(LOW, rise_factor=1.5, lockout_hours=6.0)
    body = c.get("/operating-points", headers=hdr("viewer")).json()
    assert body["default_point"] == "utility_optimum" and body["card_threshold"] == CARD
    for u in body["units"]:
        assert (u["point_id"], u["threshold"], u["chosen_by"]) == ("utility_optimum", LOW, None)
        policy = u["alarm_policy"]
        assert (policy["threshold"], policy["rise_factor"], policy["lockout_hours"], policy["tiers"]) == \
            (LOW, 1.5, 6.0, [])


def test_the_service_sends_the_events_the_offline_replay_of_its_risks_and_actions_gives(serve):
    """Live equals offline: the stored (time, risk) steps and acknowledgements, replayed through
    models.alarm_policy.alarm_events, give exactly the alarms the service raised, with their kinds."""
    policy = AlarmPolicy(LOW, rise_factor=1.3, lockout_hours=6.0)
    c = serve(policy.threshold, rise_factor=policy.rise_factor, lockout_hours=policy.lockout_hours)
    ack_after = {0, 6, 20}  # acknowledge whatever is open after these hours; leave the rest unanswered
    for h in range(HOURS):
        post(c, "p6", h)
        if h in ack_after:
            open_ = [a for a in alarms_of(c, "p6").values() if a["state"] == "open"]
            assert len(open_) == 1, (h, open_)
            ack(c, open_[0]["id"])
    stored = alarms_of(c, "p6")
    timeline = c.get("/patients/p6", headers=hdr("viewer")).json()["timeline"]
    hours = lambda ts: (dt.datetime.fromisoformat(ts.replace("Z", "+00:00")) - T0).total_seconds() / 3600  # noqa: E731
    actions = [Action(hours(a["acknowledged_at"]), ACKNOWLEDGE) for a in stored.values() if a["acknowledged_at"]]
    replayed = alarm_events(policy, [hours(e["timestamp"]) for e in timeline], [e["risk"] for e in timeline], actions)
    live = sorted((hours(a["raised_at"]), a["kind"]) for a in stored.values())
    assert live == [(e.time, e.kind) for e in replayed]
    kinds = {k for _, k in live}
    assert {RAISED, RISK_DOUBLED, LOCKOUT_ENDED} <= kinds, json.dumps(live)  # the scenario exercises each rule
    # and GET /stats is models.alarm_figures.figures of the same events
    onset = 20.0
    r = c.post("/patients/p6/outcome", json={"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=onset))},
               headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    stats = c.get("/stats", headers=hdr("viewer")).json()
    offline = figures([Stay(hours=float(HOURS), alarms=tuple(replayed), septic=True, onset=onset)])
    assert stats["alarms"] == offline.alarms and stats["alarms_by_kind"] == offline.alarms_by_kind
    for live_key, offline_value in (("alarms_per_patient_day", offline.alarms_per_patient_day),
                                    ("caught_in_window", offline.caught_in_window),
                                    ("median_lead_time_hours", offline.median_lead_time_in_window_hours),
                                    ("alarmed_before_onset", offline.sensitivity),
                                    ("median_lead_time_before_onset_hours", offline.median_lead_time_hours),
                                    ("positive_predictive_value", offline.ppv_alarms)):
        assert stats[live_key] == pytest.approx(offline_value), live_key
