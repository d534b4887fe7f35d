"""A mapped bundle into the service through its existing paths (Records.admit, then
Ingestor.predict_batch), checked first so that a refused bundle stores nothing.

Admissions and observations are stored in separate transactions (those of the JSON API), so
everything that could refuse them is checked before the first write: times from the future, an
admission that differs from the stored one, observations out of order or conflicting with stored
ones (Ingestor.check, the same reads predict_batch makes). Only a concurrent writer changing the
same patient between the check and the write can still refuse the observations after the
admission was stored; the answer then says so, and the admission is the one that posting the
bundle again stores (a no-op the second time).
"""
from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select

from service import schemas
from service.clock import refuse_future
from service.errors import Conflict, Invalid
from service.fhir.mapping import Mapped
from service.fhir.outcome import Problem, Refusal
from service.inputs import UNIT_CODES
from service.storage.tables import Patient

UTC = dt.timezone.utc
_BATCH_ROW = re.compile(r"observations\[(\d+)\]: ")


def admission_fields(a: schemas.Admission) -> dict:
    """The columns Records.admit stores for an admission (and compares with a stored one)."""
    unit1, unit2 = UNIT_CODES[a.unit] if a.unit else (None, None)
    return dict(age=a.age, gender=None if a.gender is None else float(a.gender), unit1=unit1, unit2=unit2,
                hosp_adm_time=a.hosp_adm_time, icu_admit_time=a.icu_admit_time.astimezone(UTC))


def _conflicting_admissions(services, mapped: Mapped) -> list[Problem]:
    ids = [a.admission.patient_id for a in mapped.admissions]
    if not ids:
        return []
    with services.factory.begin() as s:
        rows = {r.id: r for r in s.scalars(select(Patient).where(Patient.id.in_(ids)))}
    out = []
    for a in mapped.admissions:
        row = rows.get(a.admission.patient_id)
        if row is None:
            continue
        fields = admission_fields(a.admission)
        if row.admitted_by != "admission" or any(getattr(row, k) != v for k, v in fields.items()):
            out.append(Problem(a.expression, f"patient {row.id} already exists (created by {row.admitted_by.replace('_', ' ')} "
                                             f"with {row.n_observations} observations) with another admission; an "
                                             "admission cannot be changed", a.label, "conflict"))
    return out


def store(services, mapped: Mapped) -> tuple[list[schemas.PredictResult], dict[str, bool]]:
    """(one result per group, in group order; patient id -> whether this bundle admitted them)."""
    limit = services.settings.max_batch_rows
    if len(mapped.observations) > limit:
        raise Refusal(413, [Problem("Bundle.entry", f"{len(mapped.observations)} scored observations (patient and time "
                                                    f"pairs); this service takes at most {limit} per request "
                                                    "(SEPSIS_MAX_BATCH_ROWS): split the bundle", "Bundle", "too-costly")])
    labels = {a.expression: a.label for a in mapped.admissions} | {g.times[0][0]: g.times[0][1] for g in mapped.groups}
    times = [(a.expression, a.admission.icu_admit_time) for a in mapped.admissions]
    times += [(g.times[0][0], g.ts) for g in mapped.groups]
    try:
        refuse_future(times, services.ingestor.future_margin)
    except Invalid as err:
        raise Refusal(422, [Problem(e["field"], e["reason"], labels.get(e["field"], ""), "business-rule")
                            for e in err.errors or []]) from None
    if conflicts := _conflicting_admissions(services, mapped):
        raise Refusal(409, conflicts)
    blamed: list[int] = []

    def where(i: int) -> str:
        blamed.append(i)
        return ""

    def refusal(err: Conflict | Invalid, status: int, note: str = "") -> Refusal:
        detail = err.detail
        if not blamed and (m := _BATCH_ROW.match(detail)):  # predict_batch's own prefix: observations[i]
            blamed.append(int(m.group(1)))
            detail = detail[m.end():]
        g = mapped.groups[blamed[-1]] if blamed and blamed[-1] < len(mapped.groups) else None
        expression, label = g.times[0] if g is not None else ("Bundle", "")
        return Refusal(status, [Problem(expression, detail + note, label, "conflict" if status == 409 else "invalid")])

    if mapped.observations:
        try:
            services.ingestor.check(mapped.observations, where)
        except Conflict as err:
            raise refusal(err, 409) from None
    created = {}
    for a in mapped.admissions:
        try:
            _, created[a.admission.patient_id] = services.admissions.admit(a.admission)
        except Conflict as err:
            raise Refusal(409, [Problem(a.expression, err.detail, a.label, "conflict")]) from None
    if not mapped.observations:
        return [], created
    note = " (a concurrent writer changed the patient after this bundle was checked: its admissions were stored, " \
           "its observations were not)" if mapped.admissions else ""
    blamed.clear()
    try:
        results, _ = services.ingestor.predict_batch(mapped.observations)
    except Conflict as err:
        raise refusal(err, 409, note) from None
    except Invalid as err:
        raise refusal(err, 422, note) from None
    return results, created
