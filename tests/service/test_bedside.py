"""Bedside context (service/patients/bedside.py) from hand-made timelines."""
import datetime as dt
import json
import math

import pytest

from service.patients.bedside import bedside_context

T0 = dt.datetime(2024, 3, 1, 8, 0, tzinfo=dt.timezone.utc)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def criterion(block: dict, name: str) -> dict:
    return next(c for c in block["criteria"] if c["name"] == name)


def component(ctx: dict, name: str) -> dict:
    return next(c for c in ctx["sofa"]["components"] if c["name"] == name)


FLORID = {"HR": 128, "MAP": 58, "Temp": 39.4, "Resp": 32, "Lactate": 4.8, "WBC": 19, "Creatinine": 2.4,
          "Platelets": 90}


def test_florid_septic_shock_hour():
    ctx = bedside_context([(at(0), {"HR": 80, "SBP": 125}), (at(2), {**FLORID, "SBP": 88})], now=at(3))
    q = ctx["qsofa"]
    assert (q["score"], q["evaluated"], q["of"]) == (2, 2, 3)
    resp = criterion(q, "Respiratory rate")
    assert resp["met"] is True and resp["value"] == 32.0 and resp["unit"] == "breaths/min"
    assert resp["measured_at"] == at(2).isoformat() and resp["age_hours"] == 1.0
    mentation = criterion(q, "Altered mentation")
    assert mentation["met"] is None and "not recorded" in mentation["note"]
    assert ctx["sirs"]["score"] == 4
    sofa = ctx["sofa"]
    assert [(c["name"], c["score"]) for c in sofa["components"]] == [
        ("Respiration", None), ("Coagulation", 2), ("Liver", None), ("Cardiovascular", 1),
        ("Central nervous system", None), ("Renal", 2)]
    assert (sofa["total_available"], sofa["available"], sofa["of"]) == (5, 3, 6)
    assert ctx["lactate"] == {"value": 4.8, "unit": "mmol/L", "measured_at": at(2).isoformat(), "age_hours": 1.0,
                              "stale": False, "window_hours": 24.0, "elevated": True}
    json.dumps(ctx)  # JSON-ready as it is


def test_no_values_at_all():
    ctx = bedside_context([], now=at(0))
    assert ctx["qsofa"]["score"] is None and ctx["qsofa"]["evaluated"] == 0
    assert ctx["sirs"]["score"] is None
    assert all(c["met"] is None for c in ctx["sirs"]["criteria"])
    assert ctx["sofa"]["total_available"] == 0 and ctx["sofa"]["available"] == 0
    assert all(c["score"] is None for c in ctx["sofa"]["components"])
    assert ctx["lactate"] is None and ctx["latest"] == []
    assert criterion(ctx["qsofa"], "Systolic blood pressure")["note"] == "no SBP in the last 6 h"


def test_the_latest_value_counts_not_the_worst_and_not_a_future_one():
    timeline = [(at(0), {"Resp": 30}), (at(1), {"Resp": 18}), (at(5), {"Resp": 35})]
    ctx = bedside_context(timeline, now=at(2))
    resp = criterion(ctx["qsofa"], "Respiratory rate")
    assert (resp["met"], resp["value"], resp["age_hours"]) == (False, 18.0, 1.0)
    # order of the timeline does not matter; at equal times the later entry wins
    ctx = bedside_context([(at(1), {"Resp": 18}), (at(0), {"Resp": 30})], now=at(2))
    assert criterion(ctx["qsofa"], "Respiratory rate")["value"] == 18.0
    ctx = bedside_context([(at(1), {"Resp": 18}), (at(0), {"Resp": 30}), (at(1), {"Resp": 22})], now=at(2))
    assert criterion(ctx["qsofa"], "Respiratory rate")["value"] == 22.0


def test_missing_values_do_not_replace_measured_ones():
    ctx = bedside_context([(at(0), {"HR": 120}), (at(1), {"HR": math.nan, "Temp": 37.0})], now=at(1))
    assert criterion(ctx["sirs"], "Heart rate")["value"] == 120.0


def test_stale_values_do_not_score_but_are_listed():
    timeline = [(at(0), {"SBP": 90, "Lactate": 3.1, "Creatinine": 2.5})]
    fresh = bedside_context(timeline, now=at(6))       # exactly at the vitals window: still counts
    assert criterion(fresh["qsofa"], "Systolic blood pressure")["met"] is True
    stale = bedside_context(timeline, now=at(6.01))
    sbp = criterion(stale["qsofa"], "Systolic blood pressure")
    assert sbp["met"] is None and sbp["value"] is None and sbp["note"] == "no SBP in the last 6 h"
    assert stale["qsofa"]["score"] is None
    assert stale["lactate"]["value"] == 3.1  # labs keep for 24 h
    assert bedside_context(timeline, now=at(24))["lactate"] is not None
    late = bedside_context(timeline, now=at(24.5))
    # past its window the lactate is still shown, flagged stale, and no longer read as elevated or not
    assert late["lactate"]["value"] == 3.1 and late["lactate"]["stale"] is True
    assert late["lactate"]["window_hours"] == 24.0 and late["lactate"]["elevated"] is None
    assert component(late, "Renal")["score"] is None
    listed = {r["feature"]: r for r in late["latest"]}
    assert listed["SBP"]["stale"] and listed["Lactate"]["stale"] and listed["SBP"]["age_hours"] == 24.5
    assert listed["Creatinine"] == {"feature": "Creatinine", "value": 2.5, "unit": "mg/dL",
                                    "measured_at": at(0).isoformat(), "age_hours": 24.5, "stale": True,
                                    "window_hours": 24.0}


@pytest.mark.parametrize("name, feature, value, met", [
    ("Respiratory rate", "Resp", 22, True), ("Respiratory rate", "Resp", 21.9, False),
    ("Systolic blood pressure", "SBP", 100, True), ("Systolic blood pressure", "SBP", 100.1, False),
])
def test_qsofa_thresholds_at_the_boundary(name, feature, value, met):
    assert criterion(bedside_context([(at(0), {feature: value})], at(0))["qsofa"], name)["met"] is met


@pytest.mark.parametrize("name, values, met", [
    ("Temperature", {"Temp": 38.0}, False), ("Temperature", {"Temp": 38.1}, True),
    ("Temperature", {"Temp": 36.0}, False), ("Temperature", {"Temp": 35.9}, True),
    ("Heart rate", {"HR": 90}, False), ("Heart rate", {"HR": 91}, True),
    ("Respiration", {"Resp": 20}, False), ("Respiration", {"Resp": 21}, True),
    ("Respiration", {"Resp": 16, "PaCO2": 31.9}, True), ("Respiration", {"Resp": 16, "PaCO2": 32}, False),
    ("Respiration", {"PaCO2": 30}, True),
    ("White cell count", {"WBC": 12}, False), ("White cell count", {"WBC": 12.1}, True),
    ("White cell count", {"WBC": 4}, False), ("White cell count", {"WBC": 3.9}, True),
])
def test_sirs_thresholds_at_the_boundary(name, values, met):
    assert criterion(bedside_context([(at(0), values)], at(0))["sirs"], name)["met"] is met


def test_two_part_criterion_says_which_part_decided_and_what_was_missing():
    ctx = bedside_context([(at(0), {"Resp": 16, "PaCO2": 28})], at(1))
    c = criterion(ctx["sirs"], "Respiration")
    assert (c["met"], c["feature"], c["value"], c["unit"]) == (True, "PaCO2", 28.0, "mm Hg")
    c = criterion(bedside_context([(at(0), {"Resp": 16})], at(1))["sirs"], "Respiration")
    assert (c["met"], c["feature"], c["value"]) == (False, "Resp", 16.0)
    assert c["note"] == "no PaCO2 in the last 24 h"
    wbc = criterion(bedside_context([(at(0), {"WBC": 8})], at(0))["sirs"], "White cell count")
    assert wbc["met"] is False and "bands" in wbc["note"]


@pytest.mark.parametrize("feature, name, value, score", [
    ("Platelets", "Coagulation", 150, 0), ("Platelets", "Coagulation", 149, 1), ("Platelets", "Coagulation", 100, 1),
    ("Platelets", "Coagulation", 99, 2), ("Platelets", "Coagulation", 50, 2), ("Platelets", "Coagulation", 49, 3),
    ("Platelets", "Coagulation", 20, 3), ("Platelets", "Coagulation", 19, 4),
    ("Bilirubin_total", "Liver", 1.19, 0), ("Bilirubin_total", "Liver", 1.2, 1), ("Bilirubin_total", "Liver", 1.95, 1),
    ("Bilirubin_total", "Liver", 2.0, 2), ("Bilirubin_total", "Liver", 5.9, 2), ("Bilirubin_total", "Liver", 6.0, 3),
    ("Bilirubin_total", "Liver", 11.9, 3), ("Bilirubin_total", "Liver", 12.0, 4),
    ("MAP", "Cardiovascular", 70, 0), ("MAP", "Cardiovascular", 69.9, 1),
    ("Creatinine", "Renal", 1.19, 0), ("Creatinine", "Renal", 1.2, 1), ("Creatinine", "Renal", 2.0, 2),
    ("Creatinine", "Renal", 3.4, 2), ("Creatinine", "Renal", 3.5, 3), ("Creatinine", "Renal", 4.9, 3),
    ("Creatinine", "Renal", 5.0, 4),
])
def test_sofa_table_at_the_boundaries(feature, name, value, score):
    ctx = bedside_context([(at(0), {feature: value})], at(0))
    c = component(ctx, name)
    assert (c["score"], c["feature"], c["value"]) == (score, feature, value)
    assert ctx["sofa"]["total_available"] == score and ctx["sofa"]["available"] == 1


def test_sofa_never_claims_what_the_data_cannot_say():
    ctx = bedside_context([(at(0), {"SaO2": 88, "FiO2": 0.6, "MAP": 75})], at(0))
    assert component(ctx, "Respiration")["score"] is None and "PaO2" in component(ctx, "Respiration")["note"]
    assert component(ctx, "Central nervous system")["score"] is None
    assert "vasopressors" in component(ctx, "Cardiovascular")["note"]


def test_latest_lists_every_measured_variable_in_column_order_with_units():
    ctx = bedside_context([(at(0), {"Lactate": 1.5, "Age": 71, "Gender": 1}),
                           (at(1.5), {"HR": 101, "ICULOS": 2, "Temp": 38.2})], at(2))
    assert [(r["feature"], r["value"], r["unit"], r["age_hours"]) for r in ctx["latest"]] == [
        ("HR", 101.0, "beats/min", 0.5), ("Temp", 38.2, "deg C", 0.5), ("Lactate", 1.5, "mmol/L", 2.0),
        ("Age", 71.0, "years", 2.0), ("Gender", 1.0, "0 female / 1 male", 2.0)]
    demo = {r["feature"]: r for r in bedside_context([(at(0), {"Age": 71})], at(1000))["latest"]}
    assert demo["Age"]["stale"] is False and demo["Age"]["window_hours"] is None
    assert ctx["lactate"]["elevated"] is False


@pytest.mark.parametrize("timeline, now, match", [
    ([(at(0), {"Heartrate": 80})], at(0), "unknown variable 'Heartrate'"),
    ([(at(0), {"HR": "80"})], at(0), "HR is '80', not a number"),
    ([(dt.datetime(2024, 3, 1, 8), {"HR": 80})], at(0), "time zone"),
])
def test_bad_timelines_are_refused_with_the_reason(timeline, now, match):
    with pytest.raises(ValueError, match=match):
        bedside_context(timeline, now)
