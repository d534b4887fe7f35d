"""The ward's read views: the patient list, the ward's counts, a stay's page, the audit, the
clock, alarm quality. Writes live with their resource (service/patients/, service/alarms/)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

from service import audit, schemas
from service.ranges import implausible_values
from service.alarms import store as alarm_store
from service.alarms.rules import ACTIVE_STATES, alarming, monitored
from service.alarms.thresholds import UNITS, UnitPoints, unit_of
from service.clock import ServiceClock, feed_time
from service.errors import NotFound
from service.patients.status import ON_WARD, patient_status, summary
from service.stats import AlarmFact, PatientFact, alarm_stats, verdict
from service.storage.tables import Alarm, Message, Observation, Patient
from service.ward.context import charted, patient_context
from service.ward.periods import DEFINITION as PERIOD_DEFINITION
from service.ward.periods import change_of, first_model, unit_periods

UTC = dt.timezone.utc
A, P, O, M = Alarm.__table__, Patient.__table__, Observation.__table__, Message.__table__


class Records:
    def __init__(self, engine: Engine, units: UnitPoints, clock: ServiceClock):
        self.engine = engine
        self.units = units  # the units' thresholds and the risk in words, of the model in force
        self.clock = clock

    # -- patients ------------------------------------------------------------------------------

    def list_patients(self, limit: int, offset: int, with_outcome: bool | None,
                      order: str = "id") -> list[schemas.PatientSummary]:
        """One query: each patient with its active alarm (the newest unresolved one). order=id by
        patient id; alarms_first: an open alarm first, then an acknowledged or snoozed one, then
        the rest, each group by current risk (highest first), so a page of any size starts with
        every unacknowledged alarm."""
        active = (select(A.c.patient_id.label("pid"), func.max(A.c.id).label("aid"))
                  .where(A.c.state != "resolved").group_by(A.c.patient_id).subquery())
        current = A.alias("current")
        q = (select(P, active.c.aid).outerjoin(active, active.c.pid == P.c.id)
             .outerjoin(current, current.c.id == active.c.aid))
        if order == "alarms_first":
            rank = case((current.c.state == "open", 0), (current.c.state.in_(("acknowledged", "snoozed")), 1), else_=2)
            q = q.order_by(rank, P.c.last_risk.desc().nulls_last(), P.c.id)
        else:
            q = q.order_by(P.c.id)
        if with_outcome is not None:
            q = q.where(P.c.outcome.is_not(None) if with_outcome else P.c.outcome.is_(None))
        with self.engine.begin() as s:
            rows = s.execute(q.limit(limit).offset(offset)).all()
        return [summary(r, r.aid) for r in rows]

    def ward(self) -> schemas.Ward:
        """Patients by status; active alarms of patients still on the ward by state, counted as
        GET /alarms?state=... lists them."""
        with self.engine.begin() as s:
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

    def _clock(self, s) -> schemas.ClockOut:
        return schemas.ClockOut(mode=self.clock.mode, now=self.clock.now(s), wall=dt.datetime.now(UTC),
                                latest_observation=feed_time(s))

    def clock_now(self) -> schemas.ClockOut:
        with self.engine.begin() as s:
            return self._clock(s)

    def audit_events(self, patient_id: str | None, alarm_id: int | None, since: dt.datetime | None,
                     limit: int, action: str | None = None) -> list[schemas.AuditEntry]:
        """Newest first."""
        with self.engine.begin() as s:
            rows = s.execute(audit.query(patient_id=patient_id, alarm_id=alarm_id, since=since, action=action,
                                         limit=limit)).all()
        return [schemas.AuditEntry(**audit.entry(r)) for r in rows]

    def patient(self, pid: str) -> schemas.PatientDetail:
        with self.engine.begin() as s:
            row = s.execute(select(P).where(P.c.id == pid)).first()
            if row is None:
                raise NotFound(f"no patient {pid!r}")
            obs = s.execute(select(O).where(O.c.patient_id == pid).order_by(O.c.ts)).all()
            alarms = s.execute(select(A).where(A.c.patient_id == pid).order_by(A.c.id)).all()
            events = [schemas.AuditEntry(**audit.entry(r))
                      for r in s.execute(audit.query(patient_id=pid, newest_first=False))]
            now = self.clock.now(s)
            thresholds = self.units.thresholds(s)
            values = charted(s, [pid], {pid: obs})[pid]
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
                                            risk=o.risk, alarm=monitored(_utc(row.first_measured), _utc(o.ts))
                                            and alarming(o.risk, o.threshold),
                                            alarm_id=o.alarm_id,
                                            model=o.model_name, model_version=o.model_version,
                                            contributions=o.contributions, first_risk=o.first_risk,
                                            revisions=o.revisions or 0, revised_at=o.revised_at,
                                            revised_by=o.revised_by,
                                            warnings=[schemas.FieldWarning(field=f"vitals.{name}", reason=why)
                                                      for name, why in implausible_values(o.vitals)]) for o in obs],
            **patient_context(self.units, thresholds, row, values, now),
            alarms=[alarm_store.alarm_out(a, row, histories.get(a.id)) for a in alarms], audit=events)

    def messages(self, pid: str, limit: int, offset: int) -> list[schemas.MessageOut]:
        with self.engine.begin() as s:
            if s.execute(select(P.c.id).where(P.c.id == pid)).first() is None:
                raise NotFound(f"no patient {pid!r}")
            rows = s.execute(select(M).where(M.c.patient_id == pid).order_by(M.c.id).limit(limit).offset(offset)).all()
        return [schemas.MessageOut.model_validate(r) for r in rows]

    def alarms(self, state: str | None, patient_id: str | None, since: dt.datetime | None,
               until: dt.datetime | None, limit: int) -> list[schemas.AlarmOut]:
        """Newest first. state=active means anything not resolved."""
        with self.engine.begin() as conn:
            return alarm_store.listing(conn, state, patient_id, since, until, limit)

    # -- stats ---------------------------------------------------------------------------------

    def stats(self, since: dt.datetime | None, *, period: tuple[dt.datetime | None, dt.datetime | None] | None = None,
              unit: str | None = None) -> dict:
        """Alarm figures of the alarms raised and the observations made from `since` on, or in
        `period` = (start, end], of one unit's patients when `unit` is given
        (service.alarms.thresholds.unit_of). A period is closed at its end: a point change is
        stamped with the service clock, which on the simulated clock is the latest stored
        observation's time, so an observation at the change's own time was scored before it."""
        with self.engine.begin() as s:
            aq = select(A.c.patient_id, A.c.raised_at, A.c.kind, A.c.acknowledged_at, A.c.snoozed_at, A.c.resolved_at)
            # A patient is monitored from the first measured hour (models.alarm_figures): the hours
            # before it are not the stay's; a patient with none is a stay of no monitored hours.
            watched = case((Observation.ts >= Patient.first_measured, Observation.ts))
            oq = (select(Observation.patient_id, func.min(watched), func.max(watched))
                  .join(Patient, Patient.id == Observation.patient_id).group_by(Observation.patient_id))
            if since:
                aq = aq.where(A.c.raised_at >= since)
                oq = oq.where(Observation.ts >= since)
            start, end = period or (None, None)
            if start:
                aq = aq.where(A.c.raised_at > start)
                oq = oq.where(Observation.ts > start)
            if end:
                aq = aq.where(A.c.raised_at <= end)
                oq = oq.where(Observation.ts <= end)
            alarms = [AlarmFact(a.patient_id, _utc(a.raised_at), a.kind, _closed(a)) for a in s.execute(aq).all()]
            spans = {pid: (_utc(lo), _utc(hi)) for pid, lo, hi in s.execute(oq).all()}
            ids = set(spans) | {a.patient_id for a in alarms}
            outcomes = {}
            if ids:
                for pid, outcome, onset, u1, u2 in s.execute(
                        select(Patient.id, Patient.outcome, Patient.onset_time, Patient.unit1, Patient.unit2)
                        .where(Patient.id.in_(ids))).all():
                    if unit is None or unit_of(u1, u2) == unit:
                        outcomes[pid] = (outcome, _utc(onset))
        if unit is not None:
            alarms = [a for a in alarms if a.patient_id in outcomes]
            ids = set(outcomes)
        patients = []
        for pid in sorted(ids):
            lo, hi = spans.get(pid, (None, None))
            hours = (hi - lo).total_seconds() / 3600.0 + 1.0 if lo is not None else 0.0
            outcome, onset = outcomes.get(pid, (None, None))
            patients.append(PatientFact(pid, outcome, onset, hours, lo))
        return {"since": since, **alarm_stats(alarms, patients)}

    def stats_periods(self) -> dict:
        """GET /stats/periods: each unit's operating-point periods (service.ward.periods), each
        with the figures of `stats` over its span and unit."""
        with self.engine.begin() as s:
            rows = s.execute(audit.query(action="threshold_change", newest_first=False)).all()
            first_switch = s.execute(audit.query(action="model_switch", newest_first=False, limit=1)).first()
            model = self.units.model_of()
            in_force = self.units.thresholds(s, model)
        changes = [c for r in rows if (c := change_of(_utc(r.at), r.unit, r.details, r.person)) is not None]
        periods = unit_periods(UNITS, changes, {u: (t.point_id, t.threshold) for u, t in in_force.items()},
                               first_model(first_switch.details if first_switch else None, (model.name, model.version)))
        return {"definition": PERIOD_DEFINITION,
                "periods": [{"unit": p.unit, "point_id": p.point_id, "threshold": p.threshold, "start": p.start,
                             "end": p.end, "chosen_by": p.chosen_by, "cause": p.cause,
                             "model": p.model[0] if p.model else None, "model_version": p.model[1] if p.model else None,
                             **_figures(self.stats(None, period=(p.start, p.end), unit=p.unit))}
                            for p in periods]}

    def verdict_counts(self) -> dict[str, int]:
        with self.engine.begin() as s:
            rows = s.execute(select(Alarm.raised_at, Patient.outcome, Patient.onset_time)
                             .join(Patient, Patient.id == Alarm.patient_id)).all()
        counts = {"true": 0, "false": 0, "unknown": 0}
        for raised, outcome, onset in rows:
            counts[verdict(_utc(raised), outcome, _utc(onset))] += 1
        return counts


def _figures(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "since"}


def _closed(alarm) -> dt.datetime | None:
    """When a stored alarm stopped being open: its first acknowledgement, snooze or resolution."""
    times = [_utc(t) for t in (alarm.acknowledged_at, alarm.snoozed_at, alarm.resolved_at) if t is not None]
    return min(times, default=None)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """Aggregates (min/max) bypass the column type on SQLite, so normalise them here."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
