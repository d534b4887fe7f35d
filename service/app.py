"""The FastAPI application: the services container's lifespan, error bodies, request metrics and the
routers of `service/api/` (one per resource). State lives in the database."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api import ROUTERS
from service.config import Settings
from service.errors import ServiceError
from service.services import Services

log = logging.getLogger("service")


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

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.services = Services(settings)
        try:
            yield
        finally:
            services, app.state.services = app.state.services, None
            services.close()

    app = FastAPI(title="Sepsis early-warning service",
                  description="Streams ICU observations through a CfC liquid network, one step per observation, "
                              "keeping each patient's model state between them. Authenticate with `X-API-Key`.",
                  version="1.0", lifespan=lifespan)
    app.state.services = None

    def metrics_of():
        services = app.state.services
        return services.metrics if services is not None else None

    app.add_middleware(_LatencyMiddleware, metrics_of=metrics_of)
    _install_error_handlers(app, metrics_of)
    for router in ROUTERS:
        app.include_router(router)
    return app
