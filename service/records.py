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
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service import schemas
from service.clock import refuse_future
from service.errors import Conflict, NotFound
from service.inputs import UNIT_CODES, unit_name
from service.locks import StripedLocks
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
        icu_admit_time=row.icu_admit_time,
        first_observation=row.first_ts, last_observation=row.last_ts, n_observations=row.n_observations,
        last_risk=row.last_risk, active_alarm_id=active_alarm, outcome=row.outcome, onset_time=row.onset_time,
        status=patient_status(row.outcome, row.discharged_at))


def alarm_out(a: Alarm, patient: Patient | None) -> schemas.AlarmOut:
    out = schemas.AlarmOut.model_validate(a)
    if patient is not None:
        out.verdict = verdict(a.raised_at, patient.outcome, patient.onset_time)
    return out


class Records:
    def __init__(self, factory: sessionmaker[Session], locks: StripedLocks,
                 future_margin: dt.timedelta = dt.timedelta(hours=1)):
        self.factory = factory
        self.locks = locks  # shared with the ingestor: an admission cannot race a first observation
        self.future_margin = future_margin

    # -- patients ------------------------------------------------------------------------------

    def admit(self, a: schemas.Admission) -> tuple[schemas.PatientSummary, bool]:
        """(summary, created). Posting the same admission again is a no-op; a different one is a 409."""
        refuse_future([("icu_admit_time", a.icu_admit_time)], self.future_margin)
        unit1, unit2 = UNIT_CODES[a.unit] if a.unit else (None, None)
        fields = dict(age=a.age, gender=None if a.gender is None else float(a.gender), unit1=unit1, unit2=unit2,
                      hosp_adm_time=a.hosp_adm_time, icu_admit_time=a.icu_admit_time.astimezone(UTC))
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

    def list_patients(self, limit: int, offset: int, with_outcome: bool | None) -> list[schemas.PatientSummary]:
        with self.factory.begin() as s:
            q = select(Patient).order_by(Patient.id).limit(limit).offset(offset)
            if with_outcome is not None:
                q = q.where(Patient.outcome.is_not(None) if with_outcome else Patient.outcome.is_(None))
            rows = list(s.scalars(q))
            active = _active_alarm_ids(s, [r.id for r in rows]) if rows else {}
        return [summary(r, active.get(r.id)) for r in rows]

    def patient(self, pid: str) -> schemas.PatientDetail:
        with self.factory.begin() as s:
            row = s.get(Patient, pid)
            if row is None:
                raise NotFound(f"no patient {pid!r}")
            obs = list(s.scalars(select(Observation).where(Observation.patient_id == pid).order_by(Observation.ts)))
            alarms = list(s.scalars(select(Alarm).where(Alarm.patient_id == pid).order_by(Alarm.id)))
        active = next((a.id for a in reversed(alarms) if a.state != "resolved"), None)
        base = summary(row, active).model_dump()
        return schemas.PatientDetail(
            **base, age=row.age, gender=row.gender, unit1=row.unit1, unit2=row.unit2, hosp_adm_time=row.hosp_adm_time,
            discharged_at=row.discharged_at,
            timeline=[schemas.TimelineEntry(timestamp=o.ts, vitals=o.vitals, iculos=o.iculos, elapsed_hours=o.elapsed_hours,
                                            risk=o.risk, alarm=o.risk >= o.threshold, alarm_id=o.alarm_id,
                                            model=o.model_name, model_version=o.model_version) for o in obs],
            alarms=[alarm_out(a, row) for a in alarms])

    def record_outcome(self, pid: str, o: schemas.OutcomeIn) -> schemas.PatientSummary:
        """Record the outcome once: the same outcome again returns it unchanged, another is a 409."""
        refuse_future([("onset_time", o.onset_time), ("discharged_at", o.discharged_at)], self.future_margin)
        onset = o.onset_time.astimezone(UTC) if o.onset_time else None
        values = dict(outcome=o.outcome, onset_time=onset, outcome_recorded_at=_now(), outcome_recorded_by=o.recorded_by)
        if o.discharged_at:
            values["discharged_at"] = o.discharged_at.astimezone(UTC)
        with self.factory.begin() as s:
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
            if won:
                # After the patient row's update, which holds its lock: an observation racing this
                # one either committed its alarm before (resolved here) or sees the outcome and
                # raises none (ingest reads it after its own update of the same row).
                s.execute(update(Alarm).where(Alarm.patient_id == pid, Alarm.state.in_(ACTIVE_STATES))
                          .values(state="resolved", resolved_at=values["outcome_recorded_at"],
                                  resolved_by=o.recorded_by or "system",
                                  resolve_note=outcome_reason(o.outcome, values.get("discharged_at")))
                          .execution_options(synchronize_session=False))
            return summary(row, _active_alarm_ids(s, [pid]).get(pid))

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
            return [alarm_out(a, p) for a, p in s.execute(q).all()]

    def _transition(self, alarm_id: int, action: str, values: dict) -> schemas.AlarmOut:
        allowed, to = TRANSITIONS[action]
        with self.factory.begin() as s:
            # One statement decides: a racing transition that commits first changes the state this
            # WHERE reads (PostgreSQL re-checks it on the locked row), so at most one of two wins.
            won = s.execute(update(Alarm).where(Alarm.id == alarm_id, Alarm.state.in_(allowed))
                            .values(state=to, **values).execution_options(synchronize_session=False)).rowcount == 1
            alarm = s.get(Alarm, alarm_id)
            if alarm is None:
                raise NotFound(f"no alarm {alarm_id}")
            if not won:
                raise Conflict(f"alarm {alarm_id} is {alarm.state}; it can be {to} only when {' or '.join(allowed)}")
            return alarm_out(alarm, s.get(Patient, alarm.patient_id))

    def acknowledge(self, alarm_id: int, body: schemas.AckIn) -> schemas.AlarmOut:
        return self._transition(alarm_id, "acknowledge", dict(
            acknowledged_by=body.by, acknowledged_at=_now(), ack_reason=body.reason, ack_note=body.note,
            snoozed_until=None))

    def snooze(self, alarm_id: int, body: schemas.SnoozeIn) -> schemas.AlarmOut:
        return self._transition(alarm_id, "snooze", dict(
            snoozed_by=body.by, snoozed_until=_now() + dt.timedelta(minutes=body.minutes)))

    def resolve(self, alarm_id: int, body: schemas.ResolveIn) -> schemas.AlarmOut:
        return self._transition(alarm_id, "resolve", dict(
            resolved_by=body.by, resolved_at=_now(), resolve_note=body.note))

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
