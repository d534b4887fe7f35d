"""A patient's admission: who, the ICU stay's start and unit, stored once.

Posting the same admission again changes nothing; a different one is a 409 (an admission cannot be
changed). A patient first seen through an observation was admitted by it, and an admission posted
for them afterwards is a 409 too. The checks and the insert take the caller's connection, so the
FHIR path stores a bundle's admissions in the transaction that stores its observations.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from service import schemas
from service.alarms.store import active_alarm_ids
from service.clock import refuse_future
from service.errors import AdmissionConflict, Conflict
from service.inputs import DEMOGRAPHIC_FIELDS, UNIT_CODES
from service.patients.status import admission_summary, summary
from service.scoring.locks import StripedLocks
from service.storage.tables import Patient

UTC = dt.timezone.utc
P = Patient.__table__


def fields(a: schemas.Admission) -> dict:
    """The patients columns an admission sets (and compares with a stored one)."""
    unit1, unit2 = UNIT_CODES[a.unit] if a.unit else (None, None)
    return dict(age=a.age, gender=None if a.gender is None else float(a.gender), unit1=unit1, unit2=unit2,
                hosp_adm_time=a.hosp_adm_time, icu_admit_time=a.icu_admit_time.astimezone(UTC), bed=a.bed)


def conflict(row, a: schemas.Admission, reveal: bool) -> str | None:
    """Why `a` cannot be stored over the patient's row, None when it is the stored admission.
    `reveal`: whether the caller may read the patient (an ingest key learns only that the id is
    taken, not how it was created nor how many observations it has)."""
    if row.admitted_by == "admission" and all(getattr(row, k) == v for k, v in fields(a).items()):
        return None
    how = (f" (created by {row.admitted_by.replace('_', ' ')} with {row.n_observations} observations)"
           if reveal else "")
    return f"patient {a.patient_id} already exists{how}; an admission cannot be changed"


class Admissions:
    def __init__(self, engine: Engine, locks: StripedLocks, future_margin: dt.timedelta = dt.timedelta(hours=1)):
        self.engine = engine
        self.locks = locks  # the ingestor's: an admission cannot race a first observation in this process
        self.future_margin = future_margin

    def admit(self, a: schemas.Admission, reveal: bool = True) -> tuple[schemas.PatientSummary, bool]:
        """(summary, created). To a caller that may not read patients (`reveal` false), a repeat
        is answered with the admission as posted, nothing the monitoring added since."""
        refuse_future([("icu_admit_time", a.icu_admit_time)], self.future_margin)
        with self.locks.hold([a.patient_id]):
            # Twice at most: an insert that loses to another process's creation of the patient reads
            # the row it created, then answers as for any stored patient.
            for _ in range(2):
                try:
                    with self.engine.begin() as conn:
                        row = conn.execute(select(P).where(P.c.id == a.patient_id)).first()
                        if row is not None:
                            if why := conflict(row, a, reveal):
                                raise Conflict(why)
                            if not reveal:
                                return admission_summary(a), False
                            return summary(row, active_alarm_ids(conn, [row.id]).get(row.id)), False
                        Admitting([a]).insert(conn, a.patient_id, dt.datetime.now(UTC))
                        row = conn.execute(select(P).where(P.c.id == a.patient_id)).first()
                    return summary(row, None), True
                except IntegrityError:
                    continue
        raise Conflict(f"patient {a.patient_id} kept changing under concurrent writers; retry")


class Admitting:
    """Admissions to store in the transaction that scores observations (`Ingestor.write`; the FHIR
    path): checked against the rows the write reads, under its locks; a new patient's row is
    inserted with its first observations, so a refused request stores no admission."""

    def __init__(self, admissions: list[schemas.Admission], reveal: bool = False):
        self._by_id = {a.patient_id: (i, a) for i, a in enumerate(admissions)}
        self.reveal = reveal

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    def check(self, rows: dict, conn) -> None:
        """AdmissionConflict for the first admission that differs from its stored patient (`conn`:
        the write's, for a subclass that reads more)."""
        for pid, (i, a) in self._by_id.items():
            row = rows.get(pid)
            if row is not None and (why := conflict(row, a, self.reveal)):
                raise AdmissionConflict(i, why)

    def start(self, pid: str) -> tuple[dt.datetime, dict[str, float | None]] | None:
        """(ICU admission time, demographics) of a patient this request admits; None if it does not."""
        if pid not in self._by_id:
            return None
        f = fields(self._by_id[pid][1])
        return f.pop("icu_admit_time"), {k: f[k] for k in DEMOGRAPHIC_FIELDS.values()}

    def insert(self, conn, pid: str, now: dt.datetime, **streaming) -> None:
        """The new patient's row: its admission, and the streaming columns of its first observations."""
        values = dict(n_observations=0, version=0) | streaming
        conn.execute(insert(P).values(id=pid, created_at=now, admitted_by="admission",
                                      **fields(self._by_id[pid][1]), **values))
