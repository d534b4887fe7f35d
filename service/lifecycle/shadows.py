"""Shadow models: candidates configured beside the active model
(SEPSIS_SHADOW_MODELS="name:version,...") that score every observation the active model scores,
silently, so a team can compare them on the ward's own outcomes before switching.

Each shadow keeps its own state per patient (`shadow_states`) and stores its risk for every
observation (`shadow_scores`), in the transaction that stores the live observation: both are
committed or neither. Its would-be alarms follow the live alarm policy (`service.alarms.rules.policy_events`,
at the shadow card's threshold with its table's policy) on its own episodes, none before the
patient's first measured hour (models.alarm_figures: a patient is monitored from it, as the live
alarms and figures are), and none is raised once the patient's outcome is recorded. Nobody acts on a shadow's alarm, so it is what an unanswered live
alarm is: it ends when the risk falls below the threshold and is sent again after the policy's
lockout while the risk stays above. Nothing notifies: no /alarms row, no alarm metric.

A late or amended value rewinds a shadow as it rewinds the live model: each score row keeps the
shadow's state after its hour, so the shadow resumes from its row for the hour before the first one
re-stepped and re-steps only the hours from there on (`service.scoring.rebuild`: `stored_state`,
then the one replay). That row is trusted only while the shadow's state per patient covers the
patient's whole stored history (`n_observations`, `last_ts`); otherwise, or where the row has no
state (scores stored before states were kept, migration 0014), the shadow replays the stay from the
admission and writes every score again, states included.

A failing shadow never fails the live answer: its work runs in a savepoint that is rolled back
alone (the error is logged and counted in sepsis_shadow_failures_total), and its state for those
patients is dropped: a rolled-back rewind leaves the patient's count and latest hour as they were,
so only a missing state says that its scores no longer follow the stored rows. The next
observation rebuilds it from the stored observations, back-filling the scores it missed. The extra
time a shadow adds to a request is its model steps for the hours the request re-steps (the live
model's), plus, at most once after a failure, a correction or a shadow newly configured, one
replay of the patient's stored history: bounded by the stay's length, as the live model's own
rebuild is.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from prometheus_client import Counter
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine

from models.alarm_policy import AlarmPolicy
from models.grid import hour_start
from models.operating_points import load_operating_points
from service.alarms.rules import LatestAlarm, alarming, monitored, policy_events
from service.alarms.thresholds import policy_at
from service.inputs import model_input, state_from_bytes, state_to_bytes
from service.metrics import Metrics
from service.scoring.inference import Model
from service.scoring.rebuild import Stay, replay_hours, stay, stored_state
from service.stats import AlarmFact, PatientFact, alarm_stats, auroc, verdict
from service.storage.db import read_only
from service.storage.tables import Observation, Patient, ShadowScore, ShadowState

log = logging.getLogger("service.lifecycle.shadows")
P, O, SS, SC = Patient.__table__, Observation.__table__, ShadowState.__table__, ShadowScore.__table__


def parse_shadow_models(text: str) -> list[tuple[str, str]]:
    """"name:version,name:version" -> [(name, version)]; a clear error for anything else."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, version = part.partition(":")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"SEPSIS_SHADOW_MODELS: {part!r} is not name:version (e.g. sepsis-cfc:3)")
        out.append((name.strip(), version.strip()))
    if len(set(out)) != len(out):
        raise ValueError(f"SEPSIS_SHADOW_MODELS: a model is listed twice in {text!r}")
    return out


@dataclass
class _Patient:
    """One patient's part of a request, as the shadow needs it."""
    patient_id: str
    prior_n: int                    # hours before the first one this request (re-)steps
    prior_last: dt.datetime | None
    latest: int                     # the patient's hours stored before this request
    latest_ts: dt.datetime | None
    demographics: dict
    ts: list[dt.datetime]
    obs: np.ndarray                 # [k, 40]
    elapsed: np.ndarray             # [k]
    first_measured: dt.datetime | None = None  # the start of the stay's first measured hour (None: none yet)


def _from_plan(p) -> _Patient:
    """The hours a plan (service/scoring/ingest.py) stepped: a rewind re-steps stored hours, so the
    shadow's history is what precedes the first of them."""
    start = p.rows[0].iculos
    ts = [hour_start(h.iculos, p.icu_admit) for h in p.rows]
    return _Patient(p.patient_id, start - 1, hour_start(start - 1, p.icu_admit) if start > 1 else None,
                    p.latest, hour_start(p.latest, p.icu_admit) if p.latest else None, p.demographics, ts,
                    np.stack([model_input(h.values, p.demographics, float(h.iculos)) for h in p.rows]),
                    np.array([h.elapsed for h in p.rows], np.float32),
                    hour_start(p.first_measured, p.icu_admit) if p.first_measured is not None else None)


def _alarms(risks, ts, policy: AlarmPolicy, alarm_at: dt.datetime | None, closed: bool,
            first_measured: dt.datetime | None):
    """The would-be alarms of a run of scores under the shadow's alarm policy (`rules.policy_events`)
    with nobody acting: (flags, the raise time of the alarm still open afterwards, None when quiet).
    Unanswered, an alarm stays open while the risk stays at or above the threshold, so the episode
    is open exactly when the last risk is; it is sent again after the policy's lockout. Hours
    before `first_measured` (the patient's first measured hour; None: none yet) raise nothing and
    the policy does not see them, as live."""
    steps = [(t, float(r)) for t, r in zip(ts, risks)]
    watched = [monitored(first_measured, t) for t in ts]
    if closed or not any(watched):
        return [False] * len(steps), alarm_at
    before = watched.index(True)  # hours come in time order: the unmonitored ones first
    latest = None if alarm_at is None else LatestAlarm(0, "open", alarm_at, policy.threshold)
    flags = [False] * before + [kind is not None for kind in policy_events(policy, latest, (), steps[before:])]
    if not alarming(steps[-1][1], policy.threshold):
        return flags, None
    raised = [t for t, f in zip(ts, flags) if f]
    return flags, raised[-1] if raised else alarm_at


class Shadows:
    def __init__(self, models: Sequence[Model], metrics: Metrics, engine: Engine):
        self.models = list(models)
        self.engine = engine
        self.policies = {(m.name, m.version): policy_at(load_operating_points(m.runtime.model_dir), m.threshold)
                         for m in self.models}
        r = metrics.registry
        self.failures = Counter("sepsis_shadow_failures_total", "Shadow model runs rolled back (the live answer stood)",
                                ["model", "version"], registry=r)
        self.scores = Counter("sepsis_shadow_scores_total", "Observations scored by a shadow model",
                              ["model", "version"], registry=r)

    def record(self, conn, plans) -> None:
        """Score the plans' new observations with every shadow, inside `conn`'s transaction."""
        patients = [_from_plan(p) for p in plans if p.rows]
        if not patients or not self.models:
            return
        ids = [p.patient_id for p in patients]
        closed = {pid for pid, outcome in conn.execute(select(P.c.id, P.c.outcome).where(P.c.id.in_(ids)))
                  if outcome is not None}
        for m in self.models:
            try:
                with conn.begin_nested():
                    n = self._record(conn, m, patients, closed)
                self.scores.labels(m.name, m.version).inc(n)
            except Exception:  # noqa: BLE001 - whatever a shadow does wrong, the live answer stands
                log.exception("shadow model %s:%s failed on patients %s; rolled back alone", m.name, m.version, ids[:5])
                self.failures.labels(m.name, m.version).inc()
                self._forget(conn, m, ids)

    def comparison(self, active: Model, since: dt.datetime | None = None) -> dict:
        """`compare` of the active model and every shadow, on a read-only connection."""
        with read_only(self.engine).connect() as conn:
            return compare(conn, active, self.models, since)

    def _record(self, conn, m: Model, patients: list[_Patient], closed: set[str]) -> int:
        key = (SS.c.model_name == m.name, SS.c.model_version == m.version)
        have = {r.patient_id: r for r in conn.execute(
            select(SS).where(SS.c.patient_id.in_([p.patient_id for p in patients]), *key))}
        starts, episodes, kept = [], [], {}
        for p in patients:
            if p.patient_id in closed:
                # as live: a recorded outcome raises nothing new, and what was raised before it stands,
                # so the would-be alarms of the hours this request re-steps are kept as they were
                kept[p.patient_id] = set(conn.execute(select(SC.c.ts).where(
                    SC.c.patient_id == p.patient_id, SC.c.model_name == m.name, SC.c.model_version == m.version,
                    SC.c.alarm.is_(True), SC.c.ts >= p.ts[0])).scalars())
            state, alarm_at = self._resume(conn, m, p, have.get(p.patient_id))
            if state is None:
                state, alarm_at = self._rebuild(conn, m, p)
            starts.append(state)
            episodes.append(alarm_at)
        risks, states = replay_hours(m, [Stay(p.patient_id, 0, p.obs, p.elapsed) for p in patients], np.stack(starts))
        rows = []
        for i, p in enumerate(patients):
            flags, alarm_at = _alarms(risks[i], p.ts, self.policies[(m.name, m.version)], episodes[i],
                                     p.patient_id in closed, p.first_measured)
            if p.patient_id in kept:
                flags = [t in kept[p.patient_id] for t in p.ts]
            rows += _score_rows(m, p.patient_id, p.ts, risks[i], flags, states[i])
            values = dict(state=state_to_bytes(states[i][-1]), n_observations=p.prior_n + len(p.ts), last_ts=p.ts[-1],
                          last_risk=float(risks[i][-1]), alarm_at=alarm_at)
            if p.patient_id in have:
                conn.execute(update(SS).where(SS.c.patient_id == p.patient_id, *key).values(**values))
            else:
                conn.execute(insert(SS).values(patient_id=p.patient_id, model_name=m.name, model_version=m.version,
                                               **values))
        conn.execute(insert(SC), rows)
        return len(rows)

    def _resume(self, conn, m: Model, p: _Patient, r) -> tuple[np.ndarray | None, dt.datetime | None]:
        """The shadow's state and episode before the request's first hour without a replay: a new
        stay's; its state per patient (`r`) when the request appends to what it covers; on a rewind,
        its state stored with its score of the hour before, when `r` covers the patient's whole
        stored history (so every stored score follows the stored rows), its later scores deleted
        to be written again. (None, None) where none of these holds: the caller replays."""
        mine = (SC.c.patient_id == p.patient_id, SC.c.model_name == m.name, SC.c.model_version == m.version)
        if p.prior_n == 0:
            conn.execute(delete(SC).where(*mine))
            return m.new_state(), None
        if r is None:
            return None, None
        if (r.n_observations, r.last_ts) == (p.prior_n, p.prior_last):
            return state_from_bytes(r.state, m.state_size), r.alarm_at
        if (r.n_observations, r.last_ts) != (p.latest, p.latest_ts):
            return None, None
        before = conn.execute(select(SC.c.state, SC.c.risk).where(*mine, SC.c.ts == p.prior_last)).first()
        state = None if before is None else stored_state(m, before.state, m.name, m.version)
        if state is None:
            return None, None
        alarm_at = None
        if alarming(before.risk, self.policies[(m.name, m.version)].threshold):
            # an episode opens with an alarm (models.alarm_policy: quiet and at the threshold raises),
            # so the one open at that hour was last sent at the latest flagged score up to it
            alarm_at = conn.execute(select(func.max(SC.c.ts)).where(*mine, SC.c.alarm.is_(True),
                                                                    SC.c.ts <= p.prior_last)).scalar()
        conn.execute(delete(SC).where(*mine, SC.c.ts > p.prior_last))
        return state, alarm_at

    def _rebuild(self, conn, m: Model, p: _Patient) -> tuple[np.ndarray, dt.datetime | None]:
        """The shadow's state and episode after the patient's stored history (before this request),
        its scores for that history written afresh (the ones it missed included)."""
        history = conn.execute(select(O.c.ts, O.c.vitals, O.c.elapsed_hours, O.c.iculos)
                               .where(O.c.patient_id == p.patient_id, O.c.ts <= p.prior_last).order_by(O.c.ts)).all()
        conn.execute(delete(SC).where(SC.c.patient_id == p.patient_id, SC.c.model_name == m.name,
                                      SC.c.model_version == m.version))
        if not history:
            return m.new_state(), None
        risks, states = replay_hours(m, [stay(p.patient_id, history, p.demographics)])
        ts = [o.ts for o in history]
        # The outcome's time against the history is not known: the history's would-be alarms are
        # counted as if it had not been recorded yet.
        flags, alarm_at = _alarms(risks[0], ts, self.policies[(m.name, m.version)], None, False, p.first_measured)
        conn.execute(insert(SC), _score_rows(m, p.patient_id, ts, risks[0], flags, states[0]))
        return states[0][-1], alarm_at

    def _forget(self, conn, m: Model, ids: list[str]) -> None:
        """Drop the shadow's states of a failed run's patients, so that their next observation
        replays their stays: a rolled-back rewind leaves the patient's count and latest hour as
        they were, and its scores from the rewound hour on as they were before the revision."""
        try:
            with conn.begin_nested():
                conn.execute(delete(SS).where(SS.c.patient_id.in_(ids), SS.c.model_name == m.name,
                                              SS.c.model_version == m.version))
        except Exception:  # noqa: BLE001 - the live answer stands regardless
            log.exception("shadow model %s:%s: could not drop the states of patients %s", m.name, m.version, ids[:5])


def _score_rows(m: Model, pid: str, ts, risks, flags, states) -> list[dict]:
    return [dict(patient_id=pid, model_name=m.name, model_version=m.version, ts=t, risk=float(r),
                 threshold=m.threshold, alarm=f, state=state_to_bytes(x))
            for t, r, f, x in zip(ts, risks, flags, states)]


# -- comparison ------------------------------------------------------------------------------------

AUROC_DEFINITION = ("patient-hour AUROC: each scored observation of a patient with a recorded outcome, positive "
                    "when it lies in the true-alarm window (12 h before to 3 h after sepsis onset), else negative")


def _scores(conn, table, name: str, version: str, since: dt.datetime | None) -> dict:
    """{(patient_id, ts): (risk, raised an alarm)} of one model."""
    alarm = table.c.alarm_id.is_not(None) if table is O else table.c.alarm
    q = select(table.c.patient_id, table.c.ts, table.c.risk, alarm).where(
        table.c.model_name == name, table.c.model_version == version)
    if since is not None:
        q = q.where(table.c.ts >= since)
    return {(pid, ts): (risk, bool(a)) for pid, ts, risk, a in conn.execute(q)}


def _figures(scores: dict, cohort: set, outcomes: dict, first_measured: dict) -> dict:
    """`first_measured`: each patient's first measured hour's start (None: none): the alarm
    figures count the hours from it, as /stats does; the AUROC reads every scored hour's risk."""
    spans: dict[str, list] = {}
    for pid, ts in cohort:
        lo_hi = spans.setdefault(pid, [None, None])
        begin = first_measured.get(pid)
        if begin is not None and ts >= begin:
            lo_hi[0] = ts if lo_hi[0] is None else min(lo_hi[0], ts)
            lo_hi[1] = ts if lo_hi[1] is None else max(lo_hi[1], ts)
    patients = [PatientFact(pid, *outcomes.get(pid, (None, None)),
                            (hi - lo).total_seconds() / 3600.0 + 1.0 if lo is not None else 0.0, lo)
                for pid, (lo, hi) in sorted(spans.items())]
    raised = [(pid, ts) for (pid, ts) in sorted(cohort) if scores[(pid, ts)][1]]
    # Nobody acts on a would-be alarm: it is open until the patient's next one replaces it, as an
    # unanswered live alarm is until superseded.
    alarms = []
    for k, (pid, ts) in enumerate(raised):
        later = raised[k + 1] if k + 1 < len(raised) else None
        alarms.append(AlarmFact(pid, ts, closed_at=later[1] if later is not None and later[0] == pid else None))
    risks, labels = [], []
    for pid, ts in cohort:
        outcome, onset = outcomes.get(pid, (None, None))
        if outcome is not None:
            risks.append(scores[(pid, ts)][0])
            labels.append(verdict(ts, outcome, onset) == "true")
    return {"auroc": auroc(risks, labels), "hours_with_outcome": len(labels), "hours_in_window": int(sum(labels)),
            **alarm_stats(alarms, patients)}


def compare(conn, active: Model, shadows: Sequence[Model], since: dt.datetime | None = None) -> dict:
    """The active model and each shadow on the same observations: those every one of them scored
    (the active model's are the observations stamped with its name and version)."""
    entries = [("active", active, _scores(conn, O, active.name, active.version, since))]
    entries += [("shadow", m, _scores(conn, SC, m.name, m.version, since)) for m in shadows]
    cohort = set(entries[0][2])
    for _, _, scores in entries[1:]:
        cohort &= set(scores)
    ids = {pid for pid, _ in cohort}
    outcomes, firsts = {}, {}
    if ids:
        for pid, outcome, onset, first in conn.execute(select(P.c.id, P.c.outcome, P.c.onset_time, P.c.first_measured)
                                                       .where(P.c.id.in_(list(ids)))):
            outcomes[pid] = (outcome, onset)
            firsts[pid] = first
    return {
        "since": since,
        "observations": len(cohort),
        "patients": len(ids),
        "patients_with_outcome": sum(outcomes.get(pid, (None,))[0] is not None for pid in ids),
        "auroc_definition": AUROC_DEFINITION,
        "window_hours": [-12.0, 3.0],
        "models": [{"role": role, "model": m.name, "version": m.version, "threshold": m.threshold,
                    "scored_observations": len(scores), **_figures(scores, cohort, outcomes, firsts)}
                   for role, m, scores in entries],
    }
