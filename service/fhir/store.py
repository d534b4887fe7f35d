"""A mapped bundle into the service: its admissions and scored observations written by the one
write the JSON API uses (`Ingestor.write`), in one transaction, so a refused bundle stores nothing,
its admissions included. Every refusal names the entry it blames, by the index the write reports
(RowConflict, AdmissionConflict) or the element a time came from (Invalid).

An Encounter's transfers (locations taken after the admission) and discharge (finished, at
period.end) are checked against the stored patient inside the write, under its locks, before
anything is stored, and recorded right after it, in a second transaction under the same
patients' locks: a bundle they would refuse stores nothing, and sent again it changes nothing.
The Encounter's identity (service/patients/encounter.py) goes the same way: a new patient's row
is inserted with it; a stored patient's is checked inside the write (another Encounter is a 409
naming its id or identifier) and, when it lacks a part, filled in with the transfers. An
Encounter that is another patient's stored stay is a 409 naming its id or identifier, checked
inside the write too; a concurrent writer that stored it for another patient meanwhile makes the
insert fail on the unique index (the write starts over, and its check refuses) or the filling in
(refused the same way, though the write's observations are stored by then, as a transfer's).
"""
from __future__ import annotations

from sqlalchemy import select

from service import audit, schemas
from service.auth import KeyIdentity
from service.clock import refuse_future
from service.errors import AdmissionConflict, Conflict, Invalid, RowConflict
from service.fhir.mapping import Admitted, Mapped
from service.fhir.outcome import Problem, Refusal
from service.inputs import unit_name
from service.patients.admission import Admitting, conflict
from service.patients.encounter import columns, contradiction, fill_in, held_by_another, lacks
from service.patients.outcome import discharge, discharge_problem
from service.patients.transfer import transfer, transfer_problem
from service.storage.tables import Patient

P = Patient.__table__


class _Encounters(Admitting):
    """The bundle's admissions, and the transfers and discharges their Encounters carry, checked
    against the rows the write reads (under its locks)."""

    def __init__(self, admitted: list[Admitted]):
        # A feed's key: a conflicting admission is named, not how the stored patient came to be.
        super().__init__([a.admission for a in admitted], reveal=False)
        self.admitted = admitted
        self.filling: set[str] = set()  # stored patients whose row lacks a part of their Encounter's identity

    def check(self, rows: dict, conn) -> None:
        self.filling = set()  # the write checks again on each attempt, against the rows it read then
        for i, a in enumerate(self.admitted):
            row = rows.get(a.admission.patient_id)
            if a.encounter is not None and (found := held_by_another(conn, a.admission.patient_id, a.encounter)):
                part, why = found
                raise Refusal(409, [Problem(a.encounter_where[part], why, a.label, "conflict")])
            if row is None:
                continue
            admission = a.admission
            if a.unit_from_move:  # the Encounter names no location at the admission: it cannot differ there
                admission = admission.model_copy(update={"unit": unit_name(row.unit1, row.unit2)})
            if why := conflict(row, admission, self.reveal):
                raise AdmissionConflict(i, why + "; a transfer is a location with its period.start after the admission")
            for m in a.moves:
                if why := transfer_problem(row, m.at):
                    raise Refusal(409, [Problem(m.expression, why, a.label, "conflict")])
            if a.discharged_at is not None and (why := discharge_problem(row, a.discharged_at)):
                raise Refusal(409, [Problem(a.discharge_expression, why, a.label, "conflict")])
            if a.encounter is not None:
                if found := contradiction(row, a.encounter):
                    part, why = found
                    raise Refusal(409, [Problem(a.encounter_where[part], why, a.label, "conflict")])
                if lacks(row, a.encounter):
                    self.filling.add(a.admission.patient_id)

    def insert(self, conn, pid: str, now, **streaming) -> None:
        """A new patient's row, with its Encounter's identity."""
        a = self.admitted[self._by_id[pid][0]]
        super().insert(conn, pid, now, **streaming, **(columns(a.encounter) if a.encounter is not None else {}))


def _move_and_discharge(services, admitted: list[Admitted], filling: set[str], who: KeyIdentity | None) -> None:
    """Each Encounter's identity where the stored patient lacks a part of it (`filling`), its
    transfers, then its discharge, in one transaction under the patients' locks."""
    todo = [a for a in admitted if a.moves or a.discharged_at is not None or a.admission.patient_id in filling]
    if not todo:
        return
    by = audit.actor(who)
    with services.active.locks.hold([a.admission.patient_id for a in todo]), services.engine.begin() as conn:
        at = services.clock.now(conn)
        for a in todo:
            row = conn.execute(select(P).where(P.c.id == a.admission.patient_id)).first()
            if a.admission.patient_id in filling:
                try:
                    row = fill_in(conn, row, a.encounter)
                except Conflict as err:  # a concurrent writer stored another Encounter between the check and now
                    where = a.encounter_where[err.errors[0]["field"]]
                    raise Refusal(409, [Problem(where, err.detail, a.label, "conflict")]) from None
            for m in a.moves:
                row = transfer(conn, row, m.at, m.unit, m.bed, at, by)
            if a.discharged_at is not None:
                try:
                    discharge(conn, row, a.discharged_at, at, by)
                except (Conflict, Invalid) as err:  # a concurrent writer got there between the checks and now
                    raise Refusal(409, [Problem(a.discharge_expression, err.detail, a.label, "conflict")]) from None


def store(services, mapped: Mapped, who: KeyIdentity | None = None) -> tuple[list[schemas.PredictResult], dict[str, bool]]:
    """(one result per group, in group order; patient id -> whether this bundle admitted them)."""
    limit = services.settings.max_batch_rows
    if len(mapped.observations) > limit:
        raise Refusal(413, [Problem("Bundle.entry", f"{len(mapped.observations)} Observations with values; this "
                                                    f"service takes at most {limit} per request "
                                                    "(SEPSIS_MAX_BATCH_ROWS): split the bundle", "Bundle", "too-costly")])
    labels = {a.expression: a.label for a in mapped.admissions} | {g.times[0][0]: g.times[0][1] for g in mapped.groups}
    labels |= {m.expression: a.label for a in mapped.admissions for m in a.moves}
    labels |= {a.discharge_expression: a.label for a in mapped.admissions if a.discharged_at is not None}
    admitting = _Encounters(mapped.admissions)
    try:
        refuse_future([(m.expression, m.at) for a in mapped.admissions for m in a.moves]
                      + [(a.discharge_expression, a.discharged_at) for a in mapped.admissions],
                      services.ingestor.future_margin)
        results, _, created = services.ingestor.write(
            mapped.observations, admitting, time_field=lambda i: mapped.groups[i].times[0][0],
            admission_field=lambda i: mapped.admissions[i].expression, source="fhir")
    except Invalid as err:  # times from the future, named by their elements
        raise Refusal(422, [Problem(e["field"], e["reason"], labels.get(e["field"], ""), "business-rule")
                            for e in err.errors or []]) from None
    except RowConflict as err:
        expression, label = mapped.groups[err.index].times[0]
        raise Refusal(409, [Problem(expression, err.reason, label, "conflict")]) from None
    except AdmissionConflict as err:
        a = mapped.admissions[err.index]
        raise Refusal(409, [Problem(a.expression, err.reason, a.label, "conflict")]) from None
    except Conflict as err:  # the patients kept changing under concurrent writers
        raise Refusal(409, [Problem("Bundle", err.detail, "Bundle", "conflict")]) from None
    _move_and_discharge(services, mapped.admissions, admitting.filling, who)
    return results, created
