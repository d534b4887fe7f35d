"""The re-alert policy on constructed stays: hour t is time t, the threshold 0.1 unless said."""
import pytest

from models.alarm_policy import (ACKNOWLEDGE, DISMISS, LOCKOUT_ENDED, NEXT_TIER, RAISED, RISK_DOUBLED,
                                 SILENT_FOR_GOOD, Action, AlarmPolicy, alarm_events, simulate_ward)

HOURS = lambda risks: list(range(len(risks)))  # noqa: E731


def kinds(events):
    return [(e.time, e.kind) for e in events]


def test_a_dismissed_alarm_re_alerts_when_the_risk_doubles():
    # raised at 0.12 (hour 2), dismissed at once; the risk wanders, then doubles at hour 30
    risks = [0.02, 0.05, 0.12] + [0.15] * 20 + [0.2] * 7 + [0.24, 0.3]
    policy = AlarmPolicy(0.1, rise_factor=2.0, lockout_hours=None)
    events = alarm_events(policy, HOURS(risks), risks, [Action(2, DISMISS)])
    assert kinds(events) == [(2, RAISED), (30, RISK_DOUBLED)]
    assert events[0].closed_at == 2 and events[0].closed_by == DISMISS
    assert events[1].risk == 0.24 and events[1].closed_at is None  # open at the last step


def test_the_acknowledged_risk_is_the_latest_one_the_ward_saw():
    # raised at 0.11, acknowledged at hour 3 when the risk was 0.2: doubling means 0.4, not 0.22
    risks = [0.11, 0.15, 0.2, 0.2, 0.3, 0.39, 0.41]
    policy = AlarmPolicy(0.1, rise_factor=2.0, lockout_hours=None)
    events = alarm_events(policy, HOURS(risks), risks, [Action(3, ACKNOWLEDGE)])
    assert kinds(events) == [(0, RAISED), (6, RISK_DOUBLED)]


def test_an_alarm_still_above_threshold_when_its_lockout_ends_re_alerts():
    risks = [0.12] * 30
    policy = AlarmPolicy(0.1, rise_factor=2.0, lockout_hours=12)
    events = alarm_events(policy, HOURS(risks), risks, [Action(0, ACKNOWLEDGE), Action(12, ACKNOWLEDGE)])
    assert kinds(events) == [(0, RAISED), (12, LOCKOUT_ENDED), (24, LOCKOUT_ENDED)]
    assert [e.closed_by for e in events] == [ACKNOWLEDGE, ACKNOWLEDGE, None]


def test_the_lockout_ending_below_threshold_re_alerts_nothing_and_the_next_rise_is_a_new_alarm():
    risks = [0.12, 0.05, 0.05, 0.05, 0.05, 0.05, 0.12, 0.05, 0.05, 0.05, 0.11]
    policy = AlarmPolicy(0.1, rise_factor=2.0, lockout_hours=8)
    events = alarm_events(policy, HOURS(risks), risks, [Action(0, DISMISS)])
    # hour 6 (0.12) is inside the lockout and not double: silent; hour 8 ends the lockout below
    # the threshold; hour 10 rises again: a plain new alarm
    assert kinds(events) == [(0, RAISED), (10, RAISED)]


def test_no_re_alert_below_the_threshold_and_no_action_without_an_open_alarm():
    # acknowledged at 0.31; the lockout ends at hour 2 with the risk below the threshold, which
    # then stays below it however close it comes: silence
    policy = AlarmPolicy(0.3, rise_factor=1.5, lockout_hours=2, tiers=(0.6,))
    risks = [0.31, 0.2, 0.25, 0.29, 0.29, 0.29]
    events = alarm_events(policy, HOURS(risks), risks, [Action(0, ACKNOWLEDGE)])
    assert kinds(events) == [(0, RAISED)]
    # an acknowledgement after the alarm resolved changes nothing: the next rise is a new alarm
    risks = [0.31, 0.1, 0.1, 0.32]
    events = alarm_events(AlarmPolicy(0.3, rise_factor=2.0, lockout_hours=None), HOURS(risks), risks,
                          [Action(1, ACKNOWLEDGE)])
    assert kinds(events) == [(0, RAISED), (3, RAISED)]
    assert (events[0].closed_at, events[0].closed_by) == (1, "resolved")


def test_crossing_a_higher_tier_escalates_open_and_acknowledged_alarms():
    policy = AlarmPolicy(0.1, rise_factor=None, lockout_hours=None, tiers=(0.2, 0.4))
    risks = [0.12, 0.21, 0.25, 0.3, 0.45, 0.5]
    events = alarm_events(policy, HOURS(risks), risks)  # nobody acts
    assert kinds(events) == [(0, RAISED), (1, NEXT_TIER), (4, NEXT_TIER)]
    assert [e.tier for e in events] == [0, 1, 2]
    assert [e.closed_by for e in events] == ["escalated", "escalated", None]
    acked = alarm_events(policy, HOURS(risks), risks, [Action(2, ACKNOWLEDGE)])
    assert kinds(acked) == [(0, RAISED), (1, NEXT_TIER), (4, NEXT_TIER)]
    assert acked[1].closed_by == ACKNOWLEDGE


def test_silent_for_good_is_the_behaviour_that_was_replaced():
    risks = [0.12] + [0.3] * 40 + [0.9]
    events = alarm_events(AlarmPolicy(0.1, **SILENT_FOR_GOOD), HOURS(risks), risks, [Action(0, DISMISS)])
    assert kinds(events) == [(0, RAISED)]


def test_an_alarm_nobody_answers_is_sent_again_when_its_lockout_ends():
    risks = [0.12] * 30 + [0.05]
    events = alarm_events(AlarmPolicy(0.1, rise_factor=None, lockout_hours=12), HOURS(risks), risks)
    assert kinds(events) == [(0, RAISED), (12, LOCKOUT_ENDED), (24, LOCKOUT_ENDED)]
    assert [(e.closed_at, e.closed_by) for e in events] == [(12, "escalated"), (24, "escalated"), (30, "resolved")]
    # silent for good sends one alarm for the whole episode
    assert kinds(alarm_events(AlarmPolicy(0.1, **SILENT_FOR_GOOD), HOURS(risks), risks)) == [(0, RAISED)]


def test_without_ward_action_each_episode_shorter_than_the_lockout_is_one_alarm():
    risks = [0.2, 0.3, 0.05, 0.2, 0.05, 0.05, 0.5, 0.5]
    events = alarm_events(AlarmPolicy(0.1), HOURS(risks), risks)
    assert kinds(events) == [(0, RAISED), (3, RAISED), (6, RAISED)]
    assert [(e.closed_at, e.closed_by) for e in events] == [(2, "resolved"), (4, "resolved"), (None, None)]


def test_a_scripted_ward_and_the_replay_of_its_actions_give_the_same_events():
    risks = [0.05, 0.12, 0.13, 0.3, 0.1, 0.02, 0.15] + [0.15] * 14 + [0.6]
    policy = AlarmPolicy(0.1, rise_factor=2.0, lockout_hours=6, tiers=(0.5,))
    events, actions = simulate_ward(policy, HOURS(risks), risks, lambda e: ACKNOWLEDGE)
    assert len(actions) == len(events) >= 4
    assert alarm_events(policy, HOURS(risks), risks, actions) == events
    assert {e.kind for e in events} >= {RAISED, RISK_DOUBLED, LOCKOUT_ENDED, NEXT_TIER}


def test_an_action_at_the_same_time_as_a_step_applies_after_it():
    risks = [0.2, 0.2]
    events = alarm_events(AlarmPolicy(0.1), [0.0, 1.0], risks, [Action(0.0, ACKNOWLEDGE)])
    assert events[0].closed_at == 0.0 and events[0].closed_by == ACKNOWLEDGE


@pytest.mark.parametrize("kwargs, message", [
    (dict(threshold=-0.1), "threshold"),
    (dict(threshold=float("nan")), "threshold"),
    (dict(threshold=0.1, rise_factor=1.0), "rise_factor"),
    (dict(threshold=0.1, lockout_hours=0), "lockout_hours"),
    (dict(threshold=0.1, tiers=(0.3, 0.2)), "tiers"),
    (dict(threshold=0.1, tiers=(0.05,)), "tiers"),
])
def test_a_policy_that_makes_no_sense_is_refused_naming_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlarmPolicy(**kwargs)


def test_bad_steps_and_actions_are_refused():
    with pytest.raises(ValueError, match="time order"):
        alarm_events(AlarmPolicy(0.1), [0, 2, 1], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="not a risk"):
        alarm_events(AlarmPolicy(0.1), [0], [float("nan")])
    with pytest.raises(ValueError, match="2 times but 1 risks"):
        alarm_events(AlarmPolicy(0.1), [0, 1], [0.1])
    with pytest.raises(ValueError, match="action kind"):
        Action(0, "snooze")


def test_a_policy_says_what_it_does_in_words():
    assert AlarmPolicy(0.034, rise_factor=None, lockout_hours=12).describe() == (
        "alarm at risk >= 0.034; an acknowledged alarm re-alerts when the risk is still above the threshold "
        "12 h after the acknowledgement")
    assert AlarmPolicy(0.1, **SILENT_FOR_GOOD).describe() == "alarm at risk >= 0.1; an acknowledgement lasts the stay"
