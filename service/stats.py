"""Alarm quality once outcomes are known: a thin adapter from what the service stores to
`models.alarm_figures`, the one definition of every alarm figure (the offline operating-points table
is computed by the same `figures`).

A true alarm is raised from 12 h before to 3 h after sepsis onset (the window in which the
PhysioNet 2019 utility rewards a prediction). Any other alarm of a patient with a known outcome
is false; alarms of patients without an outcome (or a sepsis outcome without its onset time) are
"unknown" and left out of PPV. A septic patient is caught in time when an alarm was raised inside
its window, or raised before it and still open (not acknowledged, snoozed or resolved) when the
window began; the lead time is onset minus that alarm's raise time.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from models.alarm_figures import TimedAlarm, figures, stay_from_timestamps, verdict_at

_NO_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class AlarmFact:
    patient_id: str
    raised_at: dt.datetime
    kind: str = "raised"                  # models.alarm_policy.KINDS
    closed_at: dt.datetime | None = None  # when it stopped being open; None: still open


@dataclass(frozen=True)
class PatientFact:
    patient_id: str
    outcome: str | None          # "sepsis", "no_sepsis" or None
    onset_time: dt.datetime | None
    # span of the patient's hours in the window from the first measured one on (the first with a
    # vital sign or lab: a patient is monitored from it, models.alarm_figures), plus one hour
    hours_monitored: float
    first_seen: dt.datetime | None = None  # the first monitored hour in the window: the stay's hour 0


def verdict(raised_at: dt.datetime, outcome: str | None, onset: dt.datetime | None) -> str:
    """"true", "false" or "unknown" of one alarm (models.alarm_figures.verdict_at)."""
    return verdict_at(raised_at, outcome, onset)


def alarm_stats(alarms: list[AlarmFact], patients: list[PatientFact]) -> dict:
    """The figures of schemas.AlarmFigures: `models.alarm_figures.figures` over one stay per patient
    (an alarm of a patient not in `patients` makes a stay of no monitored hours without outcome)."""
    by_patient: dict[str, list[AlarmFact]] = {}
    for a in alarms:
        by_patient.setdefault(a.patient_id, []).append(a)
    known = {p.patient_id for p in patients}
    facts = list(patients) + [PatientFact(pid, None, None, 0.0) for pid in sorted(set(by_patient) - known)]
    stays = []
    for p in facts:
        mine = by_patient.get(p.patient_id, [])
        # hour 0 only places the open spans of `red_share` in the stay; any shared clock gives the rest
        epoch = p.first_seen or min([a.raised_at for a in mine], default=p.onset_time or _NO_EPOCH)
        stays.append(stay_from_timestamps(epoch, p.hours_monitored,
                                          [TimedAlarm(a.raised_at, a.kind, a.closed_at) for a in mine],
                                          p.outcome, p.onset_time))
    f = figures(stays)
    return {
        "alarms": f.alarms,
        "patients": f.stays,
        "patient_days": f.patient_days,
        "alarms_per_patient_day": f.alarms_per_patient_day,
        "alarms_by_kind": f.alarms_by_kind,
        "alarms_with_outcome": f.true_alarms + f.false_alarms,
        "true_alarms": f.true_alarms,
        "false_alarms": f.false_alarms,
        "positive_predictive_value": f.ppv_alarms,
        "ppv_per_stay": f.ppv,
        "false_positive_rate": f.non_septic_alarmed,
        "septic_patients": f.septic,
        "septic_patients_alarmed_in_time": f.septic_caught_in_window,
        "caught_in_window": f.caught_in_window,
        "median_lead_time_hours": f.median_lead_time_in_window_hours,
        "alarmed_before_onset": f.sensitivity,
        "median_lead_time_before_onset_hours": f.median_lead_time_hours,
        "red_share": f.red_share,
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
