"""Operating-point periods: the spans during which one unit's point was in force, read from the
audit of point changes (action `threshold_change`, written with each choice by
service/alarms/thresholds.py). Pure.

Figures added across a threshold change mix two alarm rates and two sensitivities into one number
that describes neither point, so GET /stats/periods gives each period its own figures.

A unit's first period runs from the beginning of the record to its first change, at the point that
change replaced (its `from`); each change opens a period at its `to` that runs until the next
change, the last one until now (`end` None). A unit never changed has one period at the point in
force now. Times are the service clock's (the audit's `at`), the clock observations are filed on.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Mapping

DEFINITION = ("a period is the span during which one unit's operating point was in force (the audit of "
              "operating-point changes); its figures count the alarms raised and the patient-hours observed in "
              "(start, end] on that unit's patients (an observation at a change's own time was scored before it), so a stay spanning a change counts in each period with its "
              "part of the stay")


@dataclass(frozen=True)
class Change:
    """One audited point change of a unit."""
    at: dt.datetime
    unit: str
    from_point: str | None
    from_threshold: float
    to_point: str | None
    to_threshold: float
    by: str | None = None


@dataclass(frozen=True)
class Period:
    unit: str
    point_id: str | None
    threshold: float
    start: dt.datetime | None     # None: from the beginning of the record
    end: dt.datetime | None       # None: still in force
    chosen_by: str | None = None  # who opened it (None for a unit's first period)


def change_of(at: dt.datetime, unit: str | None, details: Mapping | None, person: str | None) -> Change | None:
    """A `threshold_change` audit row as a Change; None when it lacks what a period needs (a row
    written before the audit carried from/to)."""
    details = details or {}
    before, after = details.get("from") or {}, details.get("to") or {}
    if unit is None or before.get("threshold") is None or after.get("threshold") is None:
        return None
    return Change(at, unit, before.get("point_id"), float(before["threshold"]), after.get("point_id"),
                  float(after["threshold"]), person)


def unit_periods(units: Iterable[str], changes: Iterable[Change],
                 in_force: Mapping[str, tuple[str | None, float]]) -> list[Period]:
    """Every unit's periods in time order, units in the order given; `in_force[unit]` is
    (point_id, threshold) now, the period of a unit that never changed."""
    by_unit: dict[str, list[Change]] = {}
    for c in changes:
        by_unit.setdefault(c.unit, []).append(c)
    out: list[Period] = []
    for unit in units:
        mine = sorted(by_unit.get(unit, []), key=lambda c: c.at)
        if not mine:
            point, threshold = in_force[unit]
            out.append(Period(unit, point, threshold, None, None))
            continue
        out.append(Period(unit, mine[0].from_point, mine[0].from_threshold, None, mine[0].at))
        for c, nxt in zip(mine, mine[1:] + [None]):
            out.append(Period(unit, c.to_point, c.to_threshold, c.at, None if nxt is None else nxt.at, c.by))
    return out
