"""A patient's outcome and discharge, each recorded once.

Outcome: none -> recorded; recorded -> the same outcome again returns it unchanged, any other a
409. Recording one resolves the patient's active alarms in the same transaction (`resolved_by` the
outcome's `recorded_by` or "system", the reason in `resolve_note`). The same outcome again with a
`discharged_at` the patient does not have yet records the discharge (a patient in treatment for
sepsis leaves the ward when the stay ends), once. Both are conditional updates (`... WHERE outcome
IS NULL`, `... WHERE discharged_at IS NULL`): of two racing requests the database admits one.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from service import audit, schemas
from service.alarms import store as alarms
from service.auth import KeyIdentity
from service.clock import ServiceClock, refuse_future
from service.errors import Conflict, Invalid, NotFound
from service.inputs import unit_name
from service.patients.status import summary
from service.storage.tables import Patient

UTC = dt.timezone.utc
P = Patient.__table__


def outcome_reason(outcome: str, discharged_at: dt.datetime | None) -> str:
    reason = f"outcome recorded: {outcome}"
    if discharged_at is not None:
        reason += f"; stay ended (discharged_at {discharged_at.isoformat()})"
    return reason


class Outcomes:
    def __init__(self, engine: Engine, clock: ServiceClock, future_margin: dt.timedelta = dt.timedelta(hours=1)):
        self.engine = engine
        self.clock = clock
        self.future_margin = future_margin

    def record(self, pid: str, o: schemas.OutcomeIn, who: KeyIdentity | None = None) -> schemas.PatientSummary:
        refuse_future([("onset_time", o.onset_time), ("discharged_at", o.discharged_at)], self.future_margin)
        onset = o.onset_time.astimezone(UTC) if o.onset_time else None
        values = dict(outcome=o.outcome, onset_time=onset, outcome_recorded_by=o.recorded_by)
        if o.discharged_at:
            values["discharged_at"] = o.discharged_at.astimezone(UTC)
        by = audit.actor(who, o.recorded_by)
        with self.engine.begin() as conn:
            at = values["outcome_recorded_at"] = self.clock.now(conn)
            # The patient's version guards its model state only: an outcome does not bump it, so
            # recording one never forces a concurrent observation to retry.
            won = conn.execute(update(P).where(P.c.id == pid, P.c.outcome.is_(None)).values(**values)).rowcount == 1
            row = conn.execute(select(P).where(P.c.id == pid)).first()
            if row is None:
                raise NotFound(f"no patient {pid!r}")
            if not won and (row.outcome, row.onset_time) != (o.outcome, onset):
                raise Conflict(f"patient {pid} already has outcome {row.outcome!r}"
                               + (f" (onset {row.onset_time.isoformat()})" if row.onset_time else "")
                               + "; a recorded outcome cannot be changed")
            if not won and "discharged_at" in values:
                row = self._discharge_later(conn, row, values["discharged_at"], at, by)
            if won:
                # After the patient row's update, which holds its lock: an observation racing this
                # one either committed its alarm before (resolved here) or sees the outcome and
                # raises none (alarms.store.raise_alarms reads it after its own update of the row).
                unit = unit_name(row.unit1, row.unit2)
                reason = outcome_reason(o.outcome, values.get("discharged_at"))
                resolved = alarms.resolve_for_outcome(conn, pid, at, o.recorded_by or "system", reason, by, unit)
                audit.record(conn, action="outcome", actor=by, at=at, patient_id=pid, unit=unit,
                             details={"outcome": o.outcome, "onset_time": onset,
                                      "discharged_at": values.get("discharged_at"), "resolved_alarms": resolved})
            return summary(row, alarms.active_alarm_ids(conn, [pid]).get(pid))

    @staticmethod
    def _discharge_later(conn, row, discharged_at: dt.datetime, at: dt.datetime, by: dict):
        """The discharge of a patient whose outcome is recorded already; the row as it is now."""
        if row.discharged_at is not None:
            if row.discharged_at != discharged_at:
                raise Conflict(f"patient {row.id} was already discharged at {row.discharged_at.isoformat()}; "
                               "a recorded discharge cannot be changed")
            return row
        if row.onset_time is not None and discharged_at < row.onset_time:
            raise Invalid(f"discharged_at {discharged_at.isoformat()} precedes the recorded sepsis onset "
                          f"{row.onset_time.isoformat()}",
                          errors=[{"field": "discharged_at", "reason": "precedes the recorded sepsis onset"}])
        won = conn.execute(update(P).where(P.c.id == row.id, P.c.discharged_at.is_(None))
                           .values(discharged_at=discharged_at)).rowcount == 1
        row = conn.execute(select(P).where(P.c.id == row.id)).first()
        if not won and row.discharged_at != discharged_at:
            raise Conflict(f"patient {row.id} was discharged concurrently at {row.discharged_at.isoformat()}")
        if won:
            audit.record(conn, action="discharge", actor=by, at=at, patient_id=row.id,
                         unit=unit_name(row.unit1, row.unit2), details={"outcome": row.outcome, "discharged_at": discharged_at})
        return row
