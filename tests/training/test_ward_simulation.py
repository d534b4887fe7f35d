"""The ward simulated offline on constructed stays, and the rule that chooses the policy."""
import numpy as np
import pytest

from models.alarm_policy import DISMISS, LOCKOUT_ENDED, RAISED, RISK_DOUBLED, SILENT_FOR_GOOD, AlarmPolicy
from training.sepsis import metrics as M
from training.sepsis import ward_simulation as W


def septic_labels(hours: int, first_label: int) -> np.ndarray:
    lab = np.zeros(hours, np.int8)
    lab[first_label:] = 1
    return lab


# 60 hours, first label at 40: onset 46, window [34, 49]
LAB = septic_labels(60, 40)


def risks(base: float, **spans) -> np.ndarray:
    """`base` everywhere, then each span "a_b" (hours a..b-1) set to its value."""
    r = np.full(60, base)
    for span, value in spans.items():
        a, b = (int(x) for x in span[1:].split("_"))
        r[a:b] = value
    return r


# an early alarm at hour 5 (0.15), quiet, then the risk climbs to 0.35 inside the window
EARLY_THEN_RISING = risks(0.05, h5_6=0.15, h36_46=0.35)


def test_onset_is_the_first_label_plus_six_hours():
    assert W.onset_hour(LAB) == 46.0
    assert W.onset_hour(np.zeros(5, np.int8)) is None


def test_silent_for_good_never_comes_back_and_the_re_alert_policy_does():
    silent = W.hourly_stay(LAB, EARLY_THEN_RISING, AlarmPolicy(0.1, **SILENT_FOR_GOOD), "dismiss_early")
    assert [(a.time, a.kind, a.closed_by) for a in silent.alarms] == [(5, RAISED, DISMISS)]
    policy = AlarmPolicy(0.1, rise_factor=2.0, lockout_hours=48)
    back = W.hourly_stay(LAB, EARLY_THEN_RISING, policy, "dismiss_early")
    assert [(a.time, a.kind) for a in back.alarms] == [(5, RAISED), (36, RISK_DOUBLED)]
    # a shorter lockout has ended (below the threshold) by then: the rise is a plain new alarm
    short = W.hourly_stay(LAB, EARLY_THEN_RISING, AlarmPolicy(0.1, lockout_hours=12), "dismiss_early")
    assert [(a.time, a.kind) for a in short.alarms] == [(5, RAISED), (36, RAISED)]
    assert W.dismissed_early([LAB], [EARLY_THEN_RISING], AlarmPolicy(0.1, **SILENT_FOR_GOOD)).as_dict() == {
        "septic_stays": 1, "dismissed_early": 1, "rose": 1, "new_alarm_in_window": 0, "alarm_open_in_window": 0,
        "share_new_alarm": 0.0, "share_open": 0.0}
    assert W.dismissed_early([LAB], [EARLY_THEN_RISING], policy).share_new_alarm == 1.0


def test_a_re_alert_before_the_window_left_open_counts_as_open_not_as_new():
    # 0.12 from hour 5 to 40: dismissed at 5, back at 17 when the lockout ends, left open (this
    # ward acts only on the first alarm) until the risk falls at 42; it reached 2 x 0.12 in the window
    r = risks(0.05, h5_40=0.12, h40_42=0.3)
    policy = AlarmPolicy(0.1, rise_factor=None, lockout_hours=24)
    stay = W.hourly_stay(LAB, r, policy, "dismiss_early")
    assert [(a.time, a.kind) for a in stay.alarms] == [(5, RAISED), (29, LOCKOUT_ENDED)]
    d = W.dismissed_early([LAB], [r], policy)
    assert (d.rose, d.new_alarm_in_window, d.alarm_open_in_window) == (1, 0, 1)
    # a 12-h lockout sends the unanswered alarm again at 29 and at 41, inside the window
    policy = AlarmPolicy(0.1, rise_factor=None, lockout_hours=12)
    stay = W.hourly_stay(LAB, r, policy, "dismiss_early")
    assert [(a.time, a.kind) for a in stay.alarms] == [(5, RAISED), (17, LOCKOUT_ENDED), (29, LOCKOUT_ENDED),
                                                        (41, LOCKOUT_ENDED)]
    d = W.dismissed_early([LAB], [r], policy)
    assert (d.rose, d.new_alarm_in_window, d.alarm_open_in_window) == (1, 1, 1)
    # when the ward acknowledges every alarm, the lockout brings one back inside the window
    acked = W.hourly_stay(LAB, r, policy, "acknowledge_all")
    assert [a.time for a in acked.alarms] == [5, 17, 29, 41]
    assert W.dismissed_early([LAB], [r], policy, scenario="acknowledge_all").share_new_alarm == 1.0


def test_an_alarm_close_to_onset_is_not_dismissed_and_a_non_septic_first_alarm_is():
    late = W.hourly_stay(LAB, risks(0.05, h40_44=0.3), AlarmPolicy(0.1), "dismiss_early")
    assert late.alarms[0].closed_by == "resolved"       # at 40: 6 h before onset, left open
    quiet = W.hourly_stay(np.zeros(60, np.int8), risks(0.05, h3_5=0.3, h20_22=0.3), AlarmPolicy(0.1), "dismiss_early")
    assert [a.closed_by for a in quiet.alarms] == [DISMISS, "resolved"]
    with pytest.raises(ValueError, match="scenario"):
        W.hourly_stay(LAB, EARLY_THEN_RISING, AlarmPolicy(0.1), "snooze_all")


def test_with_nobody_acting_the_simulated_ward_counts_the_episodes_of_the_metrics():
    rng = np.random.default_rng(3)
    labels = [septic_labels(50, 30), np.zeros(40, np.int8), septic_labels(70, 20)]
    probs = [rng.random(len(lab)) * 0.3 for lab in labels]
    for threshold in (0.1, 0.2, 0.28):
        f = W.ward_figures(labels, probs, AlarmPolicy(threshold, **SILENT_FOR_GOOD), "none")
        m = M.alarm_metrics(labels, probs, threshold)
        alarm = np.concatenate(probs) >= threshold
        assert f.alarms == m["n_alarm_episodes"]
        assert f.red_share == pytest.approx(alarm.mean())


def _row(apd, share, rise=2.0, lockout=12.0, threshold=0.05):
    return {"rise_factor": rise, "lockout_hours": lockout, "threshold": threshold,
            "acknowledge_all": {"alarms_per_patient_day": apd, "dismissed_early": {"share_new_alarm": share}}}


def test_the_policy_chosen_is_the_cheapest_that_reaches_the_bar():
    rows = [_row(0.4, 0.85, lockout=24), _row(0.5, 0.95, lockout=12), _row(0.7, 1.0, lockout=6),
            _row(0.3, None, lockout=18)]   # no stay to judge it by: not chosen
    assert W.choose(rows)["lockout_hours"] == 12
    assert W.choose(rows, bar=0.99)["lockout_hours"] == 6
    assert W.choose([_row(0.4, 0.5)]) is None


def test_the_highest_threshold_catching_the_target_is_on_the_boundary():
    # three septic stays whose window risks are 0.2, 0.3 and 0.4: catching 2 of 3 needs <= 0.3
    labels = [septic_labels(60, 40)] * 3
    probs = [risks(0.01, h36_40=v) for v in (0.2, 0.3, 0.4)]
    levels = np.unique(np.concatenate(probs))
    settings = {"rise_factor": 2.0, "lockout_hours": 12.0}
    assert W.highest_threshold_catching(labels, probs, levels, settings, target=0.6) == 0.3
    assert W.highest_threshold_catching(labels, probs, levels, settings, target=1.0) == 0.2
    assert W.highest_threshold_catching(labels, probs, levels[levels > 0.35], settings, target=0.6) is None
