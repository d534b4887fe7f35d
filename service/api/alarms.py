"""The alarm queue and what a clinician does with an alarm."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from service import schemas
from service.api.deps import (ERRORS, ERRORS_404, AlarmId, Caller, Clinician, Limit, PatientQuery, ServicesDep,
                              SinceQuery, UntilQuery, Viewer)

router = APIRouter(tags=["alarms"])


@router.get("/alarms", response_model=list[schemas.AlarmOut], responses=ERRORS, dependencies=[Viewer])
def alarms(services: ServicesDep,
           state: Literal["open", "acknowledged", "snoozed", "resolved", "active"] | None = None,
           patient_id: PatientQuery = None, since: SinceQuery = None, until: UntilQuery = None, limit: Limit = 500):
    """Newest first. state=active means anything not resolved."""
    return services.alarms.listing(state, patient_id, since, until, limit)


@router.get("/alarms/queue", response_model=schemas.AlarmQueueOut, responses=ERRORS, dependencies=[Viewer])
def alarm_queue(services: ServicesDep):
    """The active alarms of patients still on the ward as cards a nurse works from (service/ward/queue.py):
    open before acknowledged before snoozed, then current risk highest first, then the longest open;
    each with unit/bed, risk at raise and now with its last 12 risks, time open, latest values with
    their age, contributions, bedside context and the risk in words at the unit's threshold."""
    return services.queue.cards()


@router.post("/alarms/{alarm_id}/ack", response_model=schemas.AlarmOut, responses=ERRORS_404,
             dependencies=[Clinician])
def ack(alarm_id: AlarmId, body: schemas.AckIn, services: ServicesDep, caller: Caller):
    """open or snoozed -> acknowledged; acknowledged or resolved -> 409 naming the state. Of two
    racing transitions the database admits one at a time (docs/service.md has the state machine).
    Stamped by the service clock (GET /clock), never before the alarm was raised; audited."""
    out = services.alarms.acknowledge(alarm_id, body, caller)
    services.metrics.alarm_events.labels(f"acknowledged_{body.reason}").inc()
    return out


@router.post("/alarms/{alarm_id}/snooze", response_model=schemas.AlarmOut, responses=ERRORS_404,
             dependencies=[Clinician])
def snooze(alarm_id: AlarmId, body: schemas.SnoozeIn, services: ServicesDep, caller: Caller):
    """open, acknowledged or snoozed -> snoozed until now + minutes on the service clock (in simulated
    mode the feed's time); resolved -> 409. Audited."""
    out = services.alarms.snooze(alarm_id, body, caller)
    services.metrics.alarm_events.labels("snoozed").inc()
    return out


@router.post("/alarms/{alarm_id}/resolve", response_model=schemas.AlarmOut, responses=ERRORS_404,
             dependencies=[Clinician])
def resolve(alarm_id: AlarmId, body: schemas.ResolveIn, services: ServicesDep, caller: Caller):
    """open, acknowledged or snoozed -> resolved (a resolved alarm never suppresses a new one);
    resolved -> 409. Audited with the note."""
    out = services.alarms.resolve(alarm_id, body, caller)
    services.metrics.alarm_events.labels("resolved").inc()
    return out


@router.get("/stats", response_model=schemas.Stats, responses=ERRORS, dependencies=[Viewer])
def stats(services: ServicesDep, since: SinceQuery = None):
    """Alarm burden and quality; a true alarm falls 12 h before to 3 h after sepsis onset."""
    return services.records.stats(since)


@router.get("/stats/periods", response_model=schemas.StatsPeriods, responses=ERRORS, dependencies=[Viewer])
def stats_periods(services: ServicesDep):
    """The figures of GET /stats for each unit's operating-point period (the spans between audited
    point changes), so figures of two thresholds are never added together."""
    return services.records.stats_periods()


@router.get("/audit", response_model=list[schemas.AuditEntry], responses=ERRORS, dependencies=[Viewer])
def audit_events(services: ServicesDep, patient_id: PatientQuery = None,
                 alarm_id: Annotated[int | None, Query(ge=1, le=schemas.MAX_ID)] = None,
                 action: Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[a-z_]+$")] = None,
                 since: SinceQuery = None, limit: Limit = 500):
    """Newest first: who did what and when (on the service clock) to which patient or alarm, with
    the note and the action's details; the service's own changes have the actor role 'system'."""
    return services.records.audit_events(patient_id, alarm_id, since, limit, action)
