"""A patient's outcome and discharge, each recorded once.

Outcome: none -> recorded; recorded -> the same outcome again returns it unchanged, any other a
409. Recording one resolves the patient's active alarms in the same transaction (`resolved_by` the
outcome's `recorded_by` or "system", the reason in `resolve_note`). The same outcome again with a
`discharged_at` the patient does not have yet records the discharge (a patient in treatment for
sepsis leaves the ward when the stay ends), once. Both are conditional updates (`... WHERE outcome
IS NULL`, `... WHERE discharged_at IS NULL`): of two racing requests the database admits one.

A discharge without an outcome (a FHIR Encounter that finished, `discharge`) records
`discharged_at` alone: the stay ended, whether with sepsis is not known (the outcome may follow;
an outcome with another `discharged_at` is then a 409). It resolves the active alarms as an outcome
does.
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
        unchanged = P.c.outcome.is_(None)
        if o.discharged_at:
            values["discharged_at"] = o.discharged_at.astimezone(UTC)
            # a discharge recorded without an outcome (a finished Encounter) is not moved by one
            unchanged &= P.c.discharged_at.is_(None) | (P.c.discharged_at == values["discharged_at"])
        by = audit.actor(who, o.recorded_by)
        with self.engine.begin() as conn:
            at = values["outcome_recorded_at"] = self.clock.now(conn)
            # The patient's version guards its model state only: an outcome does not bump it, so
            # recording one never forces a concurrent observation to retry.
            won = conn.execute(update(P).where(P.c.id == pid, unchanged).values(**values)).rowcount == 1
            row = conn.execute(select(P).where(P.c.id == pid)).first()
            if row is None:
                raise NotFound(f"no patient {pid!r}")
            if not won and row.outcome is None:
                raise Conflict(f"patient {pid} was already discharged at {row.discharged_at.isoformat()}; "
                               "a recorded discharge cannot be changed")
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
        return discharge(conn, row, discharged_at, at, by)


def discharge_problem(row, discharged_at: dt.datetime) -> str | None:
    """Why the patient's row cannot take this discharge, None when it can or has it already."""
    if row.discharged_at is not None and row.discharged_at != discharged_at:
        return (f"patient {row.id} was already discharged at {row.discharged_at.isoformat()}; "
                "a recorded discharge cannot be changed")
    if row.discharged_at is None and row.onset_time is not None and discharged_at < row.onset_time:
        return f"the discharge {discharged_at.isoformat()} precedes the recorded sepsis onset {row.onset_time.isoformat()}"
    if row.discharged_at is None and row.last_ts is not None and discharged_at < row.last_ts:
        return (f"patient {row.id} has observations stored up to {row.last_ts.isoformat()}, after the discharge "
                f"{discharged_at.isoformat()}")
    return None


def discharge(conn, row, discharged_at: dt.datetime, at: dt.datetime, by: dict, resolved_by: str = "system"):
    """Record the stay's end once (the same time again changes nothing, another is a Conflict) and
    resolve the patient's active alarms (none left when an outcome was recorded first); the row as
    it is now. `at`: the service clock's time of the action."""
    if row.discharged_at is not None:
        if row.discharged_at != discharged_at:
            raise Conflict(discharge_problem(row, discharged_at))
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
        unit = unit_name(row.unit1, row.unit2)
        details = {"outcome": row.outcome, "discharged_at": discharged_at}
        if row.outcome is None:  # an outcome resolved the alarms already
            details["resolved_alarms"] = alarms.resolve_for_outcome(
                conn, row.id, at, resolved_by, f"stay ended (discharged_at {discharged_at.isoformat()}); no outcome "
                                               "recorded", by, unit)
        audit.record(conn, action="discharge", actor=by, at=at, patient_id=row.id, unit=unit, details=details)
    return row
