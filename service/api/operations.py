"""Liveness, readiness and Prometheus metrics for the orchestrator. /health and /ready are open
(probes carry no key); /metrics needs a key with the `metrics` permission (roles monitor, admin):
unauthenticated, a flood of scrapes cut a feeder from 50 to 20 requests/s."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from service import schemas
from service.api.deps import API_KEY, Caller, ServicesDep, Viewer, check_key, errors
from service.auth import GRANTS
from service.storage.db import ping

router = APIRouter(tags=["operations"])


BEARER = HTTPBearer(auto_error=False, description="an API key as a bearer token (what a Prometheus scrape's "
                                                  "`authorization` sends); only /metrics takes it")


def metrics_reader(services: ServicesDep, x_api_key: Annotated[str | None, Security(API_KEY)] = None,
                   bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None) -> str:
    """The caller's role, if its key (X-API-Key, or a bearer token) holds the metrics permission."""
    return check_key(services.keys, x_api_key or (bearer.credentials if bearer else None), "metrics")


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
                    threshold=s.model.threshold, microbatch=s.model.batcher is not None, clock=s.clock.mode)
        try:
            ping(s.engine)
            body["database"] = "ok"
        except Exception as err:  # report, don't crash: this is what orchestrators poll
            body["database"] = f"unreachable: {type(err).__name__}"
        body["ready"] = body["database"] == "ok"
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/clock", response_model=schemas.ClockOut, responses=errors(401, 403, 422), dependencies=[Viewer])
def clock(services: ServicesDep):
    """The service clock that stamps actions: its mode (SEPSIS_CLOCK), its time now, the wall clock
    and the latest observation stored (the simulated clock's time)."""
    return services.records.clock_now()


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}, **errors(401, 403, 422)})
def metrics(services: ServicesDep, _role: Annotated[str, Depends(metrics_reader)]):
    for name, n in services.records.verdict_counts().items():
        services.metrics.alarms_by_outcome.labels(name).set(n)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/whoami", response_model=schemas.WhoAmI, responses=errors(401, 422))
def whoami(caller: Caller):
    """The calling key: its role and what the role may do, so a client shows only the actions the
    key may take (any valid key may ask; the secret itself is never returned)."""
    return schemas.WhoAmI(key_id=caller.id, key_name=caller.name, prefix=caller.prefix, role=caller.role,
                          permissions=sorted(GRANTS[caller.role]))
