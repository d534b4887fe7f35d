"""Sepsis metrics against cases worked out by hand from the challenge's definitions.

Shorthand: rel = t - t_sepsis, t_sepsis = first label-1 hour + 6. With the default parameters
  positive, rel <= -6 : max(rel/6 + 2, -0.05)      (0 at -12, 1/3 at -10, 1 at -6)
  positive, -6 < rel <= 3 : (3 - rel)/9            (8/9 at -5, 0 at +3)
  negative, -6 < rel <= 3 : -2 (rel + 6)/9         (-2/9 at -5, -2 at +3)
  rel > 3 : 0 either way; non-septic: positive -0.05, negative 0.
"""
import json

import numpy as np
import pytest

from training.sepsis import metrics as M


def septic(length: int, first_label: int) -> np.ndarray:
    lab = np.zeros(length, dtype=np.int8)
    lab[first_label:] = 1
    return lab


def ones_at(length: int, hours) -> np.ndarray:
    p = np.zeros(length)
    p[list(hours)] = 1
    return p


# A 30-hour stay labelled from hour 16: t_sepsis = 22, best window [10, 25] (rel -12..+3).
# best = u_pos over rel -12..-6 = (0+1+...+6)/6 = 3.5, plus rel -5..3 = (8+7+...+0)/9 = 4  -> 7.5
# inaction = u_neg over rel -5..3 = -2(1+...+9)/9 = -10                                 -> span 17.5
LONG = septic(30, 16)


def test_table_of_a_septic_stay_matches_the_hand_arithmetic():
    table = M.utility_table([LONG])
    assert table.best == pytest.approx(7.5)
    assert table.inaction == pytest.approx(-10.0)
    assert table.u_pos[22 - 10] == pytest.approx(1 / 3)      # -10/6 + 2
    assert table.u_pos[22 - 13] == pytest.approx(-0.05)      # -13/6 + 2 = -1/6, floored at -0.05
    assert table.u_pos[0] == pytest.approx(-0.05)
    assert table.u_pos[22 - 6] == pytest.approx(1.0)
    assert table.u_pos[22 + 1] == pytest.approx(2 / 9)       # (3 - 1)/9
    assert table.u_neg[22 + 1] == pytest.approx(-14 / 9)     # -2 * 7/9
    assert table.u_neg[22 + 3] == pytest.approx(-2.0)
    assert table.u_neg[22 - 6] == 0.0 and table.u_neg[0] == 0.0
    assert table.u_pos[26:].tolist() == [0.0] * 4 and table.u_neg[26:].tolist() == [0.0] * 4  # rel > 3


def test_perfect_and_silent_predictions_score_one_and_zero():
    assert M.normalized_utility([LONG], [ones_at(30, range(10, 26))]) == pytest.approx(1.0)
    assert M.normalized_utility([LONG], [np.zeros(30)]) == pytest.approx(0.0)


def test_single_alarm_ten_hours_before_onset_earns_one_third():
    # U = 1/3 (alarm at rel -10) + -10 (every missed hour after -6) -> (1/3 + 10 - 10)/17.5
    assert M.normalized_utility([LONG], [ones_at(30, [12])]) == pytest.approx((1 / 3) / 17.5)


def test_late_alarm_and_alarms_after_the_window():
    # alarm at rel +1: earns 2/9 instead of -14/9, a gain of 16/9
    assert M.normalized_utility([LONG], [ones_at(30, [23])]) == pytest.approx((16 / 9) / 17.5)
    # alarms at rel +4..+7 are not scored: same as silence
    assert M.normalized_utility([LONG], [ones_at(30, range(26, 30))]) == pytest.approx(0.0)
    # alarming every hour: hours 0-9 (rel -22..-13) at -0.05 each, then the best window, then
    # rel +4..+7 unscored: (7.5 - 0.5 + 10)/17.5
    assert M.normalized_utility([LONG], [np.ones(30)]) == pytest.approx(17 / 17.5)


def test_stay_shorter_than_the_window_with_onset_near_the_start():
    # labelled from hour 0 of 4: t_sepsis = 6, rows are rel -6..-3
    # u_pos = 1, 8/9, 7/9, 6/9 -> best 10/3; u_neg = 0, -2/9, -4/9, -6/9 -> inaction -4/3
    lab = septic(4, 0)
    table = M.utility_table([lab])
    assert table.best == pytest.approx(10 / 3) and table.inaction == pytest.approx(-4 / 3)
    assert M.normalized_utility([lab], [np.ones(4)]) == pytest.approx(1.0)
    # only hour 0: U = 1 - 2/9 - 4/9 - 6/9 = -1/3 -> (-1/3 + 4/3) / (10/3 + 4/3) = 3/14
    assert M.normalized_utility([lab], [ones_at(4, [0])]) == pytest.approx(3 / 14)


def test_non_septic_alarms_cost_005_each_in_the_pooled_sum():
    # perfect on LONG plus 20 false alarm hours on a non-septic stay: (7.5 - 1 + 10)/17.5
    labels = [LONG, np.zeros(20, np.int8)]
    preds = [ones_at(30, range(10, 26)), np.ones(20)]
    assert M.normalized_utility(labels, preds) == pytest.approx(16.5 / 17.5)
    assert M.normalized_utility(labels, [p.astype(bool) for p in preds]) == pytest.approx(16.5 / 17.5)


def reference_utility(labels, preds) -> float:
    """The definition read literally, one hour at a time, for cross-checking the vectorised code."""
    total = {"obs": 0.0, "best": 0.0, "none": 0.0}
    for lab, pred in zip(labels, preds):
        is_septic = bool(lab.any())
        ts = int(np.argmax(lab)) + 6 if is_septic else None
        best = np.zeros(len(lab))
        if is_septic:
            best[max(0, ts - 12): ts + 4] = 1
        for key, p in (("obs", pred), ("best", best), ("none", np.zeros(len(lab)))):
            for t in range(len(lab)):
                if not is_septic:
                    total[key] += -0.05 if p[t] else 0.0
                elif t <= ts + 3:
                    r = t - ts
                    if p[t]:
                        total[key] += max(r / 6 + 2, -0.05) if r <= -6 else (3 - r) / 9
                    elif r > -6:
                        total[key] += -2 * (r + 6) / 9
    return (total["obs"] - total["none"]) / (total["best"] - total["none"])


def random_cohort(seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    labels, probs = [], []
    for _ in range(n):
        length = int(rng.integers(1, 60))
        lab = np.zeros(length, np.int8)
        if rng.random() < 0.4:
            lab[int(rng.integers(0, length)):] = 1
        labels.append(lab)
        # rounded so that many hours tie at a threshold
        probs.append(np.round(np.clip(rng.random(length) * 0.6 + 0.4 * lab, 0, 1), 2))
    labels[0] = septic(20, 5)  # at least one septic stay
    probs[0] = np.round(rng.random(20), 2)
    return labels, probs


def test_vectorised_table_matches_the_literal_definition_on_random_stays():
    labels, probs = random_cohort(0)
    for th in (0.0, 0.3, 0.55, 0.9, 1.01):
        preds = [p >= th for p in probs]
        assert M.normalized_utility(labels, preds) == pytest.approx(reference_utility(labels, preds))


def test_utility_curve_equals_the_direct_computation_at_every_threshold():
    labels, probs = random_cohort(1)
    table = M.utility_table(labels)
    th, u = M.utility_curve(table, np.concatenate(probs))
    assert np.array_equal(th, np.unique(np.concatenate(probs)))  # every distinct risk
    direct = [M.normalized_utility(labels, [p >= t for p in probs]) for t in th]
    np.testing.assert_allclose(u, direct, atol=1e-12)
    # explicit thresholds between and beyond the risks too
    grid = np.array([-1.0, 0.005, 0.333, 0.999, 2.0])
    _, u_grid = M.utility_curve(table, np.concatenate(probs), grid)
    np.testing.assert_allclose(u_grid, [M.normalized_utility(labels, [p >= t for p in probs]) for t in grid], atol=1e-12)
    assert u_grid[-1] == pytest.approx(0.0)  # above every risk: never alarm


def test_choose_threshold_reaches_the_best_utility_on_the_curve():
    labels, probs = random_cohort(2)
    th, u = M.utility_curve(M.utility_table(labels), np.concatenate(probs))
    threshold, utility = M.choose_threshold(labels, probs)
    assert utility == pytest.approx(u.max())
    assert M.normalized_utility(labels, [p >= threshold for p in probs]) == pytest.approx(u.max())
    # it lies strictly between two distinct risks, so no risk sits on the edge
    assert not np.isin(threshold, th)


def test_choose_threshold_never_alarms_when_every_alarm_costs():
    # septic stay labelled from hour 9 of 10 (t_sepsis 15, rel -15..-6) at risk 0.1; a 200-hour
    # non-septic stay at 0.9. Threshold <= 0.1 alarms all: 3 * -0.05 + (0+1+...+6)/6 - 200 * 0.05
    # = -6.65; threshold in (0.1, 0.9]: -10. Both lose to never alarming.
    labels = [septic(10, 9), np.zeros(200, np.int8)]
    probs = [np.full(10, 0.1), np.full(200, 0.9)]
    threshold, utility = M.choose_threshold(labels, probs)
    assert threshold > 0.9 and utility == 0.0


def test_hourly_auroc_and_auprc_by_hand():
    # positives 0.35, 0.8; negatives 0.1, 0.4, 0.2
    # AUROC: 0.35 beats 0.1, 0.2 (2) + 0.8 beats all 3 (3) = 5 of 6 pairs
    # AP: ranked 0.8(+) 0.4(-) 0.35(+): recall 1/2 at precision 1, then recall 1 at precision 2/3
    #     = 1/2 * 1 + 1/2 * 2/3 = 5/6
    labels = [np.array([0, 0, 1]), np.array([0, 1])]
    probs = [np.array([0.1, 0.4, 0.35]), np.array([0.2, 0.8])]
    assert M.hourly_auroc(labels, probs) == pytest.approx(5 / 6)
    assert M.hourly_auprc(labels, probs) == pytest.approx(5 / 6)


# Alarm fixture at threshold 0.5 (order matters: A ends alarmed and D starts alarmed)
#   A septic, 30 h, labels from 16 -> t_sepsis 22; alarms 3-4, 10, 20-29: 3 episodes, first 3, lead 19,
#     latest episode start at or before onset 20 -> lead 2
#   D non-septic, 24 h; alarms 0-1, 23: 2 episodes (hour 0 starts one although A's last hour alarmed)
#   B septic, 12 h, labels from 2 -> t_sepsis 8; alarms 9-11: 1 episode, only after onset
#   C septic, 10 h, labels from 4 -> t_sepsis 10 (after the stay ends); alarms 0, 2: 2 episodes, lead 10,
#     latest episode start 2 -> lead 8
#   E non-septic, 26 h; no alarm
# hours 102, episodes 8 -> 8 * 24 / 102 per patient-day
# hourly: positives 14 + 10 + 6 = 30; TP = A 20-29 (10) + B 9-11 (3) = 13; FP = A 3 + D 3 + C 2 = 8
def alarm_fixture():
    labels = [septic(30, 16), np.zeros(24, np.int8), septic(12, 2), septic(10, 4), np.zeros(26, np.int8)]
    probs = [ones_at(30, [3, 4, 10, *range(20, 30)]), ones_at(24, [0, 1, 23]), ones_at(12, [9, 10, 11]),
             ones_at(10, [0, 2]), np.zeros(26)]
    probs = [0.2 + 0.6 * p for p in probs]  # alarms at 0.8, quiet at 0.2
    return labels, probs


def test_alarm_metrics_count_episodes_onset_and_lead_time():
    m = M.alarm_metrics(*alarm_fixture(), threshold=0.5)
    assert m["n_stays"] == 5 and m["n_septic"] == 3 and m["n_hours"] == 102
    assert m["n_alarm_episodes"] == 8
    assert m["alarms_per_patient_day"] == pytest.approx(8 * 24 / 102)
    assert m["septic_alarmed_before_onset"] == pytest.approx(2 / 3)   # A and C, not B
    assert m["median_lead_time_hours"] == pytest.approx(14.5)         # median of 19 and 10
    assert m["median_lead_time_last_episode_hours"] == pytest.approx(5.0)  # median of 2 and 8
    assert m["alarmed_stays_septic"] == pytest.approx(3 / 4)          # A, B, C of A, B, C, D
    assert m["non_septic_alarmed"] == pytest.approx(1 / 2)            # D of D, E
    assert m["precision"] == pytest.approx(13 / 21)
    assert m["recall"] == pytest.approx(13 / 30)
    assert m["specificity"] == pytest.approx(64 / 72)


def test_alarm_at_exactly_onset_counts_and_has_zero_lead():
    lab = septic(20, 4)  # t_sepsis 10
    m = M.alarm_metrics([lab], [ones_at(20, [10, 11])], threshold=1.0)  # risk >= threshold alarms
    assert m["septic_alarmed_before_onset"] == 1.0 and m["median_lead_time_hours"] == 0.0
    m = M.alarm_metrics([lab], [ones_at(20, [11])], threshold=1.0)
    assert m["septic_alarmed_before_onset"] == 0.0 and m["median_lead_time_hours"] is None


def test_evaluate_reports_given_or_chosen_threshold():
    labels, probs = alarm_fixture()
    given = M.evaluate(labels, probs, threshold=0.5)
    assert given["threshold"] == 0.5 and given["threshold_selection"] == "given"
    assert given["utility"] == pytest.approx(M.normalized_utility(labels, [p >= 0.5 for p in probs]))
    assert given["auroc"] == pytest.approx(M.hourly_auroc(labels, probs))
    assert given["n_alarm_episodes"] == 8
    chosen = M.evaluate(labels, probs)
    assert "chosen" in chosen["threshold_selection"]
    assert chosen["utility"] == pytest.approx(M.choose_threshold(labels, probs)[1])
    json.dumps(chosen, allow_nan=False)


def test_undefined_metrics_are_null_not_nan():
    labels = [np.zeros(5, np.int8), np.zeros(3, np.int8)]
    probs = [np.linspace(0, 1, 5), np.zeros(3)]
    assert np.isnan(M.hourly_auroc(labels, probs))
    res = M.evaluate(labels, probs, threshold=0.5)
    assert res["auroc"] is None and res["auprc"] is None and res["utility"] is None
    assert res["septic_alarmed_before_onset"] is None and res["median_lead_time_hours"] is None
    assert res["non_septic_alarmed"] == 0.5
    json.dumps(res, allow_nan=False)
    with pytest.raises(ValueError, match="no septic"):
        M.choose_threshold(labels, probs)


@pytest.mark.parametrize("labels, probs, message", [
    ([np.array([0, 1])], [np.array([0.1, 0.2, 0.3])], "stay 0 has 3 hours but its labels have 2"),
    ([np.array([0, 1]), np.array([0])], [np.array([0.1, 0.2])], "1 stays but labels has 2"),
    ([np.array([0]), np.array([0, 2])], [np.zeros(1), np.zeros(2)], "stay 1, hour 1: 2 is not 0 or 1"),
    ([np.array([0, 1, 1])], [np.array([0.1, np.nan, 0.2])], "stay 0, hour 1: nan is not a finite"),
])
def test_bad_input_names_the_stay_and_hour(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        M.evaluate(labels, probs, threshold=0.5)


def test_predictions_must_be_zero_one():
    with pytest.raises(ValueError, match="stay 0, hour 1: 0.7 is not 0 or 1"):
        M.normalized_utility([LONG], [np.r_[0.0, 0.7, np.zeros(28)]])


def test_stay_level_metrics_by_hand():
    # predicted septic at score >= 0.5: [1, 0, 1, 0, 1, 1] -> TP 2 (0, 4), FP 2 (2, 5), FN 1 (1), TN 1 (3)
    # AUROC: pairs (pos 0.9, 0.4, 0.5) x (neg 0.6, 0.1, 0.5): 3 + 1 + (1 + tie 0.5) = 5.5 of 9
    # AP: ranked 0.9(+) 0.6(-) {0.5+, 0.5-} 0.4(+) 0.1(-): recall steps of 1/3 at precision
    #     1, 2/4, 3/5 -> (1 + 1/2 + 3/5)/3 = 0.7
    y = np.array([1, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.4, 0.6, 0.1, 0.5, 0.5])
    m = M.stay_level_metrics(y, s, threshold=0.5)
    assert (m["true_positives"], m["false_positives"], m["false_negatives"], m["true_negatives"]) == (2, 2, 1, 1)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["auroc"] == pytest.approx(5.5 / 9) and m["auprc"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="6 stays but stay_scores has 5"):
        M.stay_level_metrics(y, s[:5])
