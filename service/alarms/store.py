"""The alarms' storage, in the caller's transaction (a Connection, or a Session's): raising and
superseding while observations are stored, a clinician's transitions, the resolution an outcome
brings, the removal a correction makes, and the reads the API lists.

Transitions and resolutions are conditional updates (`UPDATE ... WHERE id = :id AND state IN
(allowed from-states)`), so of two racing requests, in one process or several, the database lets
exactly one through and the other sees the row as the winner left it. Every change writes its
audit row (service/audit.py) in the same transaction.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Sequence

from sqlalchemy import bindparam, delete, func, insert, select, update

from service import audit, schemas
from models.alarm_policy import AlarmPolicy
from service.alarms.rules import (ACTIVE_STATES, TRANSITIONS, LatestAlarm, alarming, episode_ends, is_realert,
                                  policy_events)
from service.errors import Conflict, NotFound, Stale
from service.inputs import unit_name
from service.stats import verdict
from service.storage.tables import Alarm, Observation, Patient

A, O, P = Alarm.__table__, Observation.__table__, Patient.__table__

_LATEST = (select(A.c.id, A.c.state, A.c.raised_at, A.c.risk, A.c.acknowledged_at, A.c.snoozed_until)
           .where(A.c.patient_id == bindparam("b_id")).order_by(A.c.id.desc()).limit(1))
_SINCE = (select(O.c.ts, O.c.risk).where(O.c.patient_id == bindparam("b_id"), O.c.ts > bindparam("b_after"),
                                         O.c.ts < bindparam("b_before")).order_by(O.c.ts))
_OUTCOME = select(P.c.outcome).where(P.c.id == bindparam("b_id"))
_SUPERSEDE = (update(A).where(A.c.id == bindparam("b_old"), A.c.state == bindparam("b_state"))
              .values(state="resolved", resolved_at=bindparam("b_now", type_=A.c.resolved_at.type), resolved_by="system",
                      resolve_note=bindparam("b_note")))


@dataclass(frozen=True)
class Scored:
    """One stored observation's score, as the alarm rules need it."""
    ts: dt.datetime
    risk: float
    contributions: list | None


@dataclass(frozen=True)
class Raised:
    id: int
    kind: str


def raise_alarms(conn, patient_id: str, known: bool, scored: Sequence[Scored], policy: AlarmPolicy, model: str,
                 model_version: str, superseded_at: Callable[[dt.datetime], dt.datetime],
                 late_result: bool = False, was_alarming: bool = False) -> list[Raised | None]:
    """The alarm raised at each scored row (None where none was): the events the unit's policy sends
    (`rules.policy_events`: raised, or a re-alert or escalation of the newest alarm), none once the
    patient's outcome is recorded (the alarm's question is answered). A new alarm supersedes
    (resolves) the patient's active one, which it names as `previous_alarm_id`, at the new alarm's
    time (`superseded_at(ts)` stamps the audit row: when it was done). An open alarm (nobody answered it) whose risk falls below the threshold is resolved
    at that row, as the policy ends the episode (`rules.episode_ends`); a later rise is a new alarm.
    Call after the patient row's update of this transaction, which holds its lock: an
    outcome recorded concurrently is seen here, or its resolution of our alarm comes after our
    commit. Raises Stale when a clinician changed the superseded alarm meanwhile. `late_result`:
    the scores were revised by a value for an earlier hour (a late or amended result), which the
    alarm and its audit row say. `was_alarming`: the patient's latest risk before these was at or
    above the threshold (only then can an alarm be open to end)."""
    threshold = policy.threshold
    if not scored or not (was_alarming or any(alarming(s.risk, threshold) for s in scored)):
        return [None] * len(scored)  # nothing to raise, and no open alarm to end
    if known and conn.execute(_OUTCOME, {"b_id": patient_id}).scalar() is not None:
        return [None] * len(scored)
    row = conn.execute(_LATEST, {"b_id": patient_id}).first() if known else None
    latest = None if row is None else LatestAlarm(row.id, row.state, row.raised_at, row.risk, row.acknowledged_at,
                                                  row.snoozed_until)
    since = []
    if latest is not None and latest.state in ("open", "acknowledged"):
        since = [(r.ts, r.risk) for r in conn.execute(_SINCE, {"b_id": patient_id, "b_after": latest.raised_at,
                                                               "b_before": scored[0].ts})]
    steps = [(s.ts, s.risk) for s in scored]
    kinds = policy_events(policy, latest, since, steps)
    active = latest.id if latest is not None and latest.state != "resolved" else None
    active_state = latest.state if active is not None else None
    ends = episode_ends(policy, latest, since, steps)
    if None in ends:
        _end(conn, patient_id, active, ends[None])
        active = active_state = None
    if not any(kinds):
        return [None] * len(scored)
    out: list[Raised | None] = []
    for s, kind in zip(scored, kinds):
        if kind is None:
            out.append(None)
            continue
        alarm_id = conn.execute(insert(A).values(
            patient_id=patient_id, raised_at=s.ts, risk=s.risk, threshold=threshold, model_name=model,
            model_version=model_version, state="open", contributions=s.contributions, kind=kind,
            previous_alarm_id=active, late_result=late_result)).inserted_primary_key[0]
        audit.record(conn, action="alarm_realerted" if is_realert(kind) else "alarm_raised", actor=audit.SYSTEM,
                     at=s.ts, patient_id=patient_id, alarm_id=alarm_id,
                     details={"risk": s.risk, "threshold": threshold, "model": model, "model_version": model_version,
                              "kind": kind, "previous_alarm_id": active, "late_result": late_result})
        if active is not None:
            # The new event replaces it, explicitly, never before the new alarm.
            # It stopped being open when the new event was raised (the policy's episode bookkeeping,
            # which the ward's figures read): at the new alarm's time, also when a backfill or a
            # rewind raises both in one request long after; the audit row says when it was done.
            at = max(s.ts, superseded_at(s.ts))
            note = f"superseded by alarm {alarm_id}"
            # in the state this decision read: a clinician's action meanwhile makes us start over
            if conn.execute(_SUPERSEDE, {"b_old": active, "b_state": active_state, "b_now": s.ts,
                                         "b_note": note}).rowcount != 1:
                raise Stale()
            audit.record(conn, action="alarm_superseded", actor=audit.SYSTEM, at=at, patient_id=patient_id,
                         alarm_id=active, note=note, details={"superseded_by": alarm_id})
        active, active_state = alarm_id, "open"
        out.append(Raised(alarm_id, kind))
        k = len(out) - 1
        if k in ends:  # raised and ended by this request's own later steps (a backfill, a rewind)
            _end(conn, patient_id, alarm_id, ends[k])
            active = active_state = None
    return out


ENDED = "the risk fell below the threshold: the episode ended (nobody had answered the alarm)"


def _end(conn, patient_id: str, alarm_id: int, at: dt.datetime, note: str = ENDED) -> None:
    """Resolve an open alarm whose episode ended (`rules.episode_ends`), audited `alarm_ended`."""
    if conn.execute(_SUPERSEDE, {"b_old": alarm_id, "b_state": "open", "b_now": at, "b_note": note}).rowcount != 1:
        raise Stale()
    audit.record(conn, action="alarm_ended", actor=audit.SYSTEM, at=at, patient_id=patient_id, alarm_id=alarm_id,
                 note=note)


def resolve_for_outcome(conn, patient_id: str, at: dt.datetime, resolved_by: str, reason: str, actor: dict,
                        unit: str | None) -> list[int]:
    """Resolve the patient's active alarms because its outcome was recorded; their ids."""
    resolved = []
    for aid, raised in conn.execute(select(A.c.id, A.c.raised_at).where(
            A.c.patient_id == patient_id, A.c.state.in_(ACTIVE_STATES))).all():
        stamp = max(at, raised)  # never resolved before it was raised
        if conn.execute(update(A).where(A.c.id == aid, A.c.state.in_(ACTIVE_STATES))
                        .values(state="resolved", resolved_at=stamp, resolved_by=resolved_by,
                                resolve_note=reason)).rowcount:
            resolved.append(aid)
            audit.record(conn, action="alarm_resolved_by_outcome", actor=actor, at=stamp, patient_id=patient_id,
                         alarm_id=aid, unit=unit, note=reason)
    return resolved


def remove_raised_after(conn, patient_id: str, after: dt.datetime) -> list:
    """Delete the alarms raised after `after` (a correction removed the observations that raised
    them); the rows as they were, for the correction's record."""
    rows = conn.execute(select(A).where(A.c.patient_id == patient_id, A.c.raised_at > after).order_by(A.c.id)).all()
    conn.execute(delete(A).where(A.c.patient_id == patient_id, A.c.raised_at > after))
    return rows


def transition(conn, alarm_id: int, action: str, stamp: Callable[[dt.datetime], dt.datetime], values_at,
               actor: dict, note: str | None = None, details_at=lambda at: {}) -> schemas.AlarmOut:
    """A clinician's action (rules.TRANSITIONS). `stamp(raised_at)` is the action's time on the
    service clock (never before the alarm was raised); `values_at(at)` and `details_at(at)` the
    columns to set and the audit's details."""
    allowed, to = TRANSITIONS[action]
    raised = conn.execute(select(A.c.raised_at).where(A.c.id == alarm_id)).scalar()
    if raised is None:
        raise NotFound(f"no alarm {alarm_id}")
    at = stamp(raised)
    # One statement decides: a racing transition that commits first changes the state this WHERE
    # reads (PostgreSQL re-checks it on the locked row), so at most one of two wins.
    won = conn.execute(update(A).where(A.c.id == alarm_id, A.c.state.in_(allowed))
                       .values(state=to, **values_at(at))).rowcount == 1
    alarm = conn.execute(select(A).where(A.c.id == alarm_id)).first()
    if alarm is None:
        raise NotFound(f"no alarm {alarm_id}")
    if not won:
        raise Conflict(f"alarm {alarm_id} is {alarm.state}; it can be {to} only when {' or '.join(allowed)}")
    patient = conn.execute(select(P).where(P.c.id == alarm.patient_id)).first()
    audit.record(conn, action=action, actor=actor, at=at, patient_id=alarm.patient_id, alarm_id=alarm_id,
                 unit=unit_name(patient.unit1, patient.unit2) if patient else None, note=note, details=details_at(at))
    return alarm_out(alarm, patient, histories(conn, [alarm_id]).get(alarm_id))


# -- reads --------------------------------------------------------------------------------------

def alarm_out(a, patient, history: list[schemas.AuditEntry] | None = None) -> schemas.AlarmOut:
    out = schemas.AlarmOut.model_validate(a)
    if patient is not None:
        out.verdict = verdict(a.raised_at, patient.outcome, patient.onset_time)
    if history:
        out.history = history
    return out


def histories(conn, alarm_ids: list[int]) -> dict[int, list[schemas.AuditEntry]]:
    """Each alarm's audit rows, oldest first, in one query."""
    found: dict[int, list[schemas.AuditEntry]] = {}
    if alarm_ids:
        for row in conn.execute(audit.query(alarm_ids=alarm_ids, newest_first=False)):
            found.setdefault(row.alarm_id, []).append(schemas.AuditEntry(**audit.entry(row)))
    return found


def active_alarm_ids(conn, patient_ids: list[str]) -> dict[str, int]:
    """Each patient's active alarm (the newest unresolved one)."""
    rows = conn.execute(select(A.c.patient_id, func.max(A.c.id))
                        .where(A.c.patient_id.in_(patient_ids), A.c.state != "resolved").group_by(A.c.patient_id))
    return dict(rows.all())


def listing(conn, state: str | None, patient_id: str | None, since: dt.datetime | None, until: dt.datetime | None,
            limit: int) -> list[schemas.AlarmOut]:
    """Newest first; state "active" is anything not resolved."""
    q = (select(A, P.c.outcome, P.c.onset_time).join(P, P.c.id == A.c.patient_id)
         .order_by(A.c.id.desc()).limit(limit))
    if state == "active":
        q = q.where(A.c.state != "resolved")
    elif state:
        q = q.where(A.c.state == state)
    if patient_id:
        q = q.where(A.c.patient_id == patient_id)
    if since:
        q = q.where(A.c.raised_at >= since)
    if until:
        q = q.where(A.c.raised_at < until)
    rows = conn.execute(q).all()
    found = histories(conn, [r.id for r in rows])
    return [alarm_out(r, r, found.get(r.id)) for r in rows]
