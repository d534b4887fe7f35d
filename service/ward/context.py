"""What a risk means for one patient: the bedside context of its stored observations and the
risk in words at its unit's threshold. Shared by the patient page's body and the alarm queue."""
from __future__ import annotations

import datetime as dt

from service.alarms.thresholds import UnitPoints, UnitThreshold, unit_of
from service.patients.bedside import bedside_context


def bedside(timeline: list[tuple[dt.datetime, dict]], now: dt.datetime) -> dict:
    """service/patients/bedside.py's context of (time, values) in time order, at the service clock's `now`."""
    return bedside_context(timeline, now)


def unit_threshold(thresholds: dict[str, UnitThreshold], unit1: float | None, unit2: float | None) -> UnitThreshold:
    return thresholds[unit_of(unit1, unit2)]


def patient_context(units: UnitPoints | None, thresholds: dict[str, UnitThreshold] | None, row,
                    timeline: list[tuple[dt.datetime, dict]], now: dt.datetime) -> dict:
    """PatientDetail's bedside, threshold, operating_point and risk_in_words for a patients row."""
    out = {"bedside": bedside(timeline, now)}
    if units is not None and thresholds is not None:
        chosen = unit_threshold(thresholds, row.unit1, row.unit2)
        out.update(threshold=chosen.threshold, operating_point=chosen.point_id,
                   risk_in_words=units.words(row.last_risk, chosen.threshold))
    return out
