"""Alarm quality once outcomes are known, as pure functions of what is stored.

A true alarm is raised from 12 h before to 3 h after sepsis onset (the window in which the
PhysioNet 2019 utility rewards a prediction). Any other alarm of a patient with a known outcome
is false; alarms of patients without an outcome are "unknown" and left out of PPV.
"""
from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass

import numpy as np

BEFORE = dt.timedelta(hours=12)
AFTER = dt.timedelta(hours=3)


@dataclass(frozen=True)
class AlarmFact:
    patient_id: str
    raised_at: dt.datetime


@dataclass(frozen=True)
class PatientFact:
    patient_id: str
    outcome: str | None          # "sepsis", "no_sepsis" or None
    onset_time: dt.datetime | None
    hours_monitored: float       # span of the patient's observations in the window, plus one hour


def verdict(raised_at: dt.datetime, outcome: str | None, onset: dt.datetime | None) -> str:
    if outcome is None:
        return "unknown"
    if outcome == "sepsis" and onset is not None and onset - BEFORE <= raised_at <= onset + AFTER:
        return "true"
    return "false"


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def alarm_stats(alarms: list[AlarmFact], patients: list[PatientFact]) -> dict:
    by_id = {p.patient_id: p for p in patients}
    verdicts = [(a, verdict(a.raised_at, by_id[a.patient_id].outcome, by_id[a.patient_id].onset_time)
                 if a.patient_id in by_id else "unknown") for a in alarms]
    true_alarms = sum(v == "true" for _, v in verdicts)
    false_alarms = sum(v == "false" for _, v in verdicts)
    patient_days = sum(p.hours_monitored for p in patients) / 24.0
    alarmed = {a.patient_id for a in alarms}
    negatives = [p for p in patients if p.outcome == "no_sepsis"]
    septic = [p for p in patients if p.outcome == "sepsis"]
    leads = []
    for p in septic:
        hits = [a.raised_at for a, v in verdicts if v == "true" and a.patient_id == p.patient_id]
        if hits:
            leads.append((p.onset_time - min(hits)).total_seconds() / 3600.0)
    return {
        "alarms": len(alarms),
        "patients": len(patients),
        "patient_days": patient_days,
        "alarms_per_patient_day": len(alarms) / patient_days if patient_days else None,
        "alarms_with_outcome": true_alarms + false_alarms,
        "true_alarms": true_alarms,
        "false_alarms": false_alarms,
        "positive_predictive_value": _ratio(true_alarms, true_alarms + false_alarms),
        "false_positive_rate": _ratio(sum(p.patient_id in alarmed for p in negatives), len(negatives)),
        "septic_patients": len(septic),
        "septic_patients_alarmed_in_time": len(leads),
        "median_lead_time_hours": statistics.median(leads) if leads else None,
    }


def auroc(scores, labels) -> float | None:
    """Area under the ROC curve: the chance that a positive scores above a negative (ties count
    half; Mann-Whitney from average ranks). None unless both classes are present."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))
