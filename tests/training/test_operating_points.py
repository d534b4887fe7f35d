import json

import numpy as np
import pytest

from models.alarm_policy import SILENT_FOR_GOOD, AlarmPolicy
from models.operating_points import PointFigures, load_operating_points
from models.testing import write_fixture_model
from training.__main__ import main as cli
from training.sepsis.data import load_cohort
from training.sepsis.splits import patient_split
from training.sepsis import metrics as M
from training.sepsis import ward_simulation as W
from training.sepsis.operating_points import (Scored, band_edges, event_hours, operating_points, risk_bands,
                                              threshold_for_budget, threshold_for_sensitivity)


def synthetic_split(seed: int, n: int = 80) -> Scored:
    """Stays of 20-80 hours, a third septic; the risk drifts up towards onset, with hourly noise
    so alarms come in episodes of varying length."""
    rng = np.random.default_rng(seed)
    labels, probs = [], []
    for _ in range(n):
        hours = int(rng.integers(20, 80))
        lab = np.zeros(hours, np.int8)
        base = rng.normal(-4.0, 0.7)
        logit = base + rng.normal(0, 0.8, hours)
        if rng.random() < 0.33:
            first = int(rng.integers(5, hours))
            lab[first:] = 1
            ramp = np.clip((np.arange(hours) - (first - 12)) / 12, 0, None)
            logit = logit + 2.5 * ramp
        labels.append(lab)
        probs.append((1 / (1 + np.exp(-logit))).astype(np.float32))
    return Scored(labels, probs)


@pytest.fixture(scope="module")
def val():
    return synthetic_split(0)


@pytest.fixture(scope="module")
def test_split():
    return synthetic_split(1)


def _levels(split):
    return np.unique(split.risks)


@pytest.mark.parametrize("budget", [0.1, 0.2, 0.5, 1.0])
def test_each_budget_threshold_keeps_validation_within_it_and_is_the_lowest_that_does(val, budget):
    t = threshold_for_budget(val, budget)
    assert t is not None
    assert val.alarms(t)["alarms_per_patient_day"] <= budget
    # the next lower validation risk, alarmed too, would break the budget: the threshold is on
    # the boundary, not merely somewhere safe (e.g. above every risk)
    levels = _levels(val)
    lower = levels[levels < t]
    if budget < 1.0:
        assert len(lower) and val.alarms(float(lower[-1]))["alarms_per_patient_day"] > budget
    else:  # one episode per stay is within a generous budget: then every hour alarms
        assert not len(lower) and val.alarms(t)["n_alarm_episodes"] == len(val.labels)


def test_budgets_are_ordered_the_way_a_ward_expects(val):
    t = [threshold_for_budget(val, b) for b in (0.1, 0.2, 0.5)]
    assert t[0] > t[1] > t[2]


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9])
def test_each_sensitivity_threshold_reaches_the_target_and_is_the_highest_that_does(val, target):
    t = threshold_for_sensitivity(val, target)
    assert val.alarms(t)["septic_alarmed_before_onset"] >= target
    levels = _levels(val)
    higher = levels[levels >= t]
    # the lowest level alarmed at t is the one just above it; one level higher misses the target
    assert len(higher) >= 2
    assert val.alarms(float(higher[1]))["septic_alarmed_before_onset"] < target


def test_thresholds_come_from_validation_and_test_figures_are_read_at_them(val, test_split):
    a = operating_points(val, test_split, "m", "1", {}, progress=False)
    b = operating_points(val, synthetic_split(7), "m", "1", {}, progress=False)
    assert [p.id for p in a.points][:6] == ["utility_optimum", "alarms_per_day_0.1", "alarms_per_day_0.2",
                                            "alarms_per_day_0.5", "sensitivity_0.8", "sensitivity_0.9"]
    # another test split changes no threshold, only the test figures
    assert [p.threshold for p in a.points] == [p.threshold for p in b.points]
    assert [p.test for p in a.points] != [p.test for p in b.points]
    assert a.point("utility_optimum").threshold == M.choose_threshold(val.labels, val.probs)[0]
    for p in a.points:
        assert p.validation == PointFigures.model_validate(val.figures(p.threshold, a.alarm_policy))
        assert p.test == PointFigures.model_validate(test_split.figures(p.threshold, a.alarm_policy))
        am = M.alarm_metrics(test_split.labels, test_split.probs, p.threshold)
        assert p.test.sensitivity == am["septic_alarmed_before_onset"]
        assert p.test.ppv == am["alarmed_stays_septic"]
        assert p.test.alarms_per_patient_day == am["alarms_per_patient_day"]


def test_an_unreachable_target_is_left_out_rather_than_invented():
    never = Scored([np.array([0, 0, 1, 1], np.int8), np.zeros(5, np.int8)],
                   [np.full(4, 0.1, np.float32), np.full(5, 0.2, np.float32)])
    # one episode per stay on 9 hours: 5.3 alarms per patient-day even at the top risk alone...
    assert threshold_for_budget(never, 0.1) is None
    # ...but the septic stay is found by the lowest risk level
    assert never.alarms(threshold_for_sensitivity(never, 1.0))["septic_alarmed_before_onset"] == 1.0


def test_event_hours_are_the_utility_window_and_later_septic_hours_are_not_counted():
    # first label at hour 20 -> onset (t_sepsis) at hour 26; window 14..29; hours 30.. not counted
    septic = np.r_[np.zeros(20, np.int8), np.ones(15, np.int8)]
    counted, event = event_hours([septic, np.zeros(6, np.int8)])
    assert np.flatnonzero(event[:35]).tolist() == list(range(14, 30))
    assert np.flatnonzero(~counted).tolist() == list(range(30, 35))
    assert counted[35:].all() and not event[35:].any()


def test_band_shares_count_events_among_the_band_hours():
    septic = np.r_[np.zeros(20, np.int8), np.ones(15, np.int8)]
    # risk 0.5 exactly on the window's 16 hours and on 4 quiet hours of the other stay
    p1 = np.where(np.isin(np.arange(35), np.arange(14, 30)), 0.5, 0.01).astype(np.float32)
    p2 = np.r_[np.full(4, 0.5), np.full(4, 0.01)].astype(np.float32)
    split = Scored([septic, np.zeros(8, np.int8)], [p1, p2])
    bands = risk_bands(split, split, edges=[0.0, 0.1, 1.0])
    low, high = bands
    assert (high["validation_hours"], high["validation_ppv"]) == (20, 16 / 20)
    # the 5 hours after the window are not counted: 14 + 4 low hours, no event among them
    assert (low["validation_hours"], low["validation_ppv"]) == (18, 0.0)
    assert "about 8 in 10 patient-hours that scored 10%–100%" in high["words"]
    assert high["test_ppv"] == high["validation_ppv"]


def test_band_edges_are_readable_and_cover_zero_to_one(val):
    edges = band_edges(val.risks)
    assert edges[0] == 0.0 and edges[-1] == 1.0
    assert edges == sorted(set(edges))
    assert all(float(f"{e:.2g}") == e for e in edges)


# ---------------------------------------------------------------- the command, end to end

def test_the_cli_writes_the_models_operating_points_and_the_record(sepsis_archive, tmp_path):
    model = write_fixture_model(tmp_path / "models" / "sepsis-cfc" / "1", operating_points=False)
    out = tmp_path / "record"
    args = ["sepsis", "operating-points", "--model", str(model), "--data", str(sepsis_archive),
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            "--budgets", "0.5", "2", "--sensitivities", "0.8"]
    assert cli(args) == 0
    points = load_operating_points(model)
    assert points.selected_on == "validation" and points.model == "sepsis-cfc"
    assert {p.id for p in points.points} <= {"utility_optimum", "alarms_per_day_0.5", "alarms_per_day_2",
                                             "sensitivity_0.8"}
    assert "utility_optimum" in {p.id for p in points.points}
    split = patient_split(load_cohort(sepsis_archive, cache_dir=tmp_path / "cache", progress=False), seed=0)
    assert (points.source["validation_stays"], points.source["test_stays"]) == (len(split.val), len(split.test))
    for p in points.points:
        if p.id.startswith("alarms_per_day_"):
            assert p.validation.alarms_per_patient_day <= float(p.id.rsplit("_", 1)[1])
    record = json.loads((out / "operating_points.json").read_text())
    assert record["points"] == json.loads(points.to_json())["points"]
    assert record["curves"]["validation"] and "operating-points --model" in record["command"]
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| operating point |" in (out / "README.md").read_text()
    card_readme = (model / "README.md").read_text()
    plot_link = card_readme.split("](", 1)[1].split(")", 1)[0]
    assert "| operating point |" in card_readme and (model / plot_link).resolve() == (out / "tradeoff.png").resolve()
    # the card's threshold is left alone
    assert json.loads((model / "model_card.json").read_text())["threshold"] == 0.5

    # a second run does not replace the model's file unless asked (risks come from the cache)
    before = (model / "operating_points.json").read_text()
    assert cli(args) == 2
    assert cli(args + ["--overwrite"]) == 0
    assert (model / "operating_points.json").read_text() == before
    assert list((tmp_path / "cache" / "operating_points").glob("risks-*.npy"))


def test_the_cli_refuses_a_budget_that_is_not_one(sepsis_archive, tmp_path, capsys):
    model = write_fixture_model(tmp_path / "m", operating_points=False)
    assert cli(["sepsis", "operating-points", "--model", str(model), "--data", str(sepsis_archive),
                "--out", str(tmp_path / "o"), "--budgets", "0", "--no-progress"]) == 2
    assert "--budgets: 0 is not a positive number" in capsys.readouterr().err
    assert not (model / "operating_points.json").exists()


def ward_split(seed: int) -> Scored:
    """Septic stays that alarm early (hour 5), go quiet, and rise inside the window [34, 49] to a
    level that differs by stay; quiet stays with occasional noise above the lowest thresholds."""
    rng = np.random.default_rng(seed)
    labels, probs = [], []
    for i in range(30):
        lab = np.zeros(60, np.int8)
        lab[40:] = 1
        p = np.full(60, 0.02) + rng.uniform(0, 0.005, 60)
        p[5] = 0.3
        p[36:46] = 0.1 + 0.02 * i + rng.uniform(0, 0.005, 10)
        labels.append(lab)
        probs.append(p.astype(np.float32))
    for _ in range(60):
        p = np.full(48, 0.02) + rng.uniform(0, 0.005, 48)
        p[rng.integers(0, 48, 3)] = rng.uniform(0.05, 0.5, 3)
        labels.append(np.zeros(48, np.int8))
        probs.append(p.astype(np.float32))
    return Scored(labels, probs)


def test_the_default_point_is_the_cheapest_threshold_whose_policy_still_catches_the_target():
    val = ward_split(0)
    table = operating_points(val, ward_split(1), "m", "1", {}, progress=False)
    assert table.default_point == "in_window_0.8_with_policy"
    default = table.default()
    assert default.validation.policy_caught_in_window >= 0.8
    policy = table.alarm_policy
    assert policy.chosen_by and policy.tiers == []
    # the next validation risk up, alarmed alone, would miss the target: the threshold is the boundary
    levels = np.unique(val.risks)
    higher = levels[levels >= default.threshold]
    missed = W.ward_figures(val.labels, val.probs, policy.at(float(higher[1])), "acknowledge_all")
    assert missed.caught_in_window < 0.8
    # and the policy meets the bar it was chosen by, where the old behaviour never re-alerted
    bar = W.dismissed_early(val.labels, val.probs, policy.at(default.threshold), scenario="acknowledge_all")
    assert bar.rose and bar.share_new_alarm >= 0.9
    silent = W.dismissed_early(val.labels, val.probs, AlarmPolicy(default.threshold, **SILENT_FOR_GOOD),
                               scenario="acknowledge_all")
    assert silent.share_new_alarm == 0.0
