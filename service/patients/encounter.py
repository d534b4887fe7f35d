"""The sender's Encounter of a patient's ICU stay, kept for the stay's RiskAssessments and Flags
to name (their `encounter`): its logical id and/or its first business identifier, as the ICU
Encounter of a FHIR bundle gave them (service/fhir/mapping.py reads them).

Known with the admission and fixed like it (an admission cannot be changed; another stay needs
another patient id): the same Encounter sent again changes nothing, and fills in a part the stored
one lacks (a patient stored before the service kept Encounters, or whose Encounter came first
without an id); an Encounter whose id, or whose identifiers, contradict the stored ones is another
stay, refused. An Encounter's identifiers are compared as a set: the same Encounter listing them
in another order is not another stay.

An Encounter is one stay of one patient: an Encounter whose id, or one of whose identifiers, is
another patient's stored Encounter is refused (`held_by_another`). The database holds the same
rule (migration 0013: unique indexes on the id, and on the kept identifier, system-less ones
unique by value), so of two writers racing to store one Encounter for two patients one fails
with an IntegrityError, which the callers answer as the same refusal.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

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


def held_by_another(conn, pid: str, e: StayEncounter) -> tuple[str, str] | None:
    """(the part another patient's stored Encounter shares with `e`: "id", or "identifier.J" for
    `e.identifiers[J]`; why) when `e` is the stored Encounter of a patient other than `pid`, None
    otherwise. The reason names not that patient: a feed's key may not learn who else is here."""
    same = []
    if e.id is not None:
        same.append(P.c.encounter_id == e.id)
    for system, value in e.identifiers:
        same.append(and_(P.c.encounter_system.is_(None) if system is None else P.c.encounter_system == system,
                         P.c.encounter_value == value))
    if not same:
        return None
    other = conn.execute(select(P.c.encounter_id, P.c.encounter_system, P.c.encounter_value)
                         .where(P.c.id != pid, or_(*same)).order_by(P.c.id).limit(1)).first()
    if other is None:
        return None
    if e.id is not None and other.encounter_id == e.id:
        return "id", _taken("id", pid, e)
    j = e.identifiers.index((other.encounter_system, other.encounter_value))
    return f"identifier.{j}", _taken("identifier", pid, e)


def _taken(part: str, pid: str, e: StayEncounter) -> str:
    what = f"Encounter/{e.id}" if part == "id" else "this Encounter's identifier"
    return (f"{what} is already the stay of another patient; an Encounter is one stay of one patient: "
            f"patient {pid}'s stay needs another Encounter")


def lacks(row, e: StayEncounter) -> bool:
    """Whether `e` gives a part of the Encounter that the patient's row does not hold yet."""
    return (row.encounter_id is None and e.id is not None) or (row.encounter_value is None and bool(e.identifiers))


def fill_in(conn, row, e: StayEncounter):
    """Store the parts of `e` the patient's row lacks, each a conditional update (`WHERE ... IS
    NULL`: of two racing writers the database admits one); the row as it is now. Conflict when a
    concurrent writer stored another Encounter first, for this patient or (the unique indexes
    refuse the update) for another."""
    if row.encounter_id is None and e.id is not None:
        _fill(conn, row.id, "id", e, P.c.encounter_id.is_(None), encounter_id=e.id)
    if row.encounter_value is None and e.identifiers:
        system, value = e.first
        _fill(conn, row.id, "identifier", e, P.c.encounter_value.is_(None), encounter_system=system,
              encounter_value=value)
    row = conn.execute(select(P).where(P.c.id == row.id)).first()
    if (found := contradiction(row, e)) is not None:
        part, why = found
        raise Conflict(why, errors=[{"field": part, "reason": why}])
    return row


def _fill(conn, pid: str, part: str, e: StayEncounter, unset, **values) -> None:
    """One conditional update; a unique index refusing it (another patient's stay stored this
    Encounter since the check) is the Conflict of `part` (the caller rolls the transaction back)."""
    try:
        conn.execute(update(P).where(P.c.id == pid, unset).values(**values))
    except IntegrityError:
        why = _taken(part, pid, e)
        raise Conflict(why, errors=[{"field": part, "reason": why}]) from None
