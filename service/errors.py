"""Errors the API reports: each becomes a JSON body {"detail": message, "errors": [...]}."""
from __future__ import annotations

from collections.abc import Iterable

# A body is answered with its first problems and how many there were: one post of 600,000 unknown
# names once produced a 465 MB answer.
MAX_REPORTED = 20


def first_problems(problems: Iterable[dict], n: int = MAX_REPORTED) -> tuple[list[dict], int]:
    """The first `n` problems and the count of all of them (the rest are counted, not kept)."""
    kept, total = [], 0
    for problem in problems:
        if total < n:
            kept.append(problem)
        total += 1
    return kept, total


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


class TooLarge(ServiceError):
    status = 413


class Stale(Exception):
    """Another writer changed a row between this request's read and its write: the write rolls
    back and starts over from a fresh read (never reaches a client)."""


class RowConflict(Conflict):
    """A conflict of one observation of a request, `index` its position: each path names the row
    its own way (the JSON API `observations[i]: `, the FHIR path the entry's element)."""

    def __init__(self, index: int, reason: str):
        super().__init__(reason)
        self.index = index
        self.reason = reason


class AdmissionConflict(Conflict):
    """An admission of a request that differs from the stored patient, `index` its position."""

    def __init__(self, index: int, reason: str):
        super().__init__(reason)
        self.index = index
        self.reason = reason
