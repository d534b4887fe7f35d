"""Scoring posted values: file each one in the patient's hourly grid (service/scoring/filing.py,
models/grid.py), re-step the hours it changes, and store the messages, hourly rows, risks, alarms
and new state in one transaction.

Every value is kept as received (`messages`); the hourly rows are derived from them. A value for
the latest hour re-steps that hour from the state at its start; one for an earlier hour (a late
result, an amendment, an entry in error) rewinds to the stored state after the hour before it and
re-steps every later hour, within `revision_window` hours of the latest (older: a 409 naming the
window). Hours between values are stepped as empty rows, from the ICU admission's hour 1, as the
training rows are. Each hourly row keeps its risk as first shown and as revised, with the message
that revised it. Alarms follow the latest hour's risk; one raised when an earlier hour was revised
says so (`late_result`). A patient is monitored from their first measured hour (the first with a
vital sign or lab, `patients.first_measured`; models.alarm_figures): no hour before it alarms.

A request is all-or-nothing: if any value conflicts (a charted value sent again with another value
and no amended status, a time before the admission or after the discharge, an hour beyond the
revision window, a time further ahead of the service's clock than the margin) nothing is stored.
A value sent again unchanged returns the stored result. A write that loses a race with another
process is retried from a fresh read; a patient whose read found the same inputs keeps the steps
already computed, so the model runs once per hour re-stepped.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from models.alarm_figures import measured
from models.alarm_policy import AlarmPolicy
from models.grid import BeforeAdmission, hour_of, hour_start
from service import schemas
from service.alarms import store as alarm_store
from service.alarms.rules import alarming, is_realert
from service.alarms.thresholds import UnitPoints, unit_of
from service.clock import ServiceClock, refuse_future
from service.errors import Conflict, RowConflict, Stale
from service.inputs import demographics_from_vitals, last_measured, model_input, state_to_bytes
from service.metrics import Metrics
from service.ranges import LIMITS, implausible_values
from service.scoring import filing
from service.scoring.explanations import Explainer
from service.scoring.inference import Model
from service.scoring.rebuild import demographics_of, replay, stay, stored_state
from service.storage.tables import Message, Observation, Patient

MAX_ATTEMPTS = 20
UTC = dt.timezone.utc
KEY_CHUNK = 500  # keys per IN (...) query: well inside every driver's parameter limit


@dataclass
class Item:
    """One posted observation."""
    index: int
    patient_id: str
    ts: dt.datetime
    vitals: dict[str, float]
    status: str = "final"
    source_id: str | None = None
    source: str = "json"


@dataclass
class Plan:
    """One patient's part of a request: what was read, what to run, what came out."""
    patient_id: str
    row: object | None  # the patients row as read (a Row), None for a new patient
    icu_admit: dt.datetime | None
    demographics: dict[str, float | None]
    items: list[Item] = field(default_factory=list)
    values: list[filing.Value] = field(default_factory=list)   # the new values, to store as messages
    item_hours: dict[int, int] = field(default_factory=dict)    # posted index -> its hour
    posted: dict[int, dt.datetime] = field(default_factory=dict)  # posted index -> its timestamp
    duplicates: list[int] = field(default_factory=list)         # posted indexes that changed nothing
    latest: int = 0                 # the latest stored hour before this request (0: none)
    earliest: int = 0               # the earliest hour a new value concerns
    rows: list[filing.Hour] = field(default_factory=list)       # the hours to (re-)step, consecutive
    state: np.ndarray | None = None  # before rows[0]; after the run, after rows[-1]
    stored: dict[int, object] = field(default_factory=dict)     # ICULOS -> the stored hourly row being re-stepped
    stale: list[int] = field(default_factory=list)              # stored row ids off the hourly grid (pre-grid data)
    risks: list[float] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)
    contributions: list[list[dict] | None] = field(default_factory=list)
    threshold: float | None = None  # the patient's unit's alarm threshold in force (service/alarms/thresholds.py)
    policy: AlarmPolicy | None = None
    alarm_ids: dict[int, int] = field(default_factory=dict)     # ICULOS -> the alarm raised there by this request
    alarm_kinds: dict[int, str] = field(default_factory=dict)
    message_ids: list[int] = field(default_factory=list)
    admitted: bool = False  # a new patient admitted by this request (its row is inserted with the admission)
    first_measured: int | None = None  # the stay's first measured hour (ICULOS) after this request; None: none yet

    def monitored(self, iculos: int | float) -> bool:
        """Whether hour `iculos` is at or after the first measured one: only those may alarm."""
        return self.first_measured is not None and iculos >= self.first_measured

    @property
    def late(self) -> bool:
        """A value for an hour before the latest one stored: an earlier hour is revised."""
        return 0 < self.earliest < self.latest

    def inputs(self) -> tuple:
        """Everything the model's steps for this plan depend on: equal inputs, equal outputs."""
        return (self.state.tobytes() if self.state is not None else b"", tuple(sorted(self.demographics.items())),
                tuple((h.iculos, h.elapsed, tuple(h.values.items())) for h in self.rows))


def _result(pid: str, ts: dt.datetime, o, threshold: float, model: str, version: str, monitored: bool,
            **extra) -> schemas.PredictResult:
    return schemas.PredictResult(
        patient_id=pid, timestamp=ts, risk=o["risk"], alarm=monitored and alarming(o["risk"], threshold),
        threshold=threshold,
        model=model, model_version=version, contributions=o["contributions"], elapsed_hours=o["elapsed_hours"],
        iculos=o["iculos"], **extra)


P, O, M = Patient.__table__, Observation.__table__, Message.__table__
_SELECT_ONE = select(P).where(P.c.id == bindparam("b_id"))
_ROWS_FROM = (select(O.c.id, O.c.ts, O.c.iculos, O.c.risk, O.c.revisions, O.c.state, O.c.model_name, O.c.model_version,
                     O.c.vitals, O.c.elapsed_hours)
              .where(O.c.patient_id == bindparam("b_id"), O.c.ts >= bindparam("b_from", type_=O.c.ts.type))
              .order_by(O.c.ts))
_STORED_COLS = (M.c.id, M.c.key, M.c.variable, M.c.value, M.c.ts, M.c.hour, M.c.status)
_ROW_COLUMNS = ("vitals", "elapsed_hours", "risk", "threshold", "contributions", "model_name", "model_version", "state")
_RESTEP = {c: bindparam(b, type_=O.c[c].type) for c, b in zip(_ROW_COLUMNS, (
    "b_vitals", "b_elapsed_hours", "b_risk", "b_threshold", "b_contributions", "b_model", "b_mversion", "b_state"))}
_RESTEP_ROW = update(O).where(O.c.id == bindparam("b_row")).values(**_RESTEP)
_REVISE_ROW = (update(O).where(O.c.id == bindparam("b_row"))
               .values(**_RESTEP, revised_at=bindparam("b_revised_at", type_=O.c.revised_at.type),
                       revised_by=bindparam("b_revised_by"), revisions=bindparam("b_revisions")))
_ADVANCE = (update(P).where(P.c.id == bindparam("b_id"), P.c.version == bindparam("b_version"))
            .values(version=bindparam("b_new_version"), state=bindparam("b_state"), model_name=bindparam("b_model_name"),
                    model_version=bindparam("b_model_version"), last_ts=bindparam("b_last_ts", type_=P.c.last_ts.type),
                    last_risk=bindparam("b_last_risk"), n_observations=bindparam("b_n_observations"),
                    last_measured=bindparam("b_last_measured", type_=P.c.last_measured.type),
                    first_measured=bindparam("b_first_measured", type_=P.c.first_measured.type)))
_INSERT_MESSAGES = insert(M).returning(M.c.id, sort_by_parameter_order=True)
_INSERT_HOURS = insert(O)
_SET_ALARM = update(O).where(O.c.id == bindparam("b_row")).values(alarm_id=bindparam("b_alarm"))


class Ingestor:
    def __init__(self, engine: Engine, active, units: UnitPoints, metrics: Metrics, clock: ServiceClock,
                 future_margin: dt.timedelta = dt.timedelta(hours=1), explain: bool = True, shadows=None,
                 revision_window: int = 72, max_gap: int = 168):
        """`active`: the active model's holder (service/lifecycle/active.py's ActiveModel), whose
        locks serialise each patient's writers in this process; `units`: each unit's alarm
        threshold of the model in force; `shadows`: service/lifecycle/shadows.py's Shadows, when
        shadow models are configured; `revision_window`: hours behind a patient's latest hour that
        a late value may still revise."""
        self.engine = engine
        self.active = active
        self.locks = active.locks
        self.units = units
        self.metrics = metrics
        self.clock = clock  # stamps a supersession (service/clock.py)
        self.future_margin = future_margin
        self.explainer = Explainer(metrics, explain)  # contributions per scored row (SEPSIS_EXPLAIN)
        self.shadows = shadows
        self.revision_window = revision_window
        self.max_gap = max_gap

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
              admission_field=lambda i: f"admissions.{i}.icu_admit_time", source: str = "json") -> tuple[list, int, dict[str, bool]]:
        """File, score and store `observations`, and the admissions of `admitting` (service/patients/
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
            groups.setdefault(o.patient_id, []).append(Item(i, o.patient_id, o.timestamp.astimezone(UTC), o.vitals,
                                                            o.status, o.source_id, source))
        computed: dict[str, tuple] = {}  # patient -> (inputs, risks, states, contributions) of the last attempt's steps
        runs = 0
        with self.locks.hold(list(groups) + admitting_ids), self.active.pin() as model:
            for _ in range(MAX_ATTEMPTS):
                plans, admits = self._plan(groups, admitting)
                runs += self._score(plans, single, computed)
                try:
                    results, raised = self._store(plans, admitting, admits)
                except Stale:
                    continue
                break
            else:
                raise Conflict("the patient's record kept changing under concurrent writers; retry the request")
        stored = sum(len(p.items) for p in plans)
        self.metrics.predictions.labels(model.name, model.version).inc(stored)
        if len(observations) - stored:
            self.metrics.duplicates.inc(len(observations) - stored)
        for event, n in raised.items():
            if n:
                self.metrics.alarm_events.labels(event).inc(n)
        for i, o in enumerate(observations):  # stored and scored as charted; the sender hears why it is doubtful
            found = implausible_values(o.vitals)
            results[i].warnings = [schemas.FieldWarning(field=f"vitals.{name}", reason=why) for name, why in found]
            for name, _ in found:
                self.metrics.implausible.labels(name).inc()
        return [results[i] for i in range(len(observations))], runs, {pid: pid in admits for pid in admitting_ids}

    # -- read ----------------------------------------------------------------------------------

    def _plan(self, groups: dict[str, list[Item]], admitting) -> tuple[list[Plan], set[str]]:
        """The plans of the patients with observations, and the ids of the patients this request
        admits (an admission of `admitting` without a stored row)."""
        with self.engine.begin() as s:
            ids = list(dict.fromkeys(list(groups) + (admitting.ids if admitting is not None else [])))
            found = s.execute(_SELECT_ONE, {"b_id": ids[0]}) if len(ids) == 1 else s.execute(select(P).where(P.c.id.in_(ids)))
            rows = {r.id: r for r in found}
            admits: set[str] = set()
            if admitting is not None:
                admitting.check(rows, s)
                admits = {pid for pid in admitting.ids if pid not in rows}
            thresholds = self.units.thresholds(s, self.model)
            plans = []
            for pid, items in groups.items():
                plan = self._patient_plan(pid, rows.get(pid), admitting.start(pid) if pid in admits else None, items)
                self._file(s, plan, items)
                if plan.rows:
                    chosen = thresholds[unit_of(plan.demographics.get("unit1"), plan.demographics.get("unit2"))]
                    plan.threshold, plan.policy = chosen.threshold, chosen.policy
                plans.append(plan)
            return plans, admits

    def _patient_plan(self, pid: str, row, admission, items: list[Item]) -> Plan:
        """`admission`: (ICU admission time, demographics) of a patient this request admits."""
        if row is None:
            icu_admit, demographics = admission or (None, None)
            if demographics is None:  # created by its first observation: that one is the admission
                first = min(items, key=lambda it: it.ts)
                icu_admit, demographics = first.ts, demographics_from_vitals(first.vitals)
            return Plan(pid, None, icu_admit, demographics, admitted=admission is not None)
        icu_admit = row.icu_admit_time or row.first_ts
        if icu_admit is None:  # admitted without an admission time: its first observation is
            icu_admit = min(it.ts for it in items)
        latest = hour_of(row.last_ts, icu_admit) if row.last_ts is not None else 0
        first = hour_of(row.first_measured, icu_admit) if row.first_measured is not None else None
        return Plan(pid, row, icu_admit, demographics_of(row), latest=latest, first_measured=first)

    def _file(self, s: Connection, plan: Plan, items: list[Item]) -> None:
        """Classify the items' values against the stored messages, find the hours they change and
        read what re-stepping those hours needs."""
        pid, row = plan.patient_id, plan.row
        values: list[filing.Value] = []
        for it in items:
            if row is not None and row.discharged_at is not None and it.ts > row.discharged_at:
                raise RowConflict(it.index, f"patient {pid} was discharged at {row.discharged_at.isoformat()}; "
                                  f"an observation at {it.ts.isoformat()} belongs to another stay (admit it under a "
                                  "new patient id). Nothing was stored.")
            try:
                hour = hour_of(it.ts, plan.icu_admit)
            except BeforeAdmission:
                raise RowConflict(it.index, f"timestamp {it.ts.isoformat()} precedes patient {pid}'s ICU admission time "
                                  f"{plan.icu_admit.isoformat()}. Nothing was stored.") from None
            plan.item_hours[it.index] = hour
            plan.posted[it.index] = it.ts
            values += filing.values_of(it.index, it.ts, it.vitals, it.status, it.source_id, hour)
        # Only these can match a stored message: a value of an hour already stepped, or one that
        # names its sender's id (an amendment may move a value to another hour). A key of variable
        # and time is new in an hour after the latest.
        maybe = {v.key for v in values if v.source_id is not None or v.hour <= plan.latest}
        stored = self._stored_by_key(s, pid, maybe) if row is not None and maybe and row.last_ts is not None else []
        verdicts = filing.classify(stored, values)
        new_items: set[int] = set()
        for v, verdict in zip(values, verdicts):
            if verdict == filing.NEW:
                plan.values.append(v)
                new_items.add(v.index)
            elif verdict != filing.DUPLICATE:
                raise RowConflict(v.index, f"patient {pid}: {verdict}. Nothing was stored.")
        plan.items = [it for it in items if it.index in new_items]
        plan.duplicates = [it.index for it in items if it.index not in new_items]
        if not plan.values:
            return
        keys = {v.key for v in plan.values}
        touched = [v.hour for v in plan.values] + [m.hour for m in stored if m.key in keys]
        plan.earliest = min(touched)
        newest = max(v.hour for v in plan.values)
        if plan.latest and plan.latest - plan.earliest >= self.revision_window:
            first = min(plan.values, key=lambda v: v.hour)
            raise RowConflict(first.index, f"patient {pid}: the value at {first.ts.isoformat()} falls in hour "
                              f"{plan.earliest} of the stay, {plan.latest - plan.earliest} hours before its latest hour "
                              f"({plan.latest}); the service revises at most the last {self.revision_window} hours "
                              "(SEPSIS_REVISION_WINDOW_HOURS). Nothing was stored.")
        if plan.latest and newest - plan.latest > self.max_gap:
            last = max(plan.values, key=lambda v: v.hour)
            raise RowConflict(last.index, f"patient {pid}: the value at {last.ts.isoformat()} falls in hour {newest} of "
                              f"the stay, {newest - plan.latest} hours after its latest hour ({plan.latest}); the service "
                              f"steps at most {self.max_gap} empty hours between values (SEPSIS_MAX_GAP_HOURS): check "
                              "the sender's clock, or admit a new stay under a new patient id. Nothing was stored.")
        start = min(plan.earliest, plan.latest + 1)
        plan.state, plan.stored, plan.stale, start = self._rewind(s, plan, start)
        messages = self._messages_from(s, pid, start) if row is not None and start <= plan.latest else []
        plan.rows = filing.hours(messages + plan.values, start, max(plan.latest, newest))
        plan.first_measured = first_measured_after(plan.first_measured, plan.rows)

    @staticmethod
    def _stored_by_key(s: Connection, pid: str, keys: set[str]) -> list[filing.Stored]:
        out = []
        keys = sorted(keys)
        for i in range(0, len(keys), KEY_CHUNK):
            out += s.execute(select(*_STORED_COLS).where(M.c.patient_id == pid, M.c.key.in_(keys[i:i + KEY_CHUNK]))).all()
        return [filing.Stored(*r) for r in sorted(out, key=lambda r: r.id)]

    @staticmethod
    def _messages_from(s: Connection, pid: str, start: int) -> list[filing.Stored]:
        """The stored messages of every key with a message in hour `start` or later (in arrival order)."""
        keys = select(M.c.key).where(M.c.patient_id == pid, M.c.hour >= start)
        q = select(*_STORED_COLS).where(M.c.patient_id == pid, M.c.key.in_(keys)).order_by(M.c.id)
        return [filing.Stored(*r) for r in s.execute(q)]

    def _rewind(self, s: Connection, plan: Plan, start: int):
        """(the state before hour `start`, the stored hourly rows from `start` by ICULOS, stored rows
        off the grid, the start). The state is the patient's (appending after its latest hour) or
        the stored one after hour `start` - 1, when they are of the model in force; otherwise (a
        model switched since) it is rebuilt by replaying the stored hours before `start`, which keep
        the risks they were shown with. Rows stored before the hourly grid (off it) make the whole
        stay refiled from its messages, from hour 1."""
        m, row = self.model, plan.row
        zeros = np.zeros(m.state_size, np.float32)
        if row is None or row.last_ts is None:  # nothing stepped yet
            return zeros, {}, [], 1
        if start == plan.latest + 1:
            state = stored_state(m, row.state, row.model_name, row.model_version)
            if state is not None:
                return state, {}, [], start
        if start > 1:
            found = s.execute(_ROWS_FROM, {"b_id": plan.patient_id, "b_from": hour_start(start - 1, plan.icu_admit)}).all()
            before = found[0] if found and found[0].ts == hour_start(start - 1, plan.icu_admit) else None
            state = None if before is None else stored_state(m, before.state, before.model_name, before.model_version)
            if state is not None:
                on_grid, stale = self._split(found[1:], plan)
                if not stale:
                    return state, on_grid, [], start
        everything = s.execute(_ROWS_FROM, {"b_id": plan.patient_id, "b_from": plan.icu_admit}).all()
        on_grid, stale = self._split(everything, plan)
        prior = [on_grid.get(h) for h in range(1, start)]
        if stale or any(r is None for r in prior):
            return zeros, on_grid, stale, 1
        if not prior:
            return zeros, on_grid, [], start
        _, states = replay(m, [stay(plan.patient_id, prior, plan.demographics)])
        return states[0], {h: r for h, r in on_grid.items() if h >= start}, [], start

    @staticmethod
    def _split(found, plan: Plan) -> tuple[dict[int, object], list[int]]:
        """Stored rows by ICULOS, and the ids of rows off the hourly grid (stored before it)."""
        on_grid, stale = {}, []
        for r in found:
            h = hour_of(r.ts, plan.icu_admit) if r.ts >= plan.icu_admit else 0
            if h and r.ts == hour_start(h, plan.icu_admit) and r.iculos == h:
                on_grid[h] = r
            else:
                stale.append(r.id)
        return on_grid, stale

    # -- run -----------------------------------------------------------------------------------

    def _score(self, plans: list[Plan], single: bool, computed: dict[str, tuple]) -> int:
        """Run the plans' hours (one model run per step across patients); a plan whose inputs equal
        those of an earlier attempt takes that attempt's outputs instead. Returns the runs made."""
        active = []
        for p in plans:
            if not p.rows:
                continue
            key = p.inputs()
            done = computed.get(p.patient_id)
            if done is not None and done[0] == key:
                p.risks, p.states, p.contributions = list(done[1]), list(done[2]), list(done[3])
            else:
                active.append((p, key))
        steps = max((len(p.rows) for p, _ in active), default=0)
        run = self.model.step_one if single else self.model.run
        state = {p.patient_id: p.state for p, _ in active}
        for k in range(steps):
            ps = [p for p, _ in active if len(p.rows) > k]
            obs = np.stack([model_input(p.rows[k].values, p.demographics, float(p.rows[k].iculos)) for p in ps])
            elapsed = np.array([[p.rows[k].elapsed] for p in ps], np.float32)  # [rows, 1], as the step takes it
            before = np.stack([state[p.patient_id] for p in ps])
            risk, next_state = run(obs, elapsed, before)
            why = self._explain(ps, k, risk, obs, elapsed, before, single)
            for j, p in enumerate(ps):
                p.risks.append(float(risk[j]))
                p.contributions.append(why[j])
                state[p.patient_id] = next_state[j].copy()
                p.states.append(state[p.patient_id])
        for p, key in active:
            computed[p.patient_id] = (key, tuple(p.risks), tuple(p.states), tuple(p.contributions))
        return steps

    def _explain(self, ps: list[Plan], k: int, risk, obs, elapsed, state, single: bool) -> list:
        """Contributions from the same pre-step rows, for what a ward sees: each patient's latest
        hour, the hours the request's values fall in, and every hour at or above its alarm
        threshold (any alarm's row); other re-stepped hours of a backfill or a rewind store null.
        Explaining every row cost about 25 times the model time of a batch (results/service_explain),
        which the batch row cap exists to bound."""
        rows = [j for j, p in enumerate(ps)
                if k == len(p.rows) - 1 or (p.threshold is not None and alarming(float(risk[j]), p.threshold))
                or (single and p.rows[k].iculos in p.item_hours.values())]
        why: list = [None] * len(ps)
        if rows:
            for j, c in zip(rows, self.explainer.contributions(self.model, obs[rows], elapsed[rows], state[rows])):
                why[j] = c
        return why

    # -- write ---------------------------------------------------------------------------------

    def _store(self, plans: list[Plan], admitting, admits: set[str]) -> tuple[dict, dict[str, int]]:
        """One transaction: the admitted patients' rows, each patient's messages, hourly rows, alarms
        and new state, the shadows' scores. Stale (start over) when another writer got there first."""
        now = dt.datetime.now(UTC)
        try:
            with self.engine.begin() as s:
                for pid in admits - {p.patient_id for p in plans if p.rows}:  # admitted, nothing to score yet
                    admitting.insert(s, pid, now)
                active = [p for p in plans if p.rows]
                for p in active:
                    self._write_patient(s, p, now, admitting)
                if active:  # every patient's messages and hours in one statement each, then the alarms
                    self._write_messages(s, active, now)
                    self._write_hours(s, active, now)
                for p in active:
                    self._write_alarms(s, p, now)
                if self.shadows is not None:  # in this transaction; a failing shadow is rolled back alone
                    self.shadows.record(s, [p for p in plans if p.rows])
                results = {}
                for p in plans:
                    results.update(self._results(s, p))
        except IntegrityError:
            raise Stale() from None
        raised = {"raised": 0, "realerted": 0}  # the metric's event: a first alarm, or a re-alert/escalation
        for p in plans:
            for kind in p.alarm_kinds.values():
                raised["realerted" if is_realert(kind) else "raised"] += 1
        return results, raised

    def _write_patient(self, s: Connection, p: Plan, now: dt.datetime, admitting) -> None:
        m = self.model
        last = p.rows[-1]
        posted = [(v.ts, {v.variable: v.value}) for v in p.values if v.variable is not None and v.status != "entered-in-error"]
        values = dict(state=state_to_bytes(p.states[-1]), model_name=m.name, model_version=m.version,
                      last_ts=hour_start(last.iculos, p.icu_admit), last_risk=p.risks[-1], n_observations=last.iculos,
                      last_measured=last_measured(posted, p.row.last_measured if p.row is not None else None),
                      first_measured=None if p.first_measured is None else hour_start(p.first_measured, p.icu_admit))
        first_ts = min(v.ts for v in p.values)
        if p.admitted:
            admitting.insert(s, p.patient_id, now, first_ts=first_ts, version=1, **values)
            return
        if p.row is None:
            s.execute(insert(P).values(
                id=p.patient_id, created_at=now, admitted_by="first_observation", icu_admit_time=p.icu_admit,
                first_ts=first_ts, version=1, **p.demographics, **values))
            return
        extra = {}
        if p.row.first_ts is None or first_ts < p.row.first_ts:
            extra["first_ts"] = first_ts
        if p.row.icu_admit_time is None:
            extra["icu_admit_time"] = p.icu_admit
        if extra:
            res = s.execute(update(P).where(P.c.id == p.patient_id, P.c.version == p.row.version)
                            .values(version=p.row.version + 1, **values, **extra))
        else:  # the hot path: a statement built once (building one per patient cost more than running it)
            res = s.execute(_ADVANCE, {"b_id": p.patient_id, "b_version": p.row.version,
                                       "b_new_version": p.row.version + 1, **{f"b_{k}": v for k, v in values.items()}})
        if res.rowcount != 1:
            raise Stale()

    def _write_messages(self, s: Connection, plans: list[Plan], now: dt.datetime) -> None:
        rows = []
        for p in plans:
            source = {it.index: it.source for it in p.items}
            rows += [dict(patient_id=p.patient_id, key=v.key, variable=v.variable, value=v.value,
                          unit=LIMITS[v.variable].unit if v.variable in LIMITS else None, ts=v.ts, hour=v.hour,
                          status=v.status, source=source[v.index], source_id=v.source_id, received_at=now)
                     for v in p.values]
        ids = s.execute(_INSERT_MESSAGES, rows).scalars().all()
        at = 0
        for p in plans:
            p.message_ids = list(ids[at:at + len(p.values)])
            at += len(p.values)

    def _write_hours(self, s: Connection, plans: list[Plan], now: dt.datetime) -> None:
        """Insert the new hours and update the re-stepped ones: a changed risk is a revision by the
        request's first message for the earliest hour it concerns."""
        m = self.model
        inserts, revised, kept, stale = [], [], [], []
        for p in plans:
            first = min(range(len(p.values)), key=lambda k: (p.values[k].hour, k))
            reviser = p.message_ids[first]
            stale += p.stale
            for k, h in enumerate(p.rows):
                common = {"b_vitals": h.values, "b_elapsed_hours": h.elapsed, "b_risk": p.risks[k],
                          "b_threshold": p.threshold, "b_contributions": p.contributions[k], "b_model": m.name,
                          "b_mversion": m.version, "b_state": state_to_bytes(p.states[k])}
                old = p.stored.get(h.iculos)
                if old is None:
                    inserts.append(dict(patient_id=p.patient_id, ts=hour_start(h.iculos, p.icu_admit),
                                        iculos=float(h.iculos), first_risk=p.risks[k], revisions=0, received_at=now,
                                        **{c: v for c, v in zip(_ROW_COLUMNS, common.values())}))
                elif old.risk != p.risks[k]:
                    revised.append({"b_row": old.id, **common, "b_revised_at": now, "b_revised_by": reviser,
                                    "b_revisions": old.revisions + 1})
                else:  # the same risk: not a revision (an earlier one's stamp stays)
                    kept.append({"b_row": old.id, **common})
        if stale:
            s.execute(O.delete().where(O.c.id.in_(stale)))
        if revised:
            s.execute(_REVISE_ROW, revised)
        if kept:
            s.execute(_RESTEP_ROW, kept)
        if inserts:
            s.execute(_INSERT_HOURS, inserts)

    def _write_alarms(self, s: Connection, p: Plan, now: dt.datetime) -> None:
        """Alarms follow the latest hour: the policy sees the hours from the latest stored one on
        (re-stepped or new), each at the time its latest value was measured (the hour's start when
        it has none), and none before the patient's first measured hour: a risk from the
        demographics alone raises nothing (models.alarm_figures). A late value that makes an
        earlier hour the first measured one raises, if anything, at the latest hour, as any late
        value does."""
        m = self.model
        scored = [(k, h) for k, h in enumerate(p.rows) if h.iculos >= max(p.latest, 1) and p.monitored(h.iculos)]
        raised = alarm_store.raise_alarms(
            s, p.patient_id, p.row is not None,
            [alarm_store.Scored(max(hour_start(h.iculos, p.icu_admit), h.last_at or p.icu_admit), p.risks[k],
                                p.contributions[k]) for k, h in scored],
            p.policy, m.name, m.version, lambda ts: self.clock.now(s) if self.clock.simulated else now,
            late_result=p.late,
            was_alarming=p.row is not None and p.row.last_risk is not None and alarming(p.row.last_risk, p.threshold))
        hits = [(h.iculos, r) for (_, h), r in zip(scored, raised) if r is not None]
        if hits:
            ids = {r.ts: r.id for r in s.execute(select(O.c.id, O.c.ts).where(
                O.c.patient_id == p.patient_id, O.c.ts.in_([hour_start(h, p.icu_admit) for h, _ in hits])))}
            s.execute(_SET_ALARM, [{"b_row": ids[hour_start(h, p.icu_admit)], "b_alarm": r.id} for h, r in hits])
            p.alarm_ids = {h: r.id for h, r in hits}
            p.alarm_kinds = {h: r.kind for h, r in hits}

    def _results(self, s: Connection, p: Plan) -> dict[int, schemas.PredictResult]:
        """The answers for a plan's posted observations, by request index: each one's hour as it
        stands after this request (a duplicate's as stored, when this request did not re-step it)."""
        m = self.model
        out = {}
        row_of = {h.iculos: k for k, h in enumerate(p.rows)}
        latest = dict(latest_iculos=p.rows[-1].iculos, latest_risk=p.risks[-1]) if p.rows else {}
        revised = [h.iculos for k, h in enumerate(p.rows)
                   if h.iculos in p.stored and p.stored[h.iculos].risk != p.risks[k]]
        missing = []
        for index, hour in p.item_hours.items():
            k = row_of.get(hour)
            if k is None:
                missing.append((index, hour))
                continue
            h = p.rows[k]
            o = dict(risk=p.risks[k], contributions=p.contributions[k], elapsed_hours=h.elapsed, iculos=float(h.iculos))
            out[index] = _result(p.patient_id, p.posted[index], o, p.threshold, m.name, m.version,
                                 p.monitored(h.iculos), hour_start=hour_start(hour, p.icu_admit), alarm_id=p.alarm_ids.get(hour), alarm_kind=p.alarm_kinds.get(hour),
                                 duplicate=index in p.duplicates, revised_hours=revised, **latest)
        if missing:
            ts = {hour_start(h, p.icu_admit) for _, h in missing}
            stored = {r.ts: r for r in s.execute(select(O).where(O.c.patient_id == p.patient_id, O.c.ts.in_(ts)))}
            for index, hour in missing:
                r = stored.get(hour_start(hour, p.icu_admit))
                if r is None:  # a duplicate of a value whose hour was never stepped (a row removed since)
                    raise RowConflict(index, f"patient {p.patient_id} has no stored hour {hour} for this observation")
                o = dict(risk=r.risk, contributions=r.contributions, elapsed_hours=r.elapsed_hours, iculos=r.iculos)
                out[index] = _result(p.patient_id, p.posted[index], o, r.threshold, r.model_name,
                                     r.model_version, p.monitored(hour), hour_start=r.ts, alarm_id=r.alarm_id, duplicate=True)
        return out


def first_measured_after(stored: int | None, rows: list[filing.Hour]) -> int | None:
    """The stay's first measured hour once `rows` (consecutive, to the stay's latest hour) are
    re-stepped: the stored one when it lies before them (those hours are unchanged), else the
    first of `rows` with a vital sign or lab (a late value may make an earlier hour the first; an
    entered-in-error may leave a later one, or none)."""
    if not rows:
        return stored
    if stored is not None and stored < rows[0].iculos:
        return stored
    return next((h.iculos for h in rows if measured(h.values)), None)
