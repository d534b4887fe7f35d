"""The ward's patients: admission, listing, a stay's timeline, its outcome."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from service import schemas
from service.api.deps import ERRORS, ERRORS_404, ERRORS_409, Clinician, Ingest, ServicesDep, Viewer

router = APIRouter(tags=["patients"])


@router.post("/patients", response_model=schemas.PatientSummary, status_code=201, responses=ERRORS_409,
             dependencies=[Ingest])
def admit(body: schemas.Admission, response: Response, services: ServicesDep):
    out, created = services.records.admit(body)
    if not created:
        response.status_code = 200
    return out


@router.get("/patients", response_model=list[schemas.PatientSummary], responses=ERRORS, dependencies=[Viewer])
def patients(services: ServicesDep, limit: Annotated[int, Query(ge=1, le=10000)] = 500,
             offset: Annotated[int, Query(ge=0)] = 0, with_outcome: bool | None = None):
    return services.records.list_patients(limit, offset, with_outcome)


@router.get("/patients/{patient_id}", response_model=schemas.PatientDetail, responses=ERRORS_404,
            dependencies=[Viewer])
def patient(patient_id: str, services: ServicesDep):
    """The stay's timeline: observations, risks, alarms, outcome."""
    return services.records.patient(patient_id)


@router.post("/patients/{patient_id}/outcome", response_model=schemas.PatientSummary, responses=ERRORS_404,
             dependencies=[Clinician])
def outcome(patient_id: str, body: schemas.OutcomeIn, services: ServicesDep):
    return services.records.record_outcome(patient_id, body)
