"""A patient's move on the ward (a transfer: a FHIR Encounter's location taken after the ICU
admission): the unit and bed the ward sees change, audited with the transfer's time. The model's
Unit1/Unit2 stay the admission's: its training data fix them per stay.

Only a move later than the latest known one changes the place (a conditional update, `WHERE
transferred_at IS NULL OR transferred_at < moved_at`), so an Encounter sent again with its whole
location history changes nothing, and moves arriving out of order leave the latest in place.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from service import audit
from service.patients.status import placed
from service.storage.tables import Patient

P = Patient.__table__


def transfer_problem(row, moved_at: dt.datetime) -> str | None:
    """Why the patient's row cannot take a move at `moved_at`, None when it can."""
    if row.discharged_at is not None and moved_at > row.discharged_at:
        return (f"patient {row.id} was discharged at {row.discharged_at.isoformat()}; a transfer at "
                f"{moved_at.isoformat()} belongs to another stay")
    return None


def transfer(conn, row, moved_at: dt.datetime, unit: str | None, bed: str | None, at: dt.datetime, by: dict):
    """Move the patient to `unit`/`bed` as of `moved_at` unless a later move is known (or it is
    the place already); the row as it is now. `at`: the service clock's time of the action."""
    latest = row.transferred_at or row.icu_admit_time
    if (latest is not None and moved_at <= latest) or (row.transferred_at is not None and placed(row) == (unit, bed)):
        return row
    later = P.c.transferred_at.is_(None) | (P.c.transferred_at < moved_at)
    won = conn.execute(update(P).where(P.c.id == row.id, later)
                       .values(ward_unit=unit, ward_bed=bed, transferred_at=moved_at)).rowcount == 1
    if won:
        was_unit, was_bed = placed(row)
        audit.record(conn, action="transfer", actor=by, at=at, patient_id=row.id, unit=unit,
                     details={"transferred_at": moved_at, "from_unit": was_unit, "from_bed": was_bed,
                              "to_unit": unit, "to_bed": bed})
    return conn.execute(select(P).where(P.c.id == row.id)).first()
