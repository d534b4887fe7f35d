"""The sender's Encounter of a patient's ICU stay, kept for the stay's RiskAssessments and Flags
to name (their `encounter`): its logical id and/or its first business identifier, as the ICU
Encounter of a FHIR bundle gave them (service/fhir/mapping.py reads them).

Known with the admission and fixed like it (an admission cannot be changed; another stay needs
another patient id): the same Encounter sent again changes nothing, and fills in a part the stored
one lacks (a patient stored before the service kept Encounters, or whose Encounter came first
without an id); an Encounter whose id, or whose identifiers, contradict the stored ones is another
stay, refused. An Encounter's identifiers are compared as a set: the same Encounter listing them
in another order is not another stay.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from service.errors import Conflict
from service.storage.tables import Patient

P = Patient.__table__
# What the columns hold; longer is refused when read (naming the element), never cut.
ID_MAX = P.c.encounter_id.type.length
SYSTEM_MAX = P.c.encounter_system.type.length
VALUE_MAX = P.c.encounter_value.type.length


@dataclass(frozen=True)
class StayEncounter:
    id: str | None  # the Encounter's logical id
    identifiers: tuple[tuple[str | None, str], ...] = ()  # (system, value) of each identifier with a value, in order

    @property
    def first(self) -> tuple[str | None, str | None]:
        """The identifier kept: the first with a value."""
        return self.identifiers[0] if self.identifiers else (None, None)


def columns(e: StayEncounter) -> dict:
    """The patients columns of a new patient's Encounter."""
    system, value = e.first
    return dict(encounter_id=e.id, encounter_system=system, encounter_value=value)


def contradiction(row, e: StayEncounter) -> tuple[str, str] | None:
    """(the part that differs, "id" or "identifier"; why) when `e` cannot be the Encounter of the
    patient's stored stay, None when it can. The reason names neither stored value: like a
    conflicting admission's, it is answered to a feed's key."""
    if row.encounter_id is not None and e.id is not None and row.encounter_id != e.id:
        return "id", (f"patient {row.id}'s stay is another Encounter (another id): Encounter/{e.id} is another stay, "
                      "which needs another patient id")
    if row.encounter_value is not None and e.identifiers and (row.encounter_system, row.encounter_value) not in e.identifiers:
        return "identifier", (f"patient {row.id}'s stay is another Encounter (its identifier is none of this "
                              "Encounter's): another stay needs another patient id")
    return None


def lacks(row, e: StayEncounter) -> bool:
    """Whether `e` gives a part of the Encounter that the patient's row does not hold yet."""
    return (row.encounter_id is None and e.id is not None) or (row.encounter_value is None and bool(e.identifiers))


def fill_in(conn, row, e: StayEncounter):
    """Store the parts of `e` the patient's row lacks, each a conditional update (`WHERE ... IS
    NULL`: of two racing writers the database admits one); the row as it is now. Conflict when a
    concurrent writer stored another Encounter first."""
    if row.encounter_id is None and e.id is not None:
        conn.execute(update(P).where(P.c.id == row.id, P.c.encounter_id.is_(None)).values(encounter_id=e.id))
    if row.encounter_value is None and e.identifiers:
        system, value = e.first
        conn.execute(update(P).where(P.c.id == row.id, P.c.encounter_value.is_(None))
                     .values(encounter_system=system, encounter_value=value))
    row = conn.execute(select(P).where(P.c.id == row.id)).first()
    if (found := contradiction(row, e)) is not None:
        part, why = found
        raise Conflict(why, errors=[{"field": part, "reason": why}])
    return row
