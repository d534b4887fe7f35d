"""Switching the active model without losing a patient (issue 17 item 4).

The new model's state for every monitored patient is rebuilt from their stored observations, the
whole ward stepped together (`lockstep`: one runtime call per hour of stay across every patient
still running, longest stays first), exactly as they were scored: their stored ICULOS and elapsed
hours, their admission's demographics. Nothing stored is changed or reordered except each patient's
state columns (state, model_name, model_version, version).

Observations keep arriving meanwhile, so the switch runs in two phases:
1. rebuild, holding no lock: read each patient row (its `version`), then its observations, and step;
2. under every patient lock of this process (`StripedLocks.hold_all`): re-read the versions,
   rebuild again the few patients that advanced (or were corrected, or arrived) since phase 1,
   write every state with `UPDATE ... WHERE version = <read>` in one transaction, and swap the
   active model. Requests pin the active model once they hold their patients' locks
   (`Ingestor.pinned`), so each is answered wholly by the old model or wholly by the new one.

A patient another process advanced between the re-read and the write keeps that process's state
(its version moved); the first request that finds a state of another model rebuilds it
(`Ingestor._patient_plan`), so no patient is lost either way. Discharged patients are not rebuilt
now: they are rebuilt the same way if an observation of theirs ever arrives.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import bindparam, false, or_, select, update
from sqlalchemy.engine import Engine

from service.lifecycle import active as active_model
from service.errors import Conflict
from models.contract import N_FEATURES
from service.scoring.inference import Model
from service.inputs import DEMOGRAPHIC_FIELDS, model_input, state_to_bytes
from service.scoring.locks import StripedLocks
from service.storage.db import read_only
from service.storage.tables import Observation, Patient

log = logging.getLogger("service.lifecycle.upgrades")
UTC = dt.timezone.utc
P, O = Patient.__table__, Observation.__table__
CHUNK_PATIENTS = 1000  # patients read and stepped together; progress is reported per chunk


@dataclass
class Stay:
    """One patient's stored observations as model inputs, and the patient row's version when read."""
    patient_id: str
    version: int
    obs: np.ndarray      # [T, 40] float32
    elapsed: np.ndarray  # [T] float32 hours


def lockstep(model: Model, stays: Sequence[Stay], initial: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """(risks [T_i] per stay, final states [n, S]) of every stay stepped from `initial` [n, S] (default:
    a new patient's state): one runtime call per hour across the stays still running (longest
    first, so they are a prefix of the batch)."""
    n = len(stays)
    states = np.zeros((n, model.state_size), np.float32)
    if n == 0:
        return [], states
    lengths = np.array([len(s.obs) for s in stays], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.concatenate([s.obs for s in stays]).astype(np.float32, copy=False)
    gaps = np.concatenate([s.elapsed for s in stays]).astype(np.float32, copy=False)
    order = np.argsort(-lengths, kind="stable")
    if initial is not None:
        states[:] = np.asarray(initial, np.float32)[order]
    running = lengths[order]
    risks = np.empty(len(values), np.float32)
    for t in range(int(lengths.max(initial=0))):
        k = int(np.count_nonzero(running > t))
        rows = offsets[order[:k]] + t
        res = model.runtime.step(values[rows], gaps[rows, None], states[:k])
        states[:k] = res.next_state
        risks[rows] = res.risk
    final = np.empty_like(states)
    final[order] = states  # a stay's row stops changing once it has ended (it left the prefix)
    return [risks[offsets[i]:offsets[i + 1]] for i in range(n)], final


def _monitored():
    """Patients still on the ward with a state to carry: not discharged, at least one observation."""
    return (P.c.n_observations > 0, P.c.discharged_at.is_(None),
            or_(P.c.outcome.is_(None), P.c.outcome != "no_sepsis"))


def monitored_versions(conn) -> dict[str, int]:
    return dict(conn.execute(select(P.c.id, P.c.version).where(*_monitored())).all())


def read_stays(conn, ids: Sequence[str]) -> list[Stay]:
    """The patients' rows, then their observations in time order, as the model's inputs. A write
    that lands between the two reads moves the row's version, so phase 2 rebuilds that patient."""
    if not ids:
        return []
    cols = [P.c.id, P.c.version] + [P.c[f] for f in DEMOGRAPHIC_FIELDS.values()]
    rows = {r.id: r for r in conn.execute(select(*cols).where(P.c.id.in_(list(ids))))}
    history: dict[str, list] = {pid: [] for pid in rows}
    q = (select(O.c.patient_id, O.c.vitals, O.c.elapsed_hours, O.c.iculos)
         .where(O.c.patient_id.in_(list(rows))).order_by(O.c.patient_id, O.c.ts))
    for o in conn.execute(q):
        history[o.patient_id].append(o)
    stays = []
    for pid, r in rows.items():
        demo = {f: getattr(r, f) for f in DEMOGRAPHIC_FIELDS.values()}
        obs = history[pid]
        x = (np.stack([model_input(o.vitals, demo, o.iculos) for o in obs]) if obs
             else np.zeros((0, N_FEATURES), np.float32))
        stays.append(Stay(pid, r.version, x, np.array([o.elapsed_hours for o in obs], np.float32)))
    return stays


@dataclass
class Progress:
    """What GET /models/upgrade reports, during a switch and after it."""
    state: str = "idle"                 # idle / running / done / failed
    from_model: str | None = None       # "name:version"
    to_model: str | None = None
    phase: str | None = None            # rebuild / catch_up / swap
    patients_total: int = 0
    patients_rebuilt: int = 0
    hours_rebuilt: int = 0
    caught_up: int = 0                  # patients rebuilt again under the locks: they advanced meanwhile
    left_for_lazy_rebuild: int = 0      # changed by another process at the write; rebuilt on their next request
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    rebuild_seconds: float | None = None
    pause_seconds: float | None = None  # how long this process's writes waited for the swap
    seconds: float | None = None
    patients_per_second: float | None = None
    hours_per_second: float | None = None
    error: str | None = None
    by: str | None = None
    note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


_WRITE_STATE = (update(P).where(P.c.id == bindparam("b_id"), P.c.version == bindparam("b_version"))
                .values(state=bindparam("b_state"), model_name=bindparam("b_model"),
                        model_version=bindparam("b_mversion"), version=bindparam("b_version") + 1))


@dataclass
class Upgrades:
    """Model switches of one service process; at most one at a time."""
    engine: Engine
    locks: StripedLocks
    current: Callable[[], Model]              # the active model now
    activate: Callable[[Model], None]         # swap it (called holding every lock)
    chunk: int = CHUNK_PATIENTS
    progress: Progress = field(default_factory=Progress)
    _running: threading.Lock = field(default_factory=threading.Lock)

    def switch(self, target: Model, *, by: str | None = None, note: str | None = None,
               audit: Callable[[object, Progress], None] | None = None,
               on_chunk: Callable[[Progress], None] | None = None) -> Progress:
        """Rebuild every monitored patient on `target`, then make it the active model. `audit(conn,
        progress)` writes the switch's audit row in the transaction that writes the states;
        `on_chunk` is called after each rebuilt chunk (tests use it to write meanwhile)."""
        if not self._running.acquire(blocking=False):
            raise Conflict(f"a model switch is running ({self.progress.from_model} -> {self.progress.to_model}); "
                           "GET /models/upgrade shows its progress")
        try:
            old = self.current()
            if (old.name, old.version) == (target.name, target.version):
                raise Conflict(f"{target.name}:{target.version} is already the active model; nothing was changed")
            p = self.progress = Progress(state="running", from_model=f"{old.name}:{old.version}",
                                         to_model=f"{target.name}:{target.version}", phase="rebuild",
                                         started_at=dt.datetime.now(UTC), by=by, note=note)
            try:
                self._switch(target, p, audit, on_chunk)
            except BaseException as err:
                p.state, p.error, p.finished_at = "failed", f"{type(err).__name__}: {err}", dt.datetime.now(UTC)
                log.exception("model switch %s -> %s failed; the active model is unchanged", p.from_model, p.to_model)
                raise
            return p
        finally:
            self._running.release()

    def _rebuild(self, target: Model, ids: list[str], p: Progress) -> dict[str, tuple[int, np.ndarray]]:
        reader = read_only(self.engine)
        with reader.connect() as conn:
            stays = read_stays(conn, ids)
        _, states = lockstep(target, stays)
        p.hours_rebuilt += sum(len(s.obs) for s in stays)
        return {s.patient_id: (s.version, states[i]) for i, s in enumerate(stays)}

    def _switch(self, target: Model, p: Progress, audit, on_chunk) -> None:
        start = time.perf_counter()
        with read_only(self.engine).connect() as conn:
            ids = sorted(monitored_versions(conn))
        p.patients_total = len(ids)
        built: dict[str, tuple[int, np.ndarray]] = {}
        for i in range(0, len(ids), self.chunk):
            built.update(self._rebuild(target, ids[i:i + self.chunk], p))
            p.patients_rebuilt = len(built)
            log.info("model switch %s -> %s: %d of %d patients rebuilt (%d hours)", p.from_model, p.to_model,
                     p.patients_rebuilt, p.patients_total, p.hours_rebuilt)
            if on_chunk is not None:
                on_chunk(p)
        p.rebuild_seconds = time.perf_counter() - start
        with self.locks.hold_all():
            paused = time.perf_counter()
            p.phase = "catch_up"
            with read_only(self.engine).connect() as conn:
                now = monitored_versions(conn)
            behind = sorted(pid for pid, v in now.items() if built.get(pid, (None,))[0] != v)
            for pid in set(built) - set(now):  # discharged meanwhile: keeps the state it has
                del built[pid]
            if behind:
                built.update(self._rebuild(target, behind, p))
            p.caught_up = len(behind)
            p.patients_total = len(built)
            p.patients_rebuilt = len(built)
            p.phase = "swap"
            params = [{"b_id": pid, "b_version": v, "b_state": state_to_bytes(s), "b_model": target.name,
                       "b_mversion": target.version} for pid, (v, s) in built.items()]
            with self.engine.begin() as s:
                if params:
                    s.execute(_WRITE_STATE, params)
                moved = s.execute(select(P.c.id).where(P.c.id.in_(list(built)) if built else false(),
                                                       or_(P.c.model_name != target.name,
                                                           P.c.model_version != target.version))).all()
                p.left_for_lazy_rebuild = len(moved)
                p.finished_at = dt.datetime.now(UTC)
                # recorded with the states: a restart and every other worker serve the new model
                active_model.record(s, target.name, target.version, p.finished_at, p.by)
                p.seconds = time.perf_counter() - start
                if audit is not None:
                    audit(s, p)
            self.activate(target)
            p.pause_seconds = time.perf_counter() - paused
        p.seconds = time.perf_counter() - start
        p.patients_per_second = p.patients_rebuilt / p.seconds if p.seconds else None
        p.hours_per_second = p.hours_rebuilt / p.seconds if p.seconds else None
        p.state, p.phase = "done", None
        log.info("model switch %s -> %s done: %d patients, %d hours in %.2f s (paused writes %.3f s, %d caught up)",
                 p.from_model, p.to_model, p.patients_rebuilt, p.hours_rebuilt, p.seconds, p.pause_seconds, p.caught_up)
