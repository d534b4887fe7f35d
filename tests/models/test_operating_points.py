import json

import numpy as np
import pytest

from models.card import ModelCardError
from models.operating_points import (OperatingPointsError, band_words, load_operating_points,
                                     parse_operating_points, percent, risk_in_words, share_in_words)
from models.testing import fixture_operating_points, write_fixture_model


def _figures(sensitivity, ppv, alarms, lead, utility):
    return {"sensitivity": sensitivity, "ppv": ppv, "alarms_per_patient_day": alarms,
            "median_lead_time_hours": lead, "utility": utility}


EVENT = "within the 12 h before sepsis onset"


def small_table(model="sepsis-cfc", version="1") -> dict:
    """Three measured-looking points and three bands, the shape the training step writes."""
    bands = [(0.0, 0.01, 0.004, 9000), (0.01, 0.05, 0.05, 900), (0.05, 1.0, 0.25, 100)]
    return {
        "model": model, "version": version, "selected_on": "validation",
        "definitions": {"ppv": "share of alarmed stays that are septic"},
        "points": [
            {"id": "utility_optimum", "label": "utility optimum", "threshold": 0.028,
             "validation": _figures(0.88, 0.16, 0.62, 30.0, 0.41), "test": _figures(0.87, 0.15, 0.63, 29.0, 0.40)},
            {"id": "alarms_per_day_0.2", "label": "at most 0.2 alarms per patient-day", "threshold": 0.12,
             "validation": _figures(0.5, 0.3, 0.2, 10.0, 0.2), "test": _figures(0.48, 0.29, 0.21, None, 0.19)},
            {"id": "sensitivity_0.8", "label": "sensitivity 0.8", "threshold": 0.04,
             "validation": _figures(0.8, 0.2, 0.4, 20.0, 0.35), "test": _figures(0.79, 0.2, 0.41, 19.0, 0.33)},
        ],
        "risk_bands": [{"low": lo, "high": hi, "validation_ppv": share, "validation_hours": hours,
                        "words": band_words(share, lo, hi, EVENT)} for lo, hi, share, hours in bands],
    }


def write_points(directory, data) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "operating_points.json").write_text(json.dumps(data), encoding="utf-8")


# ---------------------------------------------------------------- schema and loader

def test_the_fixture_model_ships_valid_unmeasured_operating_points(tmp_path):
    d = write_fixture_model(tmp_path / "sepsis-cfc" / "1", threshold=0.4)
    points = load_operating_points(d)
    assert points is not None and points.model == "sepsis-cfc" and points.version == "1"
    assert points.point("utility_optimum").threshold == 0.4
    assert len({p.threshold for p in points.points}) == 3
    # never measured, so no figure is filled in
    assert all(v is None for p in points.points for v in p.validation.model_dump().values())
    assert not (write_fixture_model(tmp_path / "bare", operating_points=False) / "operating_points.json").exists()


def test_a_model_without_the_file_has_no_operating_points(tmp_path):
    d = write_fixture_model(tmp_path / "m", operating_points=False)
    assert load_operating_points(d) is None


def test_a_valid_table_round_trips(tmp_path):
    write_points(tmp_path, small_table())
    points = load_operating_points(tmp_path)
    assert [p.id for p in points.points] == ["utility_optimum", "alarms_per_day_0.2", "sensitivity_0.8"]
    assert points.point("alarms_per_day_0.2").test.median_lead_time_hours is None
    assert parse_operating_points(json.loads(points.to_json())) == points
    with pytest.raises(KeyError, match="sensitivity_0.9"):
        points.point("sensitivity_0.9")


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["points"][0]["validation"].__setitem__("ppv", 1.5), "points.0.validation.ppv"),
    (lambda d: d["points"][1]["test"].pop("utility"), "points.1.test.utility"),
    (lambda d: d["points"][0].__setitem__("treshold", 0.1), "points.0.treshold"),
    (lambda d: d["points"][2].__setitem__("threshold", -0.1), "points.2.threshold"),
    (lambda d: d.pop("risk_bands"), "risk_bands"),
    (lambda d: d["risk_bands"][1].__setitem__("low", 0.02), "risk_bands"),   # a gap
    (lambda d: d["risk_bands"][1].__setitem__("low", 0.005), "risk_bands"),  # an overlap
    (lambda d: d["risk_bands"][2].__setitem__("high", 0.9), "risk_bands"),
    (lambda d: d["points"][1].__setitem__("id", "utility_optimum"), "duplicate id 'utility_optimum'"),
])
def test_an_invalid_table_names_the_file_and_the_field(tmp_path, mutate, field):
    data = small_table()
    mutate(data)
    write_points(tmp_path, data)
    with pytest.raises(OperatingPointsError) as err:
        load_operating_points(tmp_path)
    assert str(tmp_path / "operating_points.json") in str(err.value)
    assert field in str(err.value)
    assert isinstance(err.value, ModelCardError)  # callers that catch card errors catch these too


def test_broken_json_is_reported_with_its_position(tmp_path):
    tmp_path.joinpath("operating_points.json").write_text('{"model": "x",\n "points": [}')
    with pytest.raises(OperatingPointsError, match=r"operating_points.json: line 2, column \d+: invalid JSON"):
        load_operating_points(tmp_path)
    tmp_path.joinpath("operating_points.json").write_text("[1, 2]")
    with pytest.raises(OperatingPointsError, match="must be a JSON object, got list"):
        load_operating_points(tmp_path)


def test_points_measured_for_another_model_are_refused(tmp_path):
    d = write_fixture_model(tmp_path / "sepsis-cfc" / "2", version="2", operating_points=False)
    write_points(d, small_table(version="1"))
    with pytest.raises(OperatingPointsError, match="field 'version': '1' does not match the model card's '2'"):
        load_operating_points(d)
    write_points(d, small_table(version="2"))
    assert load_operating_points(d).version == "2"


# ---------------------------------------------------------------- words

def test_percent_keeps_a_threshold_readable():
    assert percent(0.0277) == "2.8%"
    assert percent(0.0035) == "0.35%"
    assert percent(0.12) == "12%"
    assert percent(0.0) == "0%"


@pytest.mark.parametrize("share, words", [(0.05, "about 1 in 20"), (0.004, "about 1 in 250"),
                                          (1 / 228, "about 1 in 230"), (1 / 12.4, "about 1 in 12"),
                                          (0.25, "about 2 in 10"), (0.31, "about 3 in 10"),
                                          (0.0, "none"), (None, "too few to say")])
def test_share_in_words(share, words):
    assert share_in_words(share) == words


def test_risk_in_words_uses_the_measured_band_and_the_threshold_in_force():
    points = parse_operating_points(small_table())
    text = risk_in_words(points, 0.03, 0.12)
    assert text.startswith("3% — below the alarm threshold (12%, at most 0.2 alarms per patient-day); ")
    assert "about 1 in 20 patient-hours that scored 1%–5% came within the 12 h before sepsis onset" in text
    high = risk_in_words(points, 0.3, 0.028)
    assert high.startswith("30% — at or above the alarm threshold (2.8%, utility optimum); ")
    assert "about 2 in 10" in high and "5%–100%" in high
    # the bands' edges: low is inside, high is the next band's; 1.0 is in the last band
    assert "1 in 20" in risk_in_words(points, 0.01, 0.5) and "1 in 250" in risk_in_words(points, 0.0099, 0.5)
    assert "2 in 10" in risk_in_words(points, 1.0, 0.5)
    # a risk equal to the threshold raises an alarm in the service (risk >= threshold)
    # a risk just under a threshold never reads as equal to it
    assert risk_in_words(points, 0.0277, 0.028).startswith("2.77% — below the alarm threshold (2.8%, utility")
    assert risk_in_words(points, 0.12, 0.12).startswith("12% — at or above")


def test_risk_in_words_without_operating_points_or_at_an_unlisted_threshold():
    assert risk_in_words(None, 0.071, 0.12) == "7.1% — below the alarm threshold (12%)"
    points = parse_operating_points(small_table())
    assert risk_in_words(points, 0.2, 0.15).startswith("20% — at or above the alarm threshold (15%); ")


def test_risk_in_words_takes_the_runtimes_numpy_risk():
    assert risk_in_words(None, np.float32(0.071), np.float64(0.12)).startswith("7.1% — below")


@pytest.mark.parametrize("risk, threshold", [(float("nan"), 0.1), (1.2, 0.1), (0.1, -0.5), ("0.1", 0.1), (True, 0.5)])
def test_risk_in_words_refuses_what_is_not_a_risk(risk, threshold):
    with pytest.raises(ValueError, match="must be a number in"):
        risk_in_words(None, risk, threshold)


def test_fixture_points_follow_the_threshold_they_were_built_with():
    data = fixture_operating_points(0.3, "demo", "7")
    points = parse_operating_points(data)
    assert points.model == "demo" and points.version == "7"
    assert sorted(p.threshold for p in points.points) == [0.15, 0.3, 0.65]


# ---------------------------------------------------------------- the default point and the re-alert policy

def test_a_table_names_its_default_point_and_policy_and_an_older_one_loads_without(tmp_path):
    assert parse_operating_points(small_table()).default() is None   # an older file: no default, no policy
    data = small_table()
    data["default_point"] = "sensitivity_0.8"
    data["alarm_policy"] = {"rise_factor": None, "lockout_hours": 12, "tiers": [0.05, 0.12], "chosen_by": "measured"}
    data["points"][2]["validation"].update(caught_in_window=0.81, policy_alarms_per_patient_day=0.5,
                                           policy_caught_in_window=0.8, red_share=0.2, ppv_alarms=0.07)
    write_points(tmp_path, data)
    points = load_operating_points(tmp_path)
    assert points.default().threshold == 0.04
    assert points.default().validation.policy_caught_in_window == 0.8
    # the unit's policy: its threshold, and only the tiers above it
    policy = points.alarm_policy.at(0.04)
    assert (policy.threshold, policy.rise_factor, policy.lockout_hours, policy.tiers) == (0.04, None, 12, (0.05, 0.12))
    assert points.alarm_policy.at(0.1).tiers == (0.12,)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.__setitem__("default_point", "nowhere"), "default_point: 'nowhere' is not one of the points"),
    (lambda d: d.__setitem__("alarm_policy", {"rise_factor": 0.5, "lockout_hours": 12}), "alarm_policy.rise_factor"),
    (lambda d: d.__setitem__("alarm_policy", {"rise_factor": None, "lockout_hours": -1}), "alarm_policy.lockout_hours"),
    (lambda d: d["points"][0]["test"].__setitem__("caught_in_window", 1.2), "points.0.test.caught_in_window"),
])
def test_a_bad_default_or_policy_is_refused_naming_the_field(tmp_path, mutate, field):
    data = small_table()
    mutate(data)
    write_points(tmp_path, data)
    with pytest.raises(OperatingPointsError, match=field.replace("(", r"\(").replace(")", r"\)")):
        load_operating_points(tmp_path)
