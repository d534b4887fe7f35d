"""The FastAPI application: routes, auth, error bodies, metrics. State lives in the database."""
from __future__ import annotations

import datetime as dt
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import schemas
from service.auth import GRANTS, KeyVerifier, seed_keys
from service.config import Settings
from service.errors import Forbidden, Invalid, ServiceError, Unauthorized
from service.inference import Model
from service.ingest import Ingestor
from service.metrics import Metrics
from service.records import Records
from service.storage.db import make_engine, migrate, ping, sessions

log = logging.getLogger("service")


class Services:
    """Everything a request needs, built once at start-up."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.engine = make_engine(settings.db_url)
        if settings.migrate:
            migrate(self.engine)
        self.factory = sessions(self.engine)
        if settings.bootstrap_keys:
            seed_keys(self.factory, settings.bootstrap_keys)
        self.keys = KeyVerifier(self.factory, settings.key_cache_seconds)
        self.model = Model.load(settings, self.metrics)
        self.ingestor = Ingestor(self.engine, self.model, self.metrics)
        self.records = Records(self.factory, self.ingestor.locks)

    def close(self) -> None:
        self.model.close()
        self.engine.dispose()


def _field_errors(exc: RequestValidationError) -> list[dict]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        reason = str(err.get("msg", "")).removeprefix("Value error, ")
        # Our own validators report several named fields in one message: split them back out.
        parts = reason.split("; ") if err.get("type") == "value_error" else [reason]
        for part in parts:
            name, sep, why = part.partition(": ")
            if sep and (name.startswith(("vitals.", "onset_time")) or name in ("onset_time",)):
                prefix = [p for p in loc if p != "vitals"]
                out.append({"field": ".".join(prefix + [name]), "reason": why})
            else:
                out.append({"field": ".".join(loc) or "body", "reason": part})
    return out


def _install_error_handlers(app: FastAPI, metrics_of) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = _field_errors(exc)
        detail = "invalid request: " + "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError):
        body = {"detail": exc.detail}
        if exc.errors:
            body["errors"] = exc.errors
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); nothing was stored"}, status_code=500)


class _LatencyMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): request latency by route template and status."""

    def __init__(self, app, metrics_of):
        self.app = app
        self.metrics_of = metrics_of

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def _send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            metrics = self.metrics_of()
            if metrics is not None:
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                metrics.request_latency.labels(scope["method"], path, str(status["code"])).observe(time.perf_counter() - start)
                if status["code"] >= 400:
                    metrics.rejected.labels(str(status["code"])).inc()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    holder: dict[str, Services] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder["s"] = Services(settings)
        app.state.services = holder["s"]
        try:
            yield
        finally:
            holder.pop("s").close()

    app = FastAPI(title="Sepsis early-warning service",
                  description="Streams ICU observations through a CfC liquid network, one step per observation, "
                              "keeping each patient's model state between them. Authenticate with `X-API-Key`.",
                  version="1.0", lifespan=lifespan)
    metrics_of = lambda: holder["s"].metrics if "s" in holder else None  # noqa: E731
    app.add_middleware(_LatencyMiddleware, metrics_of=metrics_of)
    _install_error_handlers(app, metrics_of)

    def svc() -> Services:
        return holder["s"]

    def require(permission: str):
        def check(x_api_key: Annotated[str | None, Header(description="API key")] = None) -> str:
            if not x_api_key:
                raise Unauthorized("missing X-API-Key header")
            role = svc().keys.role_of(x_api_key)
            if role is None:
                raise Unauthorized("unknown or revoked API key")
            if permission not in GRANTS[role]:
                raise Forbidden(f"role {role!r} may not do this; it needs a key with the {permission!r} permission")
            return role
        return check

    Ingest = Depends(require("ingest"))
    Clinician = Depends(require("clinician"))
    Viewer = Depends(require("viewer"))
    e = {401: {"model": schemas.ApiError}, 403: {"model": schemas.ApiError}, 422: {"model": schemas.ApiError}}
    e409 = {**e, 409: {"model": schemas.ApiError}}
    e404 = {**e409, 404: {"model": schemas.ApiError}}

    @app.post("/predict", response_model=schemas.PredictResult, responses=e409, tags=["scoring"],
              dependencies=[Ingest])
    def predict(body: schemas.Observation):
        """Score one observation; the first observation of an unknown patient admits them."""
        return svc().ingestor.predict(body)

    @app.post("/predict/batch", response_model=schemas.BatchResponse, responses=e409, tags=["scoring"],
              dependencies=[Ingest])
    def predict_batch(body: schemas.BatchRequest):
        """Many observations (several patients, several hours): per patient in timestamp order, one
        model run per step across patients. All or nothing."""
        results, runs = svc().ingestor.predict_batch(body.observations)
        return schemas.BatchResponse(results=results, model_runs=runs)

    @app.post("/patients", response_model=schemas.PatientSummary, status_code=201, responses=e409,
              tags=["patients"], dependencies=[Ingest])
    def admit(body: schemas.Admission, response: Response):
        out, created = svc().records.admit(body)
        if not created:
            response.status_code = 200
        return out

    @app.get("/patients", response_model=list[schemas.PatientSummary], responses=e, tags=["patients"],
             dependencies=[Viewer])
    def patients(limit: Annotated[int, Query(ge=1, le=10000)] = 500, offset: Annotated[int, Query(ge=0)] = 0,
                 with_outcome: bool | None = None):
        return svc().records.list_patients(limit, offset, with_outcome)

    @app.get("/patients/{patient_id}", response_model=schemas.PatientDetail, responses=e404, tags=["patients"],
             dependencies=[Viewer])
    def patient(patient_id: str):
        """The stay's timeline: observations, risks, alarms, outcome."""
        return svc().records.patient(patient_id)

    @app.post("/patients/{patient_id}/outcome", response_model=schemas.PatientSummary, responses=e404,
              tags=["patients"], dependencies=[Clinician])
    def outcome(patient_id: str, body: schemas.OutcomeIn):
        return svc().records.record_outcome(patient_id, body)

    @app.get("/alarms", response_model=list[schemas.AlarmOut], responses=e, tags=["alarms"], dependencies=[Viewer])
    def alarms(state: Literal["open", "acknowledged", "snoozed", "resolved", "active"] | None = None,
               patient_id: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
               limit: Annotated[int, Query(ge=1, le=10000)] = 500):
        """Newest first. state=active means anything not resolved."""
        return svc().records.alarms(state, patient_id, _aware(since, "since"), _aware(until, "until"), limit)

    @app.post("/alarms/{alarm_id}/ack", response_model=schemas.AlarmOut, responses=e404, tags=["alarms"],
              dependencies=[Clinician])
    def ack(alarm_id: int, body: schemas.AckIn):
        out = svc().records.acknowledge(alarm_id, body)
        svc().metrics.alarm_events.labels(f"acknowledged_{body.reason}").inc()
        return out

    @app.post("/alarms/{alarm_id}/snooze", response_model=schemas.AlarmOut, responses=e404, tags=["alarms"],
              dependencies=[Clinician])
    def snooze(alarm_id: int, body: schemas.SnoozeIn):
        out = svc().records.snooze(alarm_id, body)
        svc().metrics.alarm_events.labels("snoozed").inc()
        return out

    @app.post("/alarms/{alarm_id}/resolve", response_model=schemas.AlarmOut, responses=e404, tags=["alarms"],
              dependencies=[Clinician])
    def resolve(alarm_id: int, body: schemas.ResolveIn):
        out = svc().records.resolve(alarm_id, body)
        svc().metrics.alarm_events.labels("resolved").inc()
        return out

    @app.get("/stats", response_model=schemas.Stats, responses=e, tags=["alarms"], dependencies=[Viewer])
    def stats(since: dt.datetime | None = None):
        """Alarm burden and quality; a true alarm falls 12 h before to 3 h after sepsis onset."""
        return svc().records.stats(_aware(since, "since"))

    @app.get("/health", tags=["operations"])
    def health():
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    def ready():
        s = holder.get("s")
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

    @app.get("/metrics", tags=["operations"])
    def metrics():
        s = svc()
        for name, n in s.records.verdict_counts().items():
            s.metrics.alarms_by_outcome.labels(name).set(n)
        return Response(s.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def _aware(value: dt.datetime | None, name: str) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise Invalid(f"{name}: needs a time zone (e.g. 2024-05-01T00:00:00Z)",
                      errors=[{"field": name, "reason": "needs a time zone"}])
    return value
