"""Typed dependencies every router shares: the services container, the caller's role, error docs."""
from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Depends, Header, Request

from service import schemas
from service.auth import GRANTS
from service.errors import Forbidden, Invalid, Unauthorized
from service.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def require(permission: str):
    """A dependency that admits a key whose role holds `permission` and returns that role."""
    def check(services: ServicesDep,
              x_api_key: Annotated[str | None, Header(description="API key")] = None) -> str:
        if not x_api_key:
            raise Unauthorized("missing X-API-Key header")
        role = services.keys.role_of(x_api_key)
        if role is None:
            raise Unauthorized("unknown or revoked API key")
        if permission not in GRANTS[role]:
            raise Forbidden(f"role {role!r} may not do this; it needs a key with the {permission!r} permission")
        return role
    return check


Ingest = Depends(require("ingest"))
Clinician = Depends(require("clinician"))
Viewer = Depends(require("viewer"))

ERRORS = {401: {"model": schemas.ApiError}, 403: {"model": schemas.ApiError}, 422: {"model": schemas.ApiError}}
ERRORS_409 = {**ERRORS, 409: {"model": schemas.ApiError}}
ERRORS_404 = {**ERRORS_409, 404: {"model": schemas.ApiError}}


def aware(value: dt.datetime | None, name: str) -> dt.datetime | None:
    """A query timestamp must say its time zone: stored times are UTC."""
    if value is not None and value.tzinfo is None:
        raise Invalid(f"{name}: needs a time zone (e.g. 2024-05-01T00:00:00Z)",
                      errors=[{"field": name, "reason": "needs a time zone"}])
    return value
