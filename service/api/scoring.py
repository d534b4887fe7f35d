"""POST /predict and /predict/batch: observations in, risks out."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from service import schemas
from service.api.deps import ERRORS_409, Ingest, ServicesDep, batch_within_limit

router = APIRouter(tags=["scoring"], dependencies=[Ingest])


@router.post("/predict", response_model=schemas.PredictResult, responses=ERRORS_409)
def predict(body: schemas.Observation, services: ServicesDep):
    """Score one observation; the first observation of an unknown patient admits them."""
    return services.ingestor.predict(body)


@router.post("/predict/batch", response_model=schemas.BatchResponse, responses=ERRORS_409,
             dependencies=[Depends(batch_within_limit)])
def predict_batch(body: schemas.BatchRequest, services: ServicesDep):
    """Many observations (several patients, several hours): per patient in timestamp order, one
    model run per step across patients. All or nothing."""
    results, runs = services.ingestor.predict_batch(body.observations)
    return schemas.BatchResponse(results=results, model_runs=runs)
