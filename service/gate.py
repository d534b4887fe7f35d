"""What a request passes before any route reads its body: the API key, then the body's size.

FastAPI reads and parses a route's body before it solves the route's dependencies, the key check
among them: a keyless 15 MiB body took 0.47 s and 56 MiB of a worker's memory to get its 401, four
at once 123 MiB (bench/edge_refusals.py; 0.07 s and none now).
Here the key of a route that takes a body is checked first, with the route's own check
(`service.api.deps.check_key`, so the 401/403 bodies are the same), and only then is the body read,
up to the size limit. A route without a body never reads one, so none is read for it here either."""
from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from service.api.deps import VERIFIED, check_key, key_permission
from service.errors import ServiceError

log = logging.getLogger("service")


def _takes_body(route) -> bool:
    """What the OpenAPI publishes as a requestBody: a body parameter, or one declared by hand."""
    return getattr(route, "body_field", None) is not None or "requestBody" in (getattr(route, "openapi_extra", None) or {})


class Gate:
    """Pure ASGI middleware: 401/403 before a keyed route's body is received; 413 for a body over
    `limit` bytes before anything parses it (a declared Content-Length at once, a chunked body as
    soon as it passes the limit); below the limit the body is handed on unchanged."""

    def __init__(self, app, router, services_of, limit: int):
        self.app = app
        self.router = router
        self.services_of = services_of
        self.limit = limit
        self._routes: list | None = None  # (route, takes a body, the permission its key needs), in routing order

    def _route(self, scope):
        if self._routes is None:  # the routes are complete once requests come
            self._routes = [(r, _takes_body(r), key_permission(r)) for r in iter_route_contexts(self.router.routes)]
        for route, takes_body, permission in self._routes:
            if route.matches(scope)[0] == Match.FULL:
                return takes_body, permission
        return False, None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        takes_body, permission = self._route(scope)
        if not takes_body:
            return await self.app(scope, receive, send)
        services = self.services_of()
        if permission is not None and services is not None:
            # the first X-API-Key header, as the route's own check reads it
            key = next((v for k, v in scope.get("headers") or () if k == b"x-api-key"), b"").decode("latin-1")
            try:
                role = await run_in_threadpool(check_key, services.keys, key, permission)
            except ServiceError as refused:
                return await JSONResponse({"detail": refused.detail}, refused.status)(scope, receive, send)
            except Exception as err:  # the database is down: the route's own check answers (a 503)
                log.warning("key check before the body failed (%s); the route checks it", type(err).__name__)
            else:
                scope.setdefault("state", {})[VERIFIED] = (key, role)
        await self._limited(scope, receive, send)

    async def _limited(self, scope, receive, send):
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see it
                chunks = None
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send)
            if not message.get("more_body", False):
                break
        pending = [message if chunks is None else {"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send):
        reason = f"the body is larger than {self.limit} bytes (SEPSIS_MAX_BODY_BYTES)"
        await JSONResponse({"detail": f"request too large: {reason}", "errors": [{"field": "body", "reason": reason}],
                            "error_count": 1}, status_code=413)({"type": "http"}, None, send)
