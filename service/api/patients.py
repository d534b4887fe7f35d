"""The ward's patients: admission, listing, a stay's timeline, its outcome."""
from __future__ import annotations

from fastapi import APIRouter, Response

from service import schemas
from service.api.deps import (ERRORS, ERRORS_404, ERRORS_404_GET, ERRORS_409, Clinician, Ingest, Limit, Offset,
                              PatientPath, ServicesDep, Viewer)

router = APIRouter(tags=["patients"])


@router.post("/patients", response_model=schemas.PatientSummary, status_code=201, responses=ERRORS_409,
             dependencies=[Ingest])
def admit(body: schemas.Admission, response: Response, services: ServicesDep):
    out, created = services.records.admit(body)
    if not created:
        response.status_code = 200
    return out


@router.get("/patients", response_model=list[schemas.PatientSummary], responses=ERRORS, dependencies=[Viewer])
def patients(services: ServicesDep, limit: Limit = 500, offset: Offset = 0, with_outcome: bool | None = None):
    return services.records.list_patients(limit, offset, with_outcome)


@router.get("/patients/{patient_id}", response_model=schemas.PatientDetail, responses=ERRORS_404_GET,
            dependencies=[Viewer])
def patient(patient_id: PatientPath, services: ServicesDep):
    """The stay's timeline: observations, risks, alarms, outcome."""
    return services.records.patient(patient_id)


@router.post("/patients/{patient_id}/outcome", response_model=schemas.PatientSummary, responses=ERRORS_404,
             dependencies=[Clinician])
def outcome(patient_id: PatientPath, body: schemas.OutcomeIn, services: ServicesDep):
    return services.records.record_outcome(patient_id, body)
