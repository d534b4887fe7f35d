"""Errors the API reports: each becomes a JSON body {"detail": message, "errors": [...]}."""
from __future__ import annotations


class ServiceError(Exception):
    status = 500

    def __init__(self, detail: str, errors: list[dict] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    status = 422


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403
