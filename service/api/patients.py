"""The ward's patients: admission, listing, a stay's timeline, its outcome, an admin's correction."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, Security

from service import schemas
from service.api.deps import (API_KEY, ERRORS, ERRORS_404, ERRORS_404_GET, ERRORS_409, Caller, Clinician, Ingest,
                              Limit, Offset, PatientPath, ServicesDep, Viewer, errors, require)
from service.auth import GRANTS, identify

router = APIRouter(tags=["patients"])


@router.post("/patients", response_model=schemas.PatientSummary, status_code=201,
             responses={**ERRORS_409, 200: {"model": schemas.PatientSummary,
                                            "description": "the same admission posted again: nothing changed"}},
             dependencies=[Ingest])
def admit(body: schemas.Admission, response: Response, services: ServicesDep, role: Annotated[str, Ingest]):
    """Posting the same admission again changes nothing (200); another one is a 409. To a key that
    may not read patients (role ingest) a repeat answers the admission as posted, nothing the
    monitoring added since, and a 409 does not say how the patient was created."""
    out, created = services.admissions.admit(body, reveal="viewer" in GRANTS[role])
    if not created:
        response.status_code = 200
    return out


@router.get("/patients", response_model=list[schemas.PatientSummary], responses=ERRORS, dependencies=[Viewer])
def patients(services: ServicesDep, limit: Limit = 500, offset: Offset = 0, with_outcome: bool | None = None,
             order: Annotated[Literal["id", "alarms_first"], Query(
                 description="id (the default): by patient id. alarms_first: patients with an open (unacknowledged) "
                             "alarm, then with an acknowledged or snoozed one, then the rest; each group by current "
                             "risk, highest first")] = "id"):
    return services.records.list_patients(limit, offset, with_outcome, order)


@router.get("/ward", response_model=schemas.Ward, responses=ERRORS, dependencies=[Viewer])
def ward(services: ServicesDep):
    """The ward's counts: patients by status; active alarms of patients still on the ward by state
    (the same alarms GET /alarms?state=open|acknowledged|snoozed lists); the service clock."""
    return services.records.ward()


@router.get("/patients/{patient_id}", response_model=schemas.PatientDetail, responses=ERRORS_404_GET,
            dependencies=[Viewer])
def patient(patient_id: PatientPath, services: ServicesDep):
    """The stay's timeline: observations, risks, alarms, outcome."""
    return services.records.patient(patient_id)


@router.get("/patients/{patient_id}/messages", response_model=list[schemas.MessageOut], responses=ERRORS_404_GET,
            dependencies=[Viewer])
def messages(patient_id: PatientPath, services: ServicesDep, limit: Limit = 500, offset: Offset = 0):
    """Every value of the stay as it was received, in arrival order (the hourly timeline is derived
    from them): its status, the hour it was filed in, the sender's id and when it arrived."""
    return services.records.messages(patient_id, limit, offset)


@router.post("/patients/{patient_id}/outcome", response_model=schemas.PatientSummary, responses=ERRORS_404,
             dependencies=[Clinician])
def outcome(patient_id: PatientPath, body: schemas.OutcomeIn, services: ServicesDep, caller: Caller):
    """Recorded once: the same outcome again returns it unchanged; another (even racing) is a 409.
    The same outcome with a `discharged_at` the patient does not have yet records the discharge
    (a patient in treatment for sepsis leaves the ward when the stay ends), once.
    Resolves the patient's active alarm; audited (the key and `recorded_by`)."""
    return services.outcomes.record(patient_id, body, caller)


@router.delete("/patients/{patient_id}/observations", response_model=schemas.CorrectionOut,
               responses=errors(401, 403, 404, 409, 422), dependencies=[Depends(require("admin"))])
def remove_observations_after(
        patient_id: PatientPath, services: ServicesDep,
        after: Annotated[schemas.Timestamp, Query(description="observations strictly after this time are removed")],
        by: Annotated[schemas.Text(128, 1), Query(description="who asks for the correction")],
        reason: Annotated[schemas.Text(1000, 3), Query(description="why: kept in the audit record")],
        x_api_key: Annotated[str | None, Security(API_KEY)] = None):
    """Admin only, audited: remove the patient's observations after `after` (e.g. one stamped years
    ahead, which made every real observation "earlier than the last stored") and the alarms they
    raised, and rebuild the patient's model state from the observations that remain, so the next
    observation is scored as if the removed ones had never been posted. Everything at or before
    `after` stays as stored; the removed rows, who, which key, when and why go to the audit table
    `corrections`. 409 when nothing lies after `after`."""
    out = services.corrections.remove_after(patient_id, after, by, reason, identify(services.factory, x_api_key))
    return schemas.CorrectionOut(**vars(out))
