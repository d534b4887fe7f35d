"""The audit of every action on the ward: one `audit_events` row per acknowledge, snooze, resolve,
outcome, correction, operating-point change and per change the service makes on its own (an alarm
raised, superseded, resolved by an outcome).

`record` writes the row inside the caller's transaction, so an action and its audit commit or roll
back together: no action without its row, no row for an action that did not happen. The actor is
the API key's identity (`service.auth.identify`) plus the person's name from the request body,
since a shared station key does not say who stood at it.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from sqlalchemy import insert, select

from service.auth import KeyIdentity
from service.storage.tables import AuditEvent

UTC = dt.timezone.utc
E = AuditEvent.__table__

# The service's own changes carry this actor (no key, no person).
SYSTEM: dict[str, Any] = {"key_id": None, "key_name": None, "role": "system", "person": None}


def actor(key: KeyIdentity | None, person: str | None = None) -> dict[str, Any]:
    """The contract's actor: {"key_id", "key_name", "role", "person"}."""
    if key is None:
        return {**SYSTEM, "person": person}
    return {"key_id": key.id, "key_name": key.name, "role": key.role, "person": person}


def record(conn, *, action: str, actor: Mapping[str, Any], at: dt.datetime, patient_id: str | None = None,
           alarm_id: int | None = None, unit: str | None = None, note: str | None = None,
           details: Mapping[str, Any] | None = None) -> int:
    """Insert one audit row through `conn` (a Connection or a Session, inside its transaction) and
    return its id. `at` is the service clock's time of the action; datetimes in `details` are
    stored as ISO 8601 text."""
    if at.tzinfo is None:
        raise ValueError("audit time must be timezone-aware")
    row = dict(at=at, recorded_at=dt.datetime.now(UTC), action=action, patient_id=patient_id, alarm_id=alarm_id,
               unit=unit, key_id=actor.get("key_id"), key_name=actor.get("key_name"),
               role=actor.get("role") or "system", person=actor.get("person"), note=note,
               details=_jsonable(dict(details)) if details else None)
    return conn.execute(insert(E).values(**row)).inserted_primary_key[0]


def _jsonable(value):
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def query(*, patient_id: str | None = None, alarm_id: int | None = None, alarm_ids=None,
          since: dt.datetime | None = None, action: str | None = None, limit: int | None = None, newest_first=True):
    """The select for audit rows matching every filter given."""
    q = select(E).order_by(E.c.id.desc() if newest_first else E.c.id)
    if patient_id is not None:
        q = q.where(E.c.patient_id == patient_id)
    if alarm_id is not None:
        q = q.where(E.c.alarm_id == alarm_id)
    if alarm_ids is not None:
        q = q.where(E.c.alarm_id.in_(list(alarm_ids)))
    if since is not None:
        q = q.where(E.c.at >= since)
    if action is not None:
        q = q.where(E.c.action == action)
    if limit is not None:
        q = q.limit(limit)
    return q


def entry(row) -> dict[str, Any]:
    """A stored row as the API's AuditEntry fields."""
    return dict(id=row.id, at=row.at, recorded_at=row.recorded_at, action=row.action, patient_id=row.patient_id,
                alarm_id=row.alarm_id, unit=row.unit, note=row.note, details=row.details,
                actor={"key_id": row.key_id, "key_name": row.key_name, "role": row.role, "person": row.person})
