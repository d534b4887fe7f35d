"""A stay's status on the ward and its summary, pure functions of a patients row."""
from __future__ import annotations

import datetime as dt

from service import schemas
from service.inputs import unit_name
from service.storage.tables import Patient

# Still on the ward: neither discharged nor discharged without sepsis (patient_status's rule).
ON_WARD = (Patient.discharged_at.is_(None)) & ((Patient.outcome.is_(None)) | (Patient.outcome != "no_sepsis"))


def patient_status(outcome: str | None, discharged_at: dt.datetime | None) -> str:
    """The ward's word for a stay: discharged once it ended (a no_sepsis outcome means discharged
    without sepsis), in treatment once sepsis is confirmed, else still monitored."""
    if discharged_at is not None or outcome == "no_sepsis":
        return "discharged"
    return "in_treatment" if outcome == "sepsis" else "monitoring"


def placed(row) -> tuple[str | None, str | None]:
    """(unit, bed) as the ward sees the patient: the latest transfer's, else the admission's. The
    model's Unit1/Unit2 stay the admission's whatever the transfers."""
    if row.transferred_at is not None:
        return row.ward_unit, row.ward_bed
    return unit_name(row.unit1, row.unit2), row.bed


def summary(row, active_alarm: int | None) -> schemas.PatientSummary:
    unit, bed = placed(row)
    return schemas.PatientSummary(
        patient_id=row.id, admitted_by=row.admitted_by, unit=unit,
        icu_admit_time=row.icu_admit_time, bed=bed,
        first_observation=row.first_ts, last_observation=row.last_ts, last_measured=row.last_measured,
        first_measured=row.first_measured, n_observations=row.n_observations,
        last_risk=row.last_risk, active_alarm_id=active_alarm, outcome=row.outcome, onset_time=row.onset_time,
        status=patient_status(row.outcome, row.discharged_at))


def admission_summary(a: schemas.Admission) -> schemas.PatientSummary:
    """What an admission alone says, without anything the monitoring added since: the answer to an
    ingest key posting a known admission again (a feed learns nothing clinical about the patient)."""
    return schemas.PatientSummary(
        patient_id=a.patient_id, admitted_by="admission", unit=a.unit, icu_admit_time=a.icu_admit_time,
        bed=a.bed, first_observation=None, last_observation=None, n_observations=0, outcome=None)
