"""Operating-point periods: the spans during which one unit's point was in force, read from the
audit of threshold changes (action `threshold_change`, written by service/alarms/thresholds.py with
each choice, and for each unit whose threshold a model switch changes). Pure.

Figures added across a threshold change mix two alarm rates and two sensitivities into one number
that describes neither point, so GET /stats/periods gives each period its own figures.

A unit's first period runs from the beginning of the record to its first change, at the point that
change replaced (its `from`); each change opens a period at its `to` that runs until the next
change, the last one until now (`end` None). A unit never changed has one period at the point in
force now. Times are the service clock's (the audit's `at`), the clock observations are filed on.

A model switch opens a period only for a unit whose threshold it changes (one at the new model's
default point whose threshold differs, or a choice whose point the new model measured elsewhere);
a switch that keeps a unit's threshold opens none, so a period names the model in force when it
opened (a unit's first, the model at the beginning of the record) and may outlive it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Mapping

DEFINITION = ("a period is the span during which one unit's operating point was in force (the audit of "
              "threshold changes: an admin's choice of point, or a model switch that changed the unit's threshold "
              "in force; a switch that kept it starts none); its figures count the alarms raised and the patient-hours observed in "
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
    from_model: tuple[str, str] | None = None  # (name, version) in force before; None: not recorded
    to_model: tuple[str, str] | None = None
    cause: str = "point_change"                # point_change (an admin's choice) / model_switch


@dataclass(frozen=True)
class Period:
    unit: str
    point_id: str | None
    threshold: float
    start: dt.datetime | None     # None: from the beginning of the record
    end: dt.datetime | None       # None: still in force
    chosen_by: str | None = None  # who opened it (None for a unit's first period)
    model: tuple[str, str] | None = None  # (name, version) in force when it opened
    cause: str | None = None      # what opened it: point_change / model_switch (None: a unit's first period)


def change_of(at: dt.datetime, unit: str | None, details: Mapping | None, person: str | None) -> Change | None:
    """A `threshold_change` audit row as a Change; None when it lacks what a period needs (a row
    written before the audit carried from/to). A choice names one model (`model`, `model_version`:
    the point changed, the model did not); a switch's row names each side's in its from/to."""
    details = details or {}
    before, after = details.get("from") or {}, details.get("to") or {}
    if unit is None or before.get("threshold") is None or after.get("threshold") is None:
        return None
    return Change(at, unit, before.get("point_id"), float(before["threshold"]), after.get("point_id"),
                  float(after["threshold"]), person, _model(before, details), _model(after, details),
                  details.get("cause") or "point_change")


def _model(side: Mapping, details: Mapping) -> tuple[str, str] | None:
    name, version = side.get("model", details.get("model")), side.get("model_version", details.get("model_version"))
    return None if name is None or version is None else (str(name), str(version))


def first_model(first_switch: Mapping | None, now: tuple[str, str]) -> tuple[str, str]:
    """The model in force at the beginning of the record: the first model switch's `from`
    ("name:version", its audit details), else the model in force now (none was switched)."""
    was = (first_switch or {}).get("from")
    if not isinstance(was, str) or ":" not in was:
        return now
    name, _, version = was.rpartition(":")
    return name, version


def unit_periods(units: Iterable[str], changes: Iterable[Change],
                 in_force: Mapping[str, tuple[str | None, float]],
                 model: tuple[str, str] | None = None) -> list[Period]:
    """Every unit's periods in time order (changes of one time in the order given), units in the
    order given; `in_force[unit]` is (point_id, threshold) now, the period of a unit that never
    changed, and `model` the model in force at the beginning of the record (`first_model`), that
    period's."""
    by_unit: dict[str, list[Change]] = {}
    for c in changes:
        by_unit.setdefault(c.unit, []).append(c)
    out: list[Period] = []
    for unit in units:
        mine = sorted(by_unit.get(unit, []), key=lambda c: c.at)
        if not mine:
            point, threshold = in_force[unit]
            out.append(Period(unit, point, threshold, None, None, model=model))
            continue
        out.append(Period(unit, mine[0].from_point, mine[0].from_threshold, None, mine[0].at, model=mine[0].from_model))
        for c, nxt in zip(mine, mine[1:] + [None]):
            out.append(Period(unit, c.to_point, c.to_threshold, c.at, None if nxt is None else nxt.at, c.by,
                              c.to_model, c.cause))
    return out
