"""The alarm queue and what a clinician does with an alarm."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from service import schemas
from service.api.deps import (ERRORS, ERRORS_404, AlarmId, Clinician, Limit, PatientQuery, ServicesDep, SinceQuery,
                              UntilQuery, Viewer)

router = APIRouter(tags=["alarms"])


@router.get("/alarms", response_model=list[schemas.AlarmOut], responses=ERRORS, dependencies=[Viewer])
def alarms(services: ServicesDep,
           state: Literal["open", "acknowledged", "snoozed", "resolved", "active"] | None = None,
           patient_id: PatientQuery = None, since: SinceQuery = None, until: UntilQuery = None, limit: Limit = 500):
    """Newest first. state=active means anything not resolved."""
    return services.records.alarms(state, patient_id, since, until, limit)


@router.post("/alarms/{alarm_id}/ack", response_model=schemas.AlarmOut, responses=ERRORS_404,
             dependencies=[Clinician])
def ack(alarm_id: AlarmId, body: schemas.AckIn, services: ServicesDep):
    """open or snoozed -> acknowledged; acknowledged or resolved -> 409 naming the state. Of two
    racing transitions the database admits one at a time (docs/service.md has the state machine)."""
    out = services.records.acknowledge(alarm_id, body)
    services.metrics.alarm_events.labels(f"acknowledged_{body.reason}").inc()
    return out


@router.post("/alarms/{alarm_id}/snooze", response_model=schemas.AlarmOut, responses=ERRORS_404,
             dependencies=[Clinician])
def snooze(alarm_id: AlarmId, body: schemas.SnoozeIn, services: ServicesDep):
    """open, acknowledged or snoozed -> snoozed until now + minutes; resolved -> 409."""
    out = services.records.snooze(alarm_id, body)
    services.metrics.alarm_events.labels("snoozed").inc()
    return out


@router.post("/alarms/{alarm_id}/resolve", response_model=schemas.AlarmOut, responses=ERRORS_404,
             dependencies=[Clinician])
def resolve(alarm_id: AlarmId, body: schemas.ResolveIn, services: ServicesDep):
    """open, acknowledged or snoozed -> resolved (a resolved alarm never suppresses a new one);
    resolved -> 409."""
    out = services.records.resolve(alarm_id, body)
    services.metrics.alarm_events.labels("resolved").inc()
    return out


@router.get("/stats", response_model=schemas.Stats, responses=ERRORS, dependencies=[Viewer])
def stats(services: ServicesDep, since: SinceQuery = None):
    """Alarm burden and quality; a true alarm falls 12 h before to 3 h after sepsis onset."""
    return services.records.stats(since)
