"""Liveness, readiness and Prometheus metrics for the orchestrator."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import ServicesDep
from service.storage.db import ping

router = APIRouter(tags=["operations"])


@router.get("/health")
def health():
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "not ready (the same body): the database is unreachable",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}})
def ready(request: Request):
    s = request.app.state.services
    body = {"ready": False, "model": None, "model_version": None, "provider": None, "database": "unreachable"}
    if s is not None:
        body.update(model=s.model.name, model_version=s.model.version, provider=s.model.provider,
                    threshold=s.model.threshold, microbatch=s.model.batcher is not None)
        try:
            ping(s.engine)
            body["database"] = "ok"
        except Exception as err:  # report, don't crash: this is what orchestrators poll
            body["database"] = f"unreachable: {type(err).__name__}"
        body["ready"] = body["database"] == "ok"
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
def metrics(services: ServicesDep):
    for name, n in services.records.verdict_counts().items():
        services.metrics.alarms_by_outcome.labels(name).set(n)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
