"""Each unit's operating point: which of the model's measured thresholds its alarms are raised at.

The model ships its table (`models/<name>/<version>/operating_points.json`, read by
`models.operating_points.load_operating_points`). An admin chooses a point per unit (MICU, SICU,
other) with `PUT /units/{unit}/operating-point`; the choice is a row of `unit_operating_points`,
written with its audit event (action `threshold_change`) in one transaction. A unit without a row
alarms at the table's `default_point`, or the model card's threshold when the table names none (or
the model ships no table). A patient whose unit was never recorded counts as `other`.

Each unit's alarm policy (models.alarm_policy: the lockout after an acknowledgement, the relative
rise, the tiers) is the table's `alarm_policy` at the unit's threshold. A model whose table
measured none gets a 12 h lockout and no relative rise, the shape chosen on validation for
sepsis-cfc 3 (docs/alarms.md): an acknowledgement never silences a patient for good.

The threshold in force is resolved against the loaded model: a choice made on this model keeps its
stored threshold; one made on another model (before an upgrade) takes the loaded model's point of
the same id, or the card's threshold when the loaded model has no such point.
"""
from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from models.alarm_policy import AlarmPolicy
from models.operating_points import OperatingPoints, load_operating_points, risk_in_words
from service import audit
from service.errors import Conflict, Invalid
from service.inputs import unit_name
from service.storage.tables import UnitOperatingPoint

UNITS = ("MICU", "SICU", "other")
UNMEASURED_LOCKOUT_HOURS = 12.0
U = UnitOperatingPoint.__table__
_READ = select(U)


def unit_of(unit1: float | None, unit2: float | None) -> str:
    """The unit whose threshold applies: the recorded one, `other` when none was recorded."""
    return unit_name(unit1, unit2) or "other"


@dataclass(frozen=True)
class UnitThreshold:
    unit: str
    threshold: float
    point_id: str | None          # None: the model card's threshold (no choice made)
    label: str | None
    chosen_by: str | None = None
    chosen_at: dt.datetime | None = None
    note: str | None = None
    chosen_on: str | None = None  # "<model> <version>" the choice was made on
    policy: AlarmPolicy | None = None  # the unit's alarm policy at `threshold` (UnitPoints.policy)


def policy_at(points: OperatingPoints | None, threshold: float) -> AlarmPolicy:
    """The alarm policy of a unit alarming at `threshold`: the table's, else the lockout alone."""
    if points is not None and points.alarm_policy is not None:
        return points.alarm_policy.at(threshold)
    return AlarmPolicy(threshold, rise_factor=None, lockout_hours=UNMEASURED_LOCKOUT_HOURS)


class UnitPoints:
    """The loaded model's operating points and the units' choices. `model_of()` returns the model in
    force (read at each call, so a model switch takes effect on the next request)."""

    def __init__(self, model_of, engine: Engine, clock):
        self.model_of = model_of
        self.engine = engine
        self.clock = clock  # stamps a choice (service/clock.py)
        self._tables: dict[str, OperatingPoints | None] = {}
        self._lock = threading.Lock()

    def table(self, model=None) -> OperatingPoints | None:
        """The model's operating points (read once per model folder), None when it ships none."""
        model = model or self.model_of()
        key = str(model.runtime.model_dir)
        with self._lock:
            if key not in self._tables:
                self._tables[key] = load_operating_points(model.runtime.model_dir)
            return self._tables[key]

    def _resolve(self, row, model, points: OperatingPoints | None) -> UnitThreshold | None:
        if row is None:
            return None
        threshold, label = None, None
        point = next((p for p in points.points if p.id == row.point_id), None) if points else None
        if (row.model_name, row.model_version) == (model.name, model.version):
            threshold = row.threshold
        elif point is not None:
            threshold = point.threshold
        label = point.label if point is not None else None
        if threshold is None:
            return None  # chosen on another model, with no such point now: the card's threshold
        return UnitThreshold(row.unit, float(threshold), row.point_id, label, row.chosen_by, row.chosen_at, row.note,
                             f"{row.model_name} {row.model_version}", policy_at(points, float(threshold)))

    @staticmethod
    def _default(unit: str, model, points: OperatingPoints | None) -> UnitThreshold:
        """A unit that chose nothing: the table's default point, else the model card's threshold."""
        point = points.default() if points is not None else None
        if point is None:
            return UnitThreshold(unit, model.threshold, None, "the model card's threshold",
                                 policy=policy_at(points, model.threshold))
        return UnitThreshold(unit, point.threshold, point.id, point.label, policy=policy_at(points, point.threshold))

    def thresholds(self, conn: Connection, model=None) -> dict[str, UnitThreshold]:
        """Every unit's threshold in force (one read of the small table)."""
        model = model or self.model_of()
        points = self.table(model)
        rows = {r.unit: r for r in conn.execute(_READ)}
        out = {}
        for unit in UNITS:
            chosen = self._resolve(rows.get(unit), model, points)
            out[unit] = chosen or self._default(unit, model, points)
        return out

    def words(self, risk: float | None, threshold: float, model=None) -> str | None:
        """The risk in words at the threshold in force (models.operating_points.risk_in_words)."""
        if risk is None:
            return None
        return risk_in_words(self.table(model), min(max(float(risk), 0.0), 1.0), threshold)

    def choose(self, conn: Connection, unit: str, point_id: str, by: str, note: str | None, actor: dict,
               at: dt.datetime) -> UnitThreshold:
        """Set `unit`'s point inside the caller's transaction, with its audit event. 422 naming the
        field for an unknown unit or point."""
        if unit not in UNITS:
            raise Invalid(f"invalid request: unit: must be one of {', '.join(UNITS)}",
                          errors=[{"field": "unit", "reason": f"must be one of {', '.join(UNITS)}"}])
        model = self.model_of()
        points = self.table(model)
        if points is None:
            reason = (f"model {model.name} {model.version} ships no operating points (operating_points.json), "
                      "so none can be chosen")
            raise Invalid(f"invalid request: point_id: {reason}", errors=[{"field": "point_id", "reason": reason}])
        point = next((p for p in points.points if p.id == point_id), None)
        if point is None:
            reason = f"{point_id!r} is not an operating point of {model.name} {model.version}; one of " + \
                     ", ".join(p.id for p in points.points)
            raise Invalid(f"invalid request: point_id: {reason}", errors=[{"field": "point_id", "reason": reason}])
        before = self.thresholds(conn, model)[unit]
        values = dict(point_id=point.id, threshold=point.threshold, model_name=model.name, model_version=model.version,
                      chosen_by=by, chosen_at=at, note=note)
        if conn.execute(update(U).where(U.c.unit == unit).values(**values)).rowcount != 1:
            try:
                with conn.begin_nested():
                    conn.execute(insert(U).values(unit=unit, **values))
            except IntegrityError:
                raise Conflict(f"unit {unit}'s operating point was chosen concurrently; retry") from None
        audit.record(conn, action="threshold_change", actor={**actor, "person": by}, at=at, unit=unit, note=note,
                     details={"model": model.name, "model_version": model.version,
                              "from": {"point_id": before.point_id, "threshold": before.threshold},
                              "to": {"point_id": point.id, "threshold": point.threshold}})
        return UnitThreshold(unit, point.threshold, point.id, point.label, by, at, note, f"{model.name} {model.version}",
                             policy_at(points, point.threshold))

    def record_switch(self, conn: Connection, old, new, actor: dict, at: dt.datetime, note: str | None) -> list[str]:
        """Inside a model switch's transaction: a `threshold_change` audit row for each unit whose
        threshold in force the switch changes (a unit at the model's default point, or a choice
        whose point the new model measured at another threshold), so GET /stats/periods opens a
        period there and never adds the two thresholds' figures; a unit whose threshold stays gets
        none. Returns the units changed. Nothing but the audit is written: the choices stay as
        stored and are resolved against the model in force (`_resolve`)."""
        before, after = self.thresholds(conn, old), self.thresholds(conn, new)
        changed = [u for u in UNITS if before[u].threshold != after[u].threshold]
        for unit in changed:
            b, a = before[unit], after[unit]
            audit.record(conn, action="threshold_change", actor=actor, at=at, unit=unit, note=note,
                         details={"cause": "model_switch", "model": new.name, "model_version": new.version,
                                  "from": {"point_id": b.point_id, "threshold": b.threshold, "model": old.name,
                                           "model_version": old.version},
                                  "to": {"point_id": a.point_id, "threshold": a.threshold, "model": new.name,
                                         "model_version": new.version}})
        return changed

    def in_force(self) -> dict[str, UnitThreshold]:
        """Every unit's threshold in force now (its own read)."""
        with self.engine.begin() as conn:
            return self.thresholds(conn)

    def choose_now(self, unit: str, point_id: str, by: str, note: str | None, actor: dict) -> dict[str, UnitThreshold]:
        """`choose` in its own transaction, stamped by the service clock; every unit's threshold after it."""
        with self.engine.begin() as conn:
            self.choose(conn, unit, point_id, by, note, actor, self.clock.now(conn))
            return self.thresholds(conn)
