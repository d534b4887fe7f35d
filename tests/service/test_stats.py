"""The alarm-quality arithmetic: the true-alarm window and the rates built on it."""
from __future__ import annotations

import datetime as dt

import pytest

from service.inputs import iculos
from service.stats import AlarmFact, PatientFact, alarm_stats, verdict

T = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
H = dt.timedelta(hours=1)


@pytest.mark.parametrize("offset, expected", [(-12.01, "false"), (-12, "true"), (0, "true"), (3, "true"), (3.01, "false")])
def test_true_alarm_window_is_12h_before_to_3h_after_onset(offset, expected):
    assert verdict(T + offset * H, "sepsis", T) == expected


def test_other_outcomes():
    assert verdict(T, "no_sepsis", None) == "false"
    assert verdict(T, None, None) == "unknown"


def test_rates_and_median_lead_time():
    alarms = [AlarmFact("s1", T - 10 * H), AlarmFact("s1", T - 2 * H), AlarmFact("s2", T - 4 * H),
              AlarmFact("n1", T), AlarmFact("u1", T)]
    patients = [PatientFact("s1", "sepsis", T, 48), PatientFact("s2", "sepsis", T, 24), PatientFact("s3", "sepsis", T, 24),
                PatientFact("n1", "no_sepsis", None, 24), PatientFact("n2", "no_sepsis", None, 24),
                PatientFact("u1", None, None, 24)]
    s = alarm_stats(alarms, patients)
    assert s["patient_days"] == 7 and s["alarms_per_patient_day"] == pytest.approx(5 / 7)
    assert (s["true_alarms"], s["false_alarms"]) == (3, 1)
    assert s["positive_predictive_value"] == 0.75
    assert s["false_positive_rate"] == 0.5
    assert s["septic_patients_alarmed_in_time"] == 2
    assert s["median_lead_time_hours"] == 7.0  # first true alarms: 10 h and 4 h before onset


def test_empty():
    s = alarm_stats([], [])
    assert s["positive_predictive_value"] is None and s["median_lead_time_hours"] is None


def test_iculos_counts_started_hours_from_one():
    assert iculos(T, T) == 1 and iculos(T + 0.99 * H, T) == 1 and iculos(T + H, T) == 2 and iculos(T + 25.5 * H, T) == 26
