"""Admissions, outcomes, alarm lifecycle and read queries (everything but scoring).

Alarm transitions and outcomes are conditional updates (`UPDATE ... WHERE id = :id AND state IN
(allowed from-states)`, `... AND outcome IS NULL`), so of two racing requests, in one process or
several, the database lets exactly one through and the other sees the row as the winner left it.

| from-state    | ack          | snooze                 | resolve  |
|---------------|--------------|------------------------|----------|
| open          | acknowledged | snoozed                | resolved |
| acknowledged  | 409          | snoozed                | resolved |
| snoozed       | acknowledged | snoozed (new end time) | resolved |
| resolved      | 409          | 409                    | 409      |

Outcome: none -> recorded; recorded -> the same outcome again returns it unchanged, any other 409.
Recording one resolves the patient's active alarms in the same transaction (`resolved_by` the
outcome's `recorded_by` or "system", the reason in `resolve_note`).

Every action is stamped by the service clock (service/clock.py), never before the alarm it acts on
was raised, and writes its audit row (service/audit.py) in the same transaction.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from service import audit, schemas
from service.auth import KeyIdentity
from service.clock import ServiceClock, feed_time, refuse_future
from service.ward.context import patient_context
from service.errors import Conflict, Invalid, NotFound
from service.inputs import UNIT_CODES, unit_name
from service.scoring.locks import StripedLocks
from service.stats import AlarmFact, PatientFact, alarm_stats, verdict
from service.storage.tables import Alarm, Observation, Patient

UTC = dt.timezone.utc
# The alarm state machine: action -> (the states it may start from, the state it leads to).
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("open", "snoozed"), "acknowledged"),
    "snooze": (("open", "acknowledged", "snoozed"), "snoozed"),
    "resolve": (("open", "acknowledged", "snoozed"), "resolved"),
}


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _active_alarm_ids(s: Session, ids: list[str]) -> dict[str, int]:
    rows = s.execute(select(Alarm.patient_id, func.max(Alarm.id))
                     .where(Alarm.patient_id.in_(ids), Alarm.state != "resolved").group_by(Alarm.patient_id))
    return dict(rows.all())


ACTIVE_STATES = ("open", "acknowledged", "snoozed")


def patient_status(outcome: str | None, discharged_at: dt.datetime | None) -> str:
    """The ward's word for a stay: discharged once it ended (a no_sepsis outcome means discharged
    without sepsis), in treatment once sepsis is confirmed, else still monitored."""
    if discharged_at is not None or outcome == "no_sepsis":
        return "discharged"
    return "in_treatment" if outcome == "sepsis" else "monitoring"


def outcome_reason(outcome: str, discharged_at: dt.datetime | None) -> str:
    reason = f"outcome recorded: {outcome}"
    if discharged_at is not None:
        reason += f"; stay ended (discharged_at {discharged_at.isoformat()})"
    return reason


def summary(row: Patient, active_alarm: int | None) -> schemas.PatientSummary:
    return schemas.PatientSummary(
        patient_id=row.id, admitted_by=row.admitted_by, unit=unit_name(row.unit1, row.unit2),
        icu_admit_time=row.icu_admit_time, bed=row.bed,
        first_observation=row.first_ts, last_observation=row.last_ts, last_measured=row.last_measured,
        n_observations=row.n_observations,
        last_risk=row.last_risk, active_alarm_id=active_alarm, outcome=row.outcome, onset_time=row.onset_time,
        status=patient_status(row.outcome, row.discharged_at))


def alarm_out(a: Alarm, patient: Patient | None, history: list[schemas.AuditEntry] | None = None) -> schemas.AlarmOut:
    out = schemas.AlarmOut.model_validate(a)
    if patient is not None:
        out.verdict = verdict(a.raised_at, patient.outcome, patient.onset_time)
    if history:
        out.history = history
    return out


def _histories(s: Session, alarm_ids: list[int]) -> dict[int, list[schemas.AuditEntry]]:
    """Each alarm's audit rows, oldest first, in one query."""
    found: dict[int, list[schemas.AuditEntry]] = {}
    if alarm_ids:
        for row in s.execute(audit.query(alarm_ids=alarm_ids, newest_first=False)):
            found.setdefault(row.alarm_id, []).append(schemas.AuditEntry(**audit.entry(row)))
    return found


# Alarms first: an open (unacknowledged) alarm, then an acknowledged or snoozed one, then none.
ORDERS = ("id", "alarms_first")
# Still on the ward: neither discharged nor discharged without sepsis (patient_status's rule).
ON_WARD = (Patient.discharged_at.is_(None)) & ((Patient.outcome.is_(None)) | (Patient.outcome != "no_sepsis"))


class Records:
    def __init__(self, factory: sessionmaker[Session], locks: StripedLocks,
                 future_margin: dt.timedelta = dt.timedelta(hours=1), clock: ServiceClock | None = None):
        self.factory = factory
        self.locks = locks  # shared with the ingestor: an admission cannot race a first observation
        self.future_margin = future_margin
        self.clock = clock or ServiceClock()
        self.units = None  # service/alarms/thresholds.py's UnitPoints (set by Services): thresholds and risk in words

    # -- patients ------------------------------------------------------------------------------

    def admit(self, a: schemas.Admission) -> tuple[schemas.PatientSummary, bool]:
        """(summary, created). Posting the same admission again is a no-op; a different one is a 409."""
        refuse_future([("icu_admit_time", a.icu_admit_time)], self.future_margin)
        unit1, unit2 = UNIT_CODES[a.unit] if a.unit else (None, None)
        fields = dict(age=a.age, gender=None if a.gender is None else float(a.gender), unit1=unit1, unit2=unit2,
                      hosp_adm_time=a.hosp_adm_time, icu_admit_time=a.icu_admit_time.astimezone(UTC), bed=a.bed)
        with self.locks.hold([a.patient_id]):
            try:
                with self.factory.begin() as s:
                    row = s.get(Patient, a.patient_id)
                    if row is not None:
                        same = row.admitted_by == "admission" and all(getattr(row, k) == v for k, v in fields.items())
                        if not same:
                            raise Conflict(f"patient {a.patient_id} already exists (created by {row.admitted_by.replace('_', ' ')}"
                                           f" with {row.n_observations} observations); an admission cannot be changed")
                        return summary(row, _active_alarm_ids(s, [row.id]).get(row.id)), False
                    row = Patient(id=a.patient_id, created_at=_now(), admitted_by="admission", n_observations=0,
                                  version=0, **fields)
                    s.add(row)
            except IntegrityError:
                raise Conflict(f"patient {a.patient_id} was created concurrently; retry") from None
        return summary(row, None), True

    def list_patients(self, limit: int, offset: int, with_outcome: bool | None,
                      order: str = "id") -> list[schemas.PatientSummary]:
        """One query: each patient with its active alarm (the newest unresolved one). order=id by
        patient id; alarms_first: an open alarm first, then an acknowledged or snoozed one, then
        the rest, each group by current risk (highest first), so a page of any size starts with
        every unacknowledged alarm."""
        active = (select(Alarm.patient_id.label("pid"), func.max(Alarm.id).label("aid"))
                  .where(Alarm.state != "resolved").group_by(Alarm.patient_id).subquery())
        current = aliased(Alarm)
        q = (select(Patient, active.c.aid).outerjoin(active, active.c.pid == Patient.id)
             .outerjoin(current, current.id == active.c.aid))
        if order == "alarms_first":
            rank = case((current.state == "open", 0), (current.state.in_(("acknowledged", "snoozed")), 1), else_=2)
            q = q.order_by(rank, Patient.last_risk.desc().nulls_last(), Patient.id)
        else:
            q = q.order_by(Patient.id)
        if with_outcome is not None:
            q = q.where(Patient.outcome.is_not(None) if with_outcome else Patient.outcome.is_(None))
        with self.factory.begin() as s:
            rows = s.execute(q.limit(limit).offset(offset)).all()
        return [summary(r, aid) for r, aid in rows]

    def ward(self) -> schemas.Ward:
        """Patients by status; active alarms of patients still on the ward by state, counted as
        GET /alarms?state=... lists them."""
        with self.factory.begin() as s:
            by_status = {"monitoring": 0, "in_treatment": 0, "discharged": 0}
            for outcome, discharged, n in s.execute(
                    select(Patient.outcome, Patient.discharged_at.is_not(None), func.count())
                    .group_by(Patient.outcome, Patient.discharged_at.is_not(None))).all():
                by_status[patient_status(outcome, dt.datetime.min if discharged else None)] += n
            by_state = {state: (n, people) for state, n, people in s.execute(
                select(Alarm.state, func.count(), func.count(func.distinct(Alarm.patient_id)))
                .join(Patient, Patient.id == Alarm.patient_id)
                .where(Alarm.state.in_(ACTIVE_STATES), ON_WARD).group_by(Alarm.state)).all()}
            clock = self._clock(s)
        counts = {state: by_state.get(state, (0, 0))[0] for state in ACTIVE_STATES}
        return schemas.Ward(
            patients=schemas.WardPatients(**by_status, on_ward=by_status["monitoring"] + by_status["in_treatment"]),
            alarms=schemas.WardAlarms(**counts, active=sum(counts.values()),
                                      patients_with_open_alarm=by_state.get("open", (0, 0))[1]),
            clock=clock)

    # -- clock and audit -----------------------------------------------------------------------

    def _clock(self, s: Session) -> schemas.ClockOut:
        return schemas.ClockOut(mode=self.clock.mode, now=self.clock.now(s), wall=dt.datetime.now(UTC),
                                latest_observation=feed_time(s))

    def clock_now(self) -> schemas.ClockOut:
        with self.factory.begin() as s:
            return self._clock(s)

    def audit_events(self, patient_id: str | None, alarm_id: int | None, since: dt.datetime | None,
                     limit: int, action: str | None = None) -> list[schemas.AuditEntry]:
        """Newest first."""
        with self.factory.begin() as s:
            rows = s.execute(audit.query(patient_id=patient_id, alarm_id=alarm_id, since=since, action=action,
                                         limit=limit)).all()
        return [schemas.AuditEntry(**audit.entry(r)) for r in rows]

    def patient(self, pid: str) -> schemas.PatientDetail:
        with self.factory.begin() as s:
            row = s.get(Patient, pid)
            if row is None:
                raise NotFound(f"no patient {pid!r}")
            obs = list(s.scalars(select(Observation).where(Observation.patient_id == pid).order_by(Observation.ts)))
            alarms = list(s.scalars(select(Alarm).where(Alarm.patient_id == pid).order_by(Alarm.id)))
            events = [schemas.AuditEntry(**audit.entry(r))
                      for r in s.execute(audit.query(patient_id=pid, newest_first=False))]
            now = self.clock.now(s)
            thresholds = self.units.thresholds(s) if self.units is not None else None
        histories: dict[int, list[schemas.AuditEntry]] = {}
        for e in events:
            if e.alarm_id is not None:
                histories.setdefault(e.alarm_id, []).append(e)
        active = next((a.id for a in reversed(alarms) if a.state != "resolved"), None)
        base = summary(row, active).model_dump()
        return schemas.PatientDetail(
            **base, age=row.age, gender=row.gender, unit1=row.unit1, unit2=row.unit2, hosp_adm_time=row.hosp_adm_time,
            discharged_at=row.discharged_at,
            timeline=[schemas.TimelineEntry(timestamp=o.ts, vitals=o.vitals, iculos=o.iculos, elapsed_hours=o.elapsed_hours,
                                            risk=o.risk, alarm=o.risk >= o.threshold, alarm_id=o.alarm_id,
                                            model=o.model_name, model_version=o.model_version,
                                            contributions=o.contributions) for o in obs],
            **patient_context(self.units, thresholds, row, [(o.ts, o.vitals) for o in obs], now),
            alarms=[alarm_out(a, row, histories.get(a.id)) for a in alarms], audit=events)

    def record_outcome(self, pid: str, o: schemas.OutcomeIn, who: KeyIdentity | None = None) -> schemas.PatientSummary:
        """Record the outcome once: the same outcome again returns it unchanged, another is a 409."""
        refuse_future([("onset_time", o.onset_time), ("discharged_at", o.discharged_at)], self.future_margin)
        onset = o.onset_time.astimezone(UTC) if o.onset_time else None
        values = dict(outcome=o.outcome, onset_time=onset, outcome_recorded_by=o.recorded_by)
        if o.discharged_at:
            values["discharged_at"] = o.discharged_at.astimezone(UTC)
        by = audit.actor(who, o.recorded_by)
        with self.factory.begin() as s:
            values["outcome_recorded_at"] = self.clock.now(s)
            # The patient's version guards its model state only: an outcome does not bump it, so
            # recording one never forces a concurrent observation to retry.
            won = s.execute(update(Patient).where(Patient.id == pid, Patient.outcome.is_(None)).values(**values)
                            .execution_options(synchronize_session=False)).rowcount == 1
            row = s.get(Patient, pid)
            if row is None:
                raise NotFound(f"no patient {pid!r}")
            if not won and (row.outcome, row.onset_time) != (o.outcome, onset):
                raise Conflict(f"patient {pid} already has outcome {row.outcome!r}"
                               + (f" (onset {row.onset_time.isoformat()})" if row.onset_time else "")
                               + "; a recorded outcome cannot be changed")
            if not won and "discharged_at" in values:
                self._discharge_later(s, row, values["discharged_at"], values["outcome_recorded_at"], by)
            if won:
                # After the patient row's update, which holds its lock: an observation racing this
                # one either committed its alarm before (resolved here) or sees the outcome and
                # raises none (ingest reads it after its own update of the same row).
                at = values["outcome_recorded_at"]
                reason = outcome_reason(o.outcome, values.get("discharged_at"))
                resolved = []
                for aid, raised in s.execute(select(Alarm.id, Alarm.raised_at).where(
                        Alarm.patient_id == pid, Alarm.state.in_(ACTIVE_STATES))).all():
                    stamp = max(at, raised)  # never resolved before it was raised
                    if s.execute(update(Alarm).where(Alarm.id == aid, Alarm.state.in_(ACTIVE_STATES))
                                 .values(state="resolved", resolved_at=stamp, resolved_by=o.recorded_by or "system",
                                         resolve_note=reason).execution_options(synchronize_session=False)).rowcount:
                        resolved.append(aid)
                        audit.record(s, action="alarm_resolved_by_outcome", actor=by, at=stamp, patient_id=pid,
                                     alarm_id=aid, unit=unit_name(row.unit1, row.unit2), note=reason)
                audit.record(s, action="outcome", actor=by, at=at, patient_id=pid, unit=unit_name(row.unit1, row.unit2),
                             details={"outcome": o.outcome, "onset_time": onset, "discharged_at": values.get("discharged_at"),
                                      "resolved_alarms": resolved})
            return summary(row, _active_alarm_ids(s, [pid]).get(pid))

    @staticmethod
    def _discharge_later(s: Session, row: Patient, discharged_at: dt.datetime, at: dt.datetime, by: dict) -> None:
        """The same outcome posted again with a discharge time: a patient in treatment for sepsis
        leaves the ward when their stay ends. Recorded once (a different time later is a 409)."""
        if row.discharged_at is not None:
            if row.discharged_at != discharged_at:
                raise Conflict(f"patient {row.id} was already discharged at {row.discharged_at.isoformat()}; "
                               "a recorded discharge cannot be changed")
            return
        if row.onset_time is not None and discharged_at < row.onset_time:
            raise Invalid(f"discharged_at {discharged_at.isoformat()} precedes the recorded sepsis onset "
                          f"{row.onset_time.isoformat()}",
                          errors=[{"field": "discharged_at", "reason": "precedes the recorded sepsis onset"}])
        won = s.execute(update(Patient).where(Patient.id == row.id, Patient.discharged_at.is_(None))
                        .values(discharged_at=discharged_at).execution_options(synchronize_session=False)).rowcount == 1
        s.refresh(row)
        if not won and row.discharged_at != discharged_at:
            raise Conflict(f"patient {row.id} was discharged concurrently at {row.discharged_at.isoformat()}")
        if won:
            audit.record(s, action="discharge", actor=by, at=at, patient_id=row.id, unit=unit_name(row.unit1, row.unit2),
                         details={"outcome": row.outcome, "discharged_at": discharged_at})

    # -- alarms --------------------------------------------------------------------------------

    def alarms(self, state: str | None, patient_id: str | None, since: dt.datetime | None,
               until: dt.datetime | None, limit: int) -> list[schemas.AlarmOut]:
        with self.factory.begin() as s:
            q = select(Alarm, Patient).join(Patient, Patient.id == Alarm.patient_id).order_by(Alarm.id.desc()).limit(limit)
            if state == "active":
                q = q.where(Alarm.state != "resolved")
            elif state:
                q = q.where(Alarm.state == state)
            if patient_id:
                q = q.where(Alarm.patient_id == patient_id)
            if since:
                q = q.where(Alarm.raised_at >= since)
            if until:
                q = q.where(Alarm.raised_at < until)
            rows = s.execute(q).all()
            histories = _histories(s, [a.id for a, _ in rows])
            return [alarm_out(a, p, histories.get(a.id)) for a, p in rows]

    def _transition(self, alarm_id: int, action: str, values_at, who: KeyIdentity | None, person: str,
                    note: str | None = None, details_at=lambda at: {}) -> schemas.AlarmOut:
        """`values_at(at)` and `details_at(at)`: the columns to set and the audit's details, given
        the action's time on the service clock (never before the alarm was raised)."""
        allowed, to = TRANSITIONS[action]
        with self.factory.begin() as s:
            raised = s.execute(select(Alarm.raised_at).where(Alarm.id == alarm_id)).scalar()
            if raised is None:
                raise NotFound(f"no alarm {alarm_id}")
            at = self.clock.stamp(s, not_before=raised)
            # One statement decides: a racing transition that commits first changes the state this
            # WHERE reads (PostgreSQL re-checks it on the locked row), so at most one of two wins.
            won = s.execute(update(Alarm).where(Alarm.id == alarm_id, Alarm.state.in_(allowed))
                            .values(state=to, **values_at(at)).execution_options(synchronize_session=False)).rowcount == 1
            alarm = s.get(Alarm, alarm_id)
            if alarm is None:
                raise NotFound(f"no alarm {alarm_id}")
            if not won:
                raise Conflict(f"alarm {alarm_id} is {alarm.state}; it can be {to} only when {' or '.join(allowed)}")
            patient = s.get(Patient, alarm.patient_id)
            audit.record(s, action=action, actor=audit.actor(who, person), at=at, patient_id=alarm.patient_id,
                         alarm_id=alarm_id, unit=unit_name(patient.unit1, patient.unit2) if patient else None,
                         note=note, details=details_at(at))
            return alarm_out(alarm, patient, _histories(s, [alarm_id]).get(alarm_id))

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

    # -- stats ---------------------------------------------------------------------------------

    def stats(self, since: dt.datetime | None) -> dict:
        with self.factory.begin() as s:
            aq = select(Alarm.patient_id, Alarm.raised_at)
            oq = select(Observation.patient_id, func.min(Observation.ts), func.max(Observation.ts)).group_by(Observation.patient_id)
            if since:
                aq = aq.where(Alarm.raised_at >= since)
                oq = oq.where(Observation.ts >= since)
            alarms = [AlarmFact(pid, ts) for pid, ts in s.execute(aq).all()]
            spans = {pid: (lo, hi) for pid, lo, hi in s.execute(oq).all()}
            ids = set(spans) | {a.patient_id for a in alarms}
            outcomes = {}
            if ids:
                for pid, outcome, onset in s.execute(select(Patient.id, Patient.outcome, Patient.onset_time)
                                                     .where(Patient.id.in_(ids))).all():
                    outcomes[pid] = (outcome, _utc(onset))
        patients = []
        for pid in sorted(ids):
            lo, hi = spans.get(pid, (None, None))
            hours = (_utc(hi) - _utc(lo)).total_seconds() / 3600.0 + 1.0 if lo is not None else 0.0
            outcome, onset = outcomes.get(pid, (None, None))
            patients.append(PatientFact(pid, outcome, onset, hours))
        return {"since": since, **alarm_stats([AlarmFact(a.patient_id, _utc(a.raised_at)) for a in alarms], patients)}

    def verdict_counts(self) -> dict[str, int]:
        with self.factory.begin() as s:
            rows = s.execute(select(Alarm.raised_at, Patient.outcome, Patient.onset_time)
                             .join(Patient, Patient.id == Alarm.patient_id)).all()
        counts = {"true": 0, "false": 0, "unknown": 0}
        for raised, outcome, onset in rows:
            counts[verdict(_utc(raised), outcome, _utc(onset))] += 1
        return counts


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """Aggregates (min/max) bypass the column type on SQLite, so normalise them here."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
