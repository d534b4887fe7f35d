"""What a clinician does with an alarm (rules.TRANSITIONS), and the alarm list, each in its own
transaction. Every action is stamped by the service clock (service/clock.py), never before the
alarm was raised, and audited with the key and the person named in the body."""
from __future__ import annotations

import datetime as dt

from sqlalchemy.engine import Engine

from service import audit, schemas
from service.alarms import store
from service.auth import KeyIdentity
from service.clock import ServiceClock


class Alarms:
    def __init__(self, engine: Engine, clock: ServiceClock):
        self.engine = engine
        self.clock = clock

    def listing(self, state: str | None, patient_id: str | None, since: dt.datetime | None,
                until: dt.datetime | None, limit: int) -> list[schemas.AlarmOut]:
        with self.engine.begin() as conn:
            return store.listing(conn, state, patient_id, since, until, limit)

    def _transition(self, alarm_id: int, action: str, values_at, who: KeyIdentity | None, person: str,
                    note: str | None = None, details_at=lambda at: {}) -> schemas.AlarmOut:
        with self.engine.begin() as conn:
            return store.transition(conn, alarm_id, action, lambda raised: self.clock.stamp(conn, not_before=raised),
                                    values_at, audit.actor(who, person), note, details_at)

    def acknowledge(self, alarm_id: int, body: schemas.AckIn, who: KeyIdentity | None = None) -> schemas.AlarmOut:
        return self._transition(alarm_id, "acknowledge", lambda at: dict(
            acknowledged_by=body.by, acknowledged_at=at, ack_reason=body.reason, ack_note=body.note,
            snoozed_until=None), who, body.by, body.note, lambda at: {"reason": body.reason})

    def snooze(self, alarm_id: int, body: schemas.SnoozeIn, who: KeyIdentity | None = None) -> schemas.AlarmOut:
        until = lambda at: at + dt.timedelta(minutes=body.minutes)  # noqa: E731
        return self._transition(alarm_id, "snooze", lambda at: dict(
            snoozed_by=body.by, snoozed_at=at, snoozed_until=until(at)), who, body.by, None,
            lambda at: {"minutes": body.minutes, "snoozed_until": until(at)})

    def resolve(self, alarm_id: int, body: schemas.ResolveIn, who: KeyIdentity | None = None) -> schemas.AlarmOut:
        return self._transition(alarm_id, "resolve", lambda at: dict(
            resolved_by=body.by, resolved_at=at, resolve_note=body.note), who, body.by, body.note)
