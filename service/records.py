"""Admissions, outcomes, alarm lifecycle and read queries (everything but scoring)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service import schemas
from service.errors import Conflict, NotFound
from service.inputs import UNIT_CODES, unit_name
from service.locks import StripedLocks
from service.stats import AlarmFact, PatientFact, alarm_stats, verdict
from service.storage.tables import Alarm, Observation, Patient

UTC = dt.timezone.utc
# Which transitions each action allows (from-state -> action).
ACK_FROM = ("open", "snoozed")
SNOOZE_FROM = ("open", "acknowledged", "snoozed")
RESOLVE_FROM = ("open", "acknowledged", "snoozed")


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _active_alarm_ids(s: Session, ids: list[str]) -> dict[str, int]:
    rows = s.execute(select(Alarm.patient_id, func.max(Alarm.id))
                     .where(Alarm.patient_id.in_(ids), Alarm.state != "resolved").group_by(Alarm.patient_id))
    return dict(rows.all())


def summary(row: Patient, active_alarm: int | None) -> schemas.PatientSummary:
    return schemas.PatientSummary(
        patient_id=row.id, admitted_by=row.admitted_by, unit=unit_name(row.unit1, row.unit2),
        icu_admit_time=row.icu_admit_time,
        first_observation=row.first_ts, last_observation=row.last_ts, n_observations=row.n_observations,
        last_risk=row.last_risk, active_alarm_id=active_alarm, outcome=row.outcome, onset_time=row.onset_time)


def alarm_out(a: Alarm, patient: Patient | None) -> schemas.AlarmOut:
    out = schemas.AlarmOut.model_validate(a)
    if patient is not None:
        out.verdict = verdict(a.raised_at, patient.outcome, patient.onset_time)
    return out


class Records:
    def __init__(self, factory: sessionmaker[Session], locks: StripedLocks):
        self.factory = factory
        self.locks = locks  # shared with the ingestor: an admission cannot race a first observation

    # -- patients ------------------------------------------------------------------------------

    def admit(self, a: schemas.Admission) -> tuple[schemas.PatientSummary, bool]:
        """(summary, created). Posting the same admission again is a no-op; a different one is a 409."""
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
        with self.locks.hold([pid]), self.factory.begin() as s:
            row = s.get(Patient, pid)
            if row is None:
                raise NotFound(f"no patient {pid!r}")
            onset = o.onset_time.astimezone(UTC) if o.onset_time else None
            discharged = o.discharged_at.astimezone(UTC) if o.discharged_at else None
            if row.outcome is not None and (row.outcome, row.onset_time) != (o.outcome, onset):
                raise Conflict(f"patient {pid} already has outcome {row.outcome!r}"
                               + (f" (onset {row.onset_time.isoformat()})" if row.onset_time else "")
                               + "; a recorded outcome cannot be changed")
            row.outcome, row.onset_time = o.outcome, onset
            row.discharged_at = discharged or row.discharged_at
            row.outcome_recorded_at, row.outcome_recorded_by = _now(), o.recorded_by
            row.version += 1
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

    def _transition(self, alarm_id: int, allowed: tuple[str, ...], action: str, apply) -> schemas.AlarmOut:
        with self.factory.begin() as s:
            alarm = s.get(Alarm, alarm_id)
            if alarm is None:
                raise NotFound(f"no alarm {alarm_id}")
            if alarm.state not in allowed:
                raise Conflict(f"alarm {alarm_id} is {alarm.state}; it can be {action} only when {' or '.join(allowed)}")
            apply(alarm)
            s.flush()
            return alarm_out(alarm, s.get(Patient, alarm.patient_id))

    def acknowledge(self, alarm_id: int, body: schemas.AckIn) -> schemas.AlarmOut:
        def apply(a: Alarm):
            a.state, a.acknowledged_by, a.acknowledged_at = "acknowledged", body.by, _now()
            a.ack_reason, a.ack_note, a.snoozed_until = body.reason, body.note, None
        return self._transition(alarm_id, ACK_FROM, "acknowledged", apply)

    def snooze(self, alarm_id: int, body: schemas.SnoozeIn) -> schemas.AlarmOut:
        def apply(a: Alarm):
            a.state, a.snoozed_by = "snoozed", body.by
            a.snoozed_until = _now() + dt.timedelta(minutes=body.minutes)
        return self._transition(alarm_id, SNOOZE_FROM, "snoozed", apply)

    def resolve(self, alarm_id: int, body: schemas.ResolveIn) -> schemas.AlarmOut:
        def apply(a: Alarm):
            a.state, a.resolved_by, a.resolved_at, a.resolve_note = "resolved", body.by, _now(), body.note
        return self._transition(alarm_id, RESOLVE_FROM, "resolved", apply)

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
