"""Typed dependencies every router shares: the services container, the caller's role, error docs."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request, Security
from fastapi.security import APIKeyHeader

from service import schemas
from service.auth import GRANTS, KeyIdentity, identify
from service.errors import Forbidden, TooLarge, Unauthorized
from service.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


# Published as the API's security scheme (not a plain header parameter), so that clients and the
# docs' "Authorize" button know every keyed route takes it.
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key; its role decides what it may do")


# Where service/gate.py leaves the (key, role) it checked before the body was read.
VERIFIED = "verified_key"


def check_key(verifier, key: str | None, permission: str) -> str:
    """The role of `key` if it holds `permission`; else Unauthorized (401) or Forbidden (403)."""
    if not key:
        raise Unauthorized("missing X-API-Key header")
    role = verifier.role_of(key)
    if role is None:
        raise Unauthorized("unknown or revoked API key")
    if permission not in GRANTS[role]:
        raise Forbidden(f"role {role!r} may not do this; it needs a key with the {permission!r} permission")
    return role


def require(permission: str):
    """A dependency that admits a key whose role holds `permission` and returns that role."""
    def check(request: Request, services: ServicesDep,
              x_api_key: Annotated[str | None, Security(API_KEY)] = None) -> str:
        verified = request.scope.get("state", {}).get(VERIFIED)
        if verified and verified[0] == x_api_key:
            return verified[1]
        return check_key(services.keys, x_api_key, permission)
    check.permission = permission
    return check


def key_permission(route) -> str | None:
    """The permission a route's key needs (a `require` among its dependencies), None for an open route."""
    pending = list(getattr(getattr(route, "dependant", None), "dependencies", ()))
    while pending:
        dep = pending.pop()
        if hasattr(dep.call, "permission"):
            return dep.call.permission
        pending += dep.dependencies
    return None


Ingest = Depends(require("ingest"))
Clinician = Depends(require("clinician"))
Viewer = Depends(require("viewer"))


def caller_identity(services: ServicesDep, x_api_key: Annotated[str | None, Security(API_KEY)] = None) -> KeyIdentity:
    """Which stored key made the request, for the audit. Use it beside a role check (`Clinician`,
    ...), which answers 401/403 first; a key revoked between the two is a 401 here."""
    key = identify(services.factory, x_api_key) if x_api_key else None
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    return key


# The caller's key (id, role, name, prefix): an action's audit row names it as the actor.
Caller = Annotated[KeyIdentity, Depends(caller_identity)]

_WHY = {400: "the body could not be read", 401: "missing, unknown or revoked API key",
        403: "the key's role may not do this", 404: "no such patient or alarm",
        409: "conflicts with what is stored (see detail); nothing was changed",
        413: "larger than this service accepts: the body (SEPSIS_MAX_BODY_BYTES) or a batch's rows "
             "(SEPSIS_MAX_BATCH_ROWS)",
        422: "invalid input: `errors` names each field and the reason (the first ones; `error_count` says how many)"}


def errors(*codes: int) -> dict:
    """A route's `responses=`: every error status it can answer, each with the ApiError body."""
    return {code: {"model": schemas.ApiError, "description": _WHY[code]} for code in sorted(codes)}


# A route with a key and parameters answers 401, 403 and 422; one with a body also 400 (unreadable)
# and 413 (the body limit in app.py); 409 and 404 where the handler says so.
ERRORS = errors(401, 403, 422)
ERRORS_404_GET = errors(401, 403, 404, 422)
ERRORS_409 = errors(400, 401, 403, 409, 413, 422)
ERRORS_404 = errors(400, 401, 403, 404, 409, 413, 422)

# Path and query parameters, bounded like the bodies (schemas.py).
AlarmId = Annotated[int, Path(ge=1, le=schemas.MAX_ID, description="an alarm's id")]
PatientPath = Annotated[str, Path(min_length=1, max_length=64, pattern=schemas.PATIENT_ID_PATTERN)]
PatientQuery = Annotated[str | None, Query(min_length=1, max_length=64, pattern=schemas.PATIENT_ID_PATTERN)]
SinceQuery = Annotated[schemas.Timestamp | None, Query(description=f"only from this time on; {schemas.TIME_RANGE}")]
UntilQuery = Annotated[schemas.Timestamp | None, Query(description=f"only before this time; {schemas.TIME_RANGE}")]
Limit = Annotated[int, Query(ge=1, le=10000)]
Offset = Annotated[int, Query(ge=0, le=schemas.MAX_ID)]


async def batch_within_limit(request: Request, services: ServicesDep) -> None:
    """Refuses a batch over the configured row cap before its rows are validated one by one: one
    request of 20,000 rows held every other patient's observation for seconds."""
    limit = services.settings.max_batch_rows
    try:
        body = await request.json()  # parsed once already for the body parameter: this is the cached value
    except ValueError:
        return  # not JSON: the body's validation says so
    rows = body.get("observations") if isinstance(body, dict) else None
    if isinstance(rows, list) and len(rows) > limit:
        raise TooLarge(f"observations: {len(rows)} rows; this service takes at most {limit} per request "
                       "(SEPSIS_MAX_BATCH_ROWS): split the batch",
                       errors=[{"field": "observations", "reason": f"at most {limit} rows per request"}])
