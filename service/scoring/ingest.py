"""Scoring posted observations: read each patient's state, run the model step(s), and store the
observations, risks, alarms and new states in one transaction.

A request is all-or-nothing: if any observation conflicts (out of order, or a timestamp already
stored with other vitals, or further ahead of the service's clock than the margin) nothing is
stored. The alarms the risks raise are the alarm rules' (service/alarms/), in the same transaction.
An observation posted again with identical vitals returns the stored result. A write that
loses a race with another process is retried from a fresh read; a patient whose read found the same
state as before keeps the step already computed, so the model runs once per observation.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from models.alarm_policy import AlarmPolicy
from service import schemas
from service.alarms import store as alarm_store
from service.alarms.rules import alarming, is_realert
from service.alarms.thresholds import UnitPoints, unit_of
from service.clock import ServiceClock, refuse_future
from service.errors import Conflict, RowConflict, Stale
from service.inputs import (demographics_from_vitals, elapsed_hours, iculos, last_measured, model_input,
                            state_from_bytes, state_to_bytes)
from service.metrics import Metrics
from service.scoring.explanations import Explainer
from service.scoring.inference import Model
from service.scoring.rebuild import demographics_of, read_stays, replay
from service.storage.tables import Observation, Patient

MAX_ATTEMPTS = 20
UTC = dt.timezone.utc


@dataclass
class Item:
    index: int
    patient_id: str
    ts: dt.datetime
    vitals: dict[str, float]


@dataclass
class Plan:
    """One patient's part of a request: what was read, what to run, what came out."""
    patient_id: str
    row: object | None  # the patients row as read (a Row), None for a new patient
    state: np.ndarray
    last_ts: dt.datetime | None
    icu_admit: dt.datetime | None
    demographics: dict[str, float | None]
    new: list[Item] = field(default_factory=list)
    aliases: list[tuple[int, int]] = field(default_factory=list)  # (index, index of the identical item)
    elapsed: list[float] = field(default_factory=list)
    iculos: list[float] = field(default_factory=list)
    risks: list[float] = field(default_factory=list)
    contributions: list[list[dict] | None] = field(default_factory=list)  # one per new item (models/explain.py)
    threshold: float | None = None  # the patient's unit's alarm threshold in force (service/alarms/thresholds.py)
    policy: AlarmPolicy | None = None  # the unit's alarm policy at that threshold
    alarm_ids: list[int | None] = field(default_factory=list)  # one per new item, once stored
    alarm_kinds: list[str | None] = field(default_factory=list)  # the raised alarm's kind (models.alarm_policy)
    admitted: bool = False  # a new patient admitted by this request (its row is inserted with the admission)

    def inputs(self) -> tuple:
        """Everything the model's steps for this plan depend on: equal inputs, equal outputs."""
        return (self.state.tobytes(), tuple(self.elapsed), tuple(self.iculos), tuple(sorted(self.demographics.items())),
                tuple((it.ts, tuple(sorted(it.vitals.items()))) for it in self.new))


def stored_result(o) -> schemas.PredictResult:
    return schemas.PredictResult(
        patient_id=o.patient_id, timestamp=o.ts, risk=o.risk, alarm=alarming(o.risk, o.threshold), alarm_id=o.alarm_id,
        threshold=o.threshold, model=o.model_name, model_version=o.model_version, contributions=o.contributions,
        elapsed_hours=o.elapsed_hours, iculos=o.iculos, duplicate=True)


P, O = Patient.__table__, Observation.__table__
# The hot path's statements, built once: constructing them per request cost more than running them.
_SELECT_ONE = select(P).where(P.c.id == bindparam("b_id"))
_ADVANCE = (update(P).where(P.c.id == bindparam("b_id"), P.c.version == bindparam("b_version"))
            .values(state=bindparam("b_state"), model_name=bindparam("b_model"), model_version=bindparam("b_mversion"),
                    last_ts=bindparam("b_last_ts", type_=P.c.last_ts.type), last_risk=bindparam("b_last_risk"),
                    version=bindparam("b_new_version"), n_observations=bindparam("b_n"),
                    last_measured=bindparam("b_last_measured", type_=P.c.last_measured.type)))
_INSERT_OBS = insert(O)


class Ingestor:
    def __init__(self, engine: Engine, active, units: UnitPoints, metrics: Metrics, clock: ServiceClock,
                 future_margin: dt.timedelta = dt.timedelta(hours=1), explain: bool = True, shadows=None):
        """`active`: the active model's holder (service/lifecycle/active.py's ActiveModel), whose
        locks serialise each patient's writers in this process; `units`: each unit's alarm
        threshold of the model in force; `shadows`: service/lifecycle/shadows.py's Shadows, when
        shadow models are configured."""
        self.engine = engine
        self.active = active
        self.locks = active.locks
        self.units = units
        self.metrics = metrics
        self.clock = clock  # stamps a supersession (service/clock.py)
        self.future_margin = future_margin
        self.explainer = Explainer(metrics, explain)  # contributions per scored row (SEPSIS_EXPLAIN)
        self.shadows = shadows

    @property
    def model(self) -> Model:
        """The model of this request: pinned once it holds its patients' locks (`ActiveModel.pin`),
        so a switch falls between requests."""
        return self.active.current

    def predict(self, observation: schemas.Observation) -> schemas.PredictResult:
        results, _ = self._json([observation], single=True)
        return results[0]

    def predict_batch(self, observations: list[schemas.Observation]) -> tuple[list[schemas.PredictResult], int]:
        return self._json(observations, single=False)

    def _json(self, observations, single: bool):
        """The JSON API's names: a refused row is `observations[i]: ` (none for a single one)."""
        try:
            results, runs, _ = self.write(observations, single=single, time_field=(
                (lambda i: "timestamp") if single else (lambda i: f"observations.{i}.timestamp")))
        except RowConflict as err:
            raise Conflict(err.reason if single else f"observations[{err.index}]: {err.reason}") from None
        return results, runs

    def write(self, observations: list[schemas.Observation], admitting=None, *, single: bool = False,
              time_field=lambda i: f"observations.{i}.timestamp",
              admission_field=lambda i: f"admissions.{i}.icu_admit_time") -> tuple[list, int, dict[str, bool]]:
        """Score and store `observations`, and the admissions of `admitting` (service/patients/
        admission.py's Admitting), in one transaction: (results in request order, model runs,
        patient id -> whether this request admitted them). Refusals store nothing: Invalid for a
        time from the future (naming `time_field(i)` / `admission_field(i)`), RowConflict naming
        the observation's index, AdmissionConflict naming the admission's."""
        admitting_ids = admitting.ids if admitting is not None else []
        refuse_future([(time_field(i), o.timestamp) for i, o in enumerate(observations)]
                      + [(admission_field(i), admitting.start(pid)[0]) for i, pid in enumerate(admitting_ids)],
                      self.future_margin)
        groups: dict[str, list[Item]] = {}
        for i, o in enumerate(observations):
            groups.setdefault(o.patient_id, []).append(Item(i, o.patient_id, o.timestamp.astimezone(UTC), o.vitals))
        for items in groups.values():
            items.sort(key=lambda it: it.ts)  # stable: equal timestamps keep request order
        computed: dict[str, tuple] = {}  # patient -> (inputs, risks, state, contributions) of the last attempt's steps
        runs = 0
        with self.locks.hold(list(groups) + admitting_ids), self.active.pin() as model:
            for _ in range(MAX_ATTEMPTS):
                results: dict[int, schemas.PredictResult] = {}
                plans, admits = self._plan(groups, results, admitting)
                runs += self._score(plans, single, computed)
                try:
                    raised = self._store(plans, results, admitting, admits)
                except Stale:
                    continue
                break
            else:
                raise Conflict("the patient's record kept changing under concurrent writers; retry the request")
        stored = sum(len(p.new) for p in plans)
        self.metrics.predictions.labels(model.name, model.version).inc(stored)
        if len(observations) - stored:
            self.metrics.duplicates.inc(len(observations) - stored)
        for event, n in raised.items():
            if n:
                self.metrics.alarm_events.labels(event).inc(n)
        return [results[i] for i in range(len(observations))], runs, {pid: pid in admits for pid in admitting_ids}

    # -- read ----------------------------------------------------------------------------------

    def _plan(self, groups: dict[str, list[Item]], results, admitting) -> tuple[list[Plan], set[str]]:
        """The plans of the patients with observations, and the ids of the patients this request
        admits (an admission of `admitting` without a stored row)."""
        with self.engine.begin() as s:
            ids = list(dict.fromkeys(list(groups) + (admitting.ids if admitting is not None else [])))
            found = s.execute(_SELECT_ONE, {"b_id": ids[0]}) if len(ids) == 1 else s.execute(select(P).where(P.c.id.in_(ids)))
            rows = {r.id: r for r in found}
            admits: set[str] = set()
            if admitting is not None:
                admitting.check(rows)
                admits = {pid for pid in admitting.ids if pid not in rows}
            stored = self._stored_candidates(s, groups, rows)
            thresholds = self.units.thresholds(s, self.model)
            plans = []
            for pid, items in groups.items():
                row = rows.get(pid)
                plan = self._patient_plan(s, pid, row, admitting.start(pid) if pid in admits else None)
                for it in items:
                    if plan.last_ts is not None and it.ts <= plan.last_ts:  # sorted: before every new item
                        o = stored.get((pid, it.ts))
                        if o is None:
                            raise RowConflict(it.index, f"timestamp {it.ts.isoformat()} for patient {pid} is earlier than "
                                           f"its last stored observation ({plan.last_ts.isoformat()}); observations of a "
                                           "patient must arrive in time order. Nothing was stored.")
                        if o.vitals != it.vitals:
                            raise RowConflict(it.index, f"patient {pid} already has an observation at {it.ts.isoformat()} "
                                           "with different vitals; a stored observation cannot be changed. Nothing was stored.")
                        results[it.index] = stored_result(o)
                        continue
                    if plan.new and plan.new[-1].ts == it.ts:
                        if plan.new[-1].vitals != it.vitals:
                            raise RowConflict(it.index, f"patient {pid} has two observations at {it.ts.isoformat()} "
                                           "with different vitals in this request. Nothing was stored.")
                        plan.aliases.append((it.index, plan.new[-1].index))
                        continue
                    if row is not None and row.discharged_at is not None and it.ts > row.discharged_at:
                        raise RowConflict(it.index, f"patient {pid} was discharged at {row.discharged_at.isoformat()}; "
                                       f"an observation at {it.ts.isoformat()} belongs to another stay (admit it under a "
                                       "new patient id). Nothing was stored.")
                    plan.new.append(it)
                if plan.new:
                    self._prepare_inputs(plan)
                    chosen = thresholds[unit_of(plan.demographics.get("unit1"), plan.demographics.get("unit2"))]
                    plan.threshold, plan.policy = chosen.threshold, chosen.policy
                plans.append(plan)
            return plans, admits

    @staticmethod
    def _stored_candidates(s: Connection, groups, rows) -> dict:
        """Stored observations at timestamps posted again (only those can be duplicates)."""
        wanted = {(pid, it.ts) for pid, items in groups.items() for it in items
                  if pid in rows and rows[pid].last_ts is not None and it.ts <= rows[pid].last_ts}
        if not wanted:
            return {}
        q = select(O).where(O.c.patient_id.in_({p for p, _ in wanted}), O.c.ts.in_({t for _, t in wanted}))
        return {(o.patient_id, o.ts): o for o in s.execute(q) if (o.patient_id, o.ts) in wanted}

    def _patient_plan(self, s: Connection, pid: str, row, admission) -> Plan:
        """`admission`: (ICU admission time, demographics) of a patient this request admits."""
        if row is None:
            icu_admit, demographics = admission or (None, None)
            return Plan(pid, None, np.zeros(self.model.state_size, np.float32), None, icu_admit, demographics or {},
                        admitted=admission is not None)
        state = None
        if row.state is not None and (row.model_name, row.model_version) == (self.model.name, self.model.version):
            state = state_from_bytes(row.state, self.model.state_size)
        if state is None:
            # A new patient, or one whose state belongs to another model: rebuild it from the
            # stored history so the loaded model sees the whole stay.
            state = self._rebuild_state(s, row)
        icu_admit = row.icu_admit_time or row.first_ts
        return Plan(pid, row, state, row.last_ts, icu_admit, demographics_of(row))

    def _rebuild_state(self, s: Connection, row) -> np.ndarray:
        _, states = replay(self.model, read_stays(s, [row.id]))
        return states[0]

    def _prepare_inputs(self, plan: Plan) -> None:
        first = plan.new[0]
        if plan.row is None and not plan.admitted:
            plan.demographics = demographics_from_vitals(first.vitals)
        if plan.icu_admit is None:
            plan.icu_admit = first.ts
        if first.ts < plan.icu_admit:
            raise RowConflict(first.index, f"timestamp {first.ts.isoformat()} precedes patient {plan.patient_id}'s "
                           f"ICU admission time {plan.icu_admit.isoformat()}. Nothing was stored.")
        previous = plan.last_ts
        for it in plan.new:
            plan.elapsed.append(elapsed_hours(it.ts, previous))
            plan.iculos.append(iculos(it.ts, plan.icu_admit))
            previous = it.ts

    # -- run -----------------------------------------------------------------------------------

    def _score(self, plans: list[Plan], single: bool, computed: dict[str, tuple]) -> int:
        """Run the plans' steps (one model run per step across patients); a plan whose inputs equal
        those of an earlier attempt takes that attempt's outputs instead. Returns the runs made."""
        active = []
        for p in plans:
            if not p.new:
                continue
            key = p.inputs()
            done = computed.get(p.patient_id)
            if done is not None and done[0] == key:
                p.risks, p.state, p.contributions = list(done[1]), done[2], list(done[3])
            else:
                active.append((p, key))
        steps = max((len(p.new) for p, _ in active), default=0)
        run = self.model.step_one if single else self.model.run
        for k in range(steps):
            ps = [p for p, _ in active if len(p.new) > k]
            obs = np.stack([model_input(p.new[k].vitals, p.demographics, p.iculos[k]) for p in ps])
            elapsed = np.array([[p.elapsed[k]] for p in ps], np.float32)  # [rows, 1], as the step takes it
            state = np.stack([p.state for p in ps])
            risk, next_state = run(obs, elapsed, state)
            why = self._explain(ps, k, risk, obs, elapsed, state, single)
            for j, p in enumerate(ps):
                p.risks.append(float(risk[j]))
                p.contributions.append(why[j])
                p.state = next_state[j].copy()
        for p, key in active:
            computed[p.patient_id] = (key, tuple(p.risks), p.state, tuple(p.contributions))
        return steps

    def _explain(self, ps: list[Plan], k: int, risk, obs, elapsed, state, single: bool) -> list:
        """Contributions from the same pre-step rows. A batch explains only what a ward sees: each
        patient's latest row of the request and every row at or above its alarm threshold (any
        alarm's row); the rest of a backfill stores null. Explaining every row cost about 25 times
        the model time of a batch (results/service_explain), which the batch row cap exists to bound."""
        if single:
            return self.explainer.contributions(self.model, obs, elapsed, state)
        rows = [j for j, p in enumerate(ps)
                if k == len(p.new) - 1 or (p.threshold is not None and alarming(float(risk[j]), p.threshold))]
        why: list = [None] * len(ps)
        if rows:
            for j, c in zip(rows, self.explainer.contributions(self.model, obs[rows], elapsed[rows], state[rows])):
                why[j] = c
        return why

    # -- write ---------------------------------------------------------------------------------

    def _store(self, plans: list[Plan], results: dict[int, schemas.PredictResult], admitting,
               admits: set[str]) -> dict[str, int]:
        """One transaction: the admitted patients' rows, each patient's new state, observations and
        alarms, the shadows' scores; the alarms raised by metric event. Stale (start over) when another
        writer got there first."""
        now = dt.datetime.now(UTC)
        try:
            with self.engine.begin() as s:
                for pid in admits - {p.patient_id for p in plans if p.new}:  # admitted, nothing to score yet
                    admitting.insert(s, pid, now)
                for p in plans:
                    if not p.new:
                        continue
                    self._write_patient(s, p, now, admitting)
                    self._write_observations(s, p, now)
                if self.shadows is not None:  # in this transaction; a failing shadow is rolled back alone
                    self.shadows.record(s, plans)
        except IntegrityError:
            raise Stale() from None
        raised = {"raised": 0, "realerted": 0}  # the metric's event: a first alarm, or a re-alert/escalation
        for p in plans:
            if p.new:
                results.update(self._results(p))
                for kind in p.alarm_kinds:
                    if kind is not None:
                        raised["realerted" if is_realert(kind) else "raised"] += 1
        for p in plans:
            for index, same in p.aliases:
                results[index] = results[same].model_copy(update={"duplicate": True})
        return raised

    def _write_patient(self, s: Connection, p: Plan, now: dt.datetime, admitting) -> None:
        m = self.model
        values = dict(state=state_to_bytes(p.state), model_name=m.name, model_version=m.version,
                      last_ts=p.new[-1].ts, last_risk=p.risks[-1],
                      last_measured=last_measured([(it.ts, it.vitals) for it in p.new],
                                                  p.row.last_measured if p.row is not None else None))
        if p.admitted:
            admitting.insert(s, p.patient_id, now, first_ts=p.new[0].ts, n_observations=len(p.new), version=1, **values)
            return
        if p.row is None:
            s.execute(insert(P).values(
                id=p.patient_id, created_at=now, admitted_by="first_observation", icu_admit_time=p.icu_admit,
                first_ts=p.new[0].ts, n_observations=len(p.new), version=1, **p.demographics, **values))
            return
        if p.row.first_ts is None:  # admitted, first observation now
            res = s.execute(update(P).where(P.c.id == p.patient_id, P.c.version == p.row.version).values(
                version=p.row.version + 1, n_observations=p.row.n_observations + len(p.new),
                first_ts=p.new[0].ts, icu_admit_time=p.icu_admit, **values))
        else:
            res = s.execute(_ADVANCE, {
                "b_id": p.patient_id, "b_version": p.row.version, "b_new_version": p.row.version + 1,
                "b_n": p.row.n_observations + len(p.new), "b_state": values["state"], "b_model": m.name,
                "b_mversion": m.version, "b_last_ts": values["last_ts"], "b_last_risk": values["last_risk"],
                "b_last_measured": values["last_measured"]})
        if res.rowcount != 1:
            raise Stale()

    def _write_observations(self, conn: Connection, p: Plan, now: dt.datetime) -> None:
        m = self.model
        raised = alarm_store.raise_alarms(
            conn, p.patient_id, p.row is not None,
            [alarm_store.Scored(it.ts, p.risks[k], p.contributions[k]) for k, it in enumerate(p.new)],
            p.policy, m.name, m.version, lambda ts: self.clock.now(conn) if self.clock.simulated else now)
        p.alarm_ids = [r and r.id for r in raised]
        p.alarm_kinds = [r and r.kind for r in raised]
        conn.execute(_INSERT_OBS, [
            dict(patient_id=p.patient_id, ts=it.ts, vitals=it.vitals, elapsed_hours=p.elapsed[k], iculos=p.iculos[k],
                 risk=p.risks[k], threshold=p.threshold, contributions=p.contributions[k], model_name=m.name,
                 model_version=m.version, alarm_id=p.alarm_ids[k], received_at=now)
            for k, it in enumerate(p.new)])

    def _results(self, p: Plan) -> dict[int, schemas.PredictResult]:
        """The answers for a stored plan's new observations, by request index."""
        m = self.model
        return {it.index: schemas.PredictResult(
            patient_id=p.patient_id, timestamp=it.ts, risk=p.risks[k], alarm=alarming(p.risks[k], p.threshold),
            alarm_id=p.alarm_ids[k], alarm_kind=p.alarm_kinds[k], threshold=p.threshold,
            contributions=p.contributions[k], model=m.name,
            model_version=m.version, elapsed_hours=p.elapsed[k], iculos=p.iculos[k]) for k, it in enumerate(p.new)}
