"""The FastAPI application: the services container's lifespan, error bodies, request metrics and the
routers of `service/api/` (one per resource). State lives in the database."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api import ROUTERS
from service.config import Settings
from service.errors import ServiceError, first_problems
from service.gate import Gate
from service.services import Services

log = logging.getLogger("service")


def _short(part, most: int = 40) -> str:
    """A location part as text, cut: a dict key in a location can be as long as the body."""
    text = str(part)
    return text if len(text) <= most else text[:most] + "..."


def _field_errors(exc: RequestValidationError):
    """{field, reason} for each problem, lazily: the handler keeps only the first ones."""
    for err in exc.errors():
        loc = [_short(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        if err.get("type") == "field_problems":  # several named fields in one error (schemas.field_problems)
            for name, why in err["ctx"]["problems"]:
                yield {"field": ".".join(loc + [name]), "reason": why}
        else:
            reason = str(err.get("msg", "")).removeprefix("Value error, ")
            yield {"field": ".".join(loc) or "body", "reason": reason}


def _problem_body(detail: str, problems: list[dict], total: int) -> dict:
    """{detail, errors, error_count}: the first problems in both, the count of all of them."""
    if problems:
        detail += ": " + "; ".join(f"{e['field']}: {e['reason']}" for e in problems)
        if total > len(problems):
            detail += f"; and {total - len(problems)} more ({total} problems in all)"
    return {"detail": detail, "errors": problems, "error_count": total}


def _unavailable(detail: str) -> JSONResponse:
    """503 for a database that cannot be reached or a pool that stays empty: the client may retry (a
    stored observation posted again returns its stored result, so a retry never doubles one)."""
    return JSONResponse({"detail": detail + "; retry shortly"}, status_code=503, headers={"Retry-After": "1"})


def _install_error_handlers(app: FastAPI, metrics_of) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems, total = first_problems(_field_errors(exc))
        return JSONResponse(_problem_body("invalid request", problems, total), status_code=422)

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError):
        body = {"detail": exc.detail}
        if exc.errors:
            body["errors"], body["error_count"] = first_problems(exc.errors)
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _pool_empty(request: Request, exc: SQLAlchemyTimeoutError):
        log.error("no database connection free on %s %s: %s", request.method, request.url.path, exc)
        return _unavailable("no database connection came free in time (every pooled connection was busy); "
                            "the request did not complete")

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError):
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, exc.orig)
        reason = str(exc.orig).strip().splitlines()[0][:200] if exc.orig else type(exc).__name__
        return _unavailable(f"the database is unavailable ({reason}); the request did not complete")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); nothing was stored"}, status_code=500)


# Labels are a bounded set: a method a client makes up is "other", a path no route has "unmatched"
# (957 keyless requests with made-up methods grew a scrape from 10 KB to 1.8 MB: bench/edge_refusals.py).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


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
                method = scope["method"] if scope["method"] in _METHODS else "other"
                metrics.request_latency.labels(method, path, str(status["code"])).observe(time.perf_counter() - start)
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
                  description="Streams ICU observations through the model's streaming step (the default: CfC liquid "
                              "networks blended with gradient-boosted trees), one step per observation, "
                              "keeping each patient's model state between them. Authenticate with `X-API-Key`.",
                  version="1.0", lifespan=lifespan)
    app.state.services = None

    def metrics_of():
        services = app.state.services
        return services.metrics if services is not None else None

    app.add_middleware(Gate, router=app.router, services_of=lambda: app.state.services, limit=settings.max_body_bytes)
    app.add_middleware(_LatencyMiddleware, metrics_of=metrics_of)
    _install_error_handlers(app, metrics_of)
    for router in ROUTERS:
        app.include_router(router)
    _publish_batch_limit(app, settings.max_batch_rows)
    return app


def _publish_batch_limit(app: FastAPI, rows: int) -> None:
    """The published schema says this deployment's row cap (the model's ceiling is the largest allowed)."""
    generate = app.openapi

    def openapi() -> dict:
        spec = generate()  # built once and cached by FastAPI; the edit below is idempotent
        spec["components"]["schemas"]["BatchRequest"]["properties"]["observations"]["maxItems"] = rows
        return spec

    app.openapi = openapi
