"""Switching the active model without losing a patient.

The new model's state for every monitored patient is rebuilt from their stored observations, the
whole ward stepped together (`service.scoring.rebuild.replay`: one runtime call per hour of stay
across every patient still running, longest stays first), exactly as they were scored: their
stored ICULOS and elapsed hours, their admission's demographics. Nothing stored is changed or reordered except each patient's
state columns (state, model_name, model_version, version).

One switch runs at a time on the database: it first claims the `model_switch_claim` row
(service/lifecycle/active.py; a second switch, in this process or another, is a 409 naming it),
renews the claim after each rebuilt chunk and frees it in the transaction that records the switch,
whose audit row's `from` is the model the record named before.

Observations keep arriving meanwhile, so the switch runs in two phases:
1. rebuild, holding no lock: read each patient row (its `version`), then its observations, and step;
2. under every patient lock of this process (`StripedLocks.hold_all`): re-read the versions,
   rebuild again the few patients that advanced (or were corrected, or arrived) since phase 1,
   write every state with `UPDATE ... WHERE version = <read>` in one transaction, and swap the
   active model. Requests pin the active model once they hold their patients' locks
   (`ActiveModel.pin`), so each is answered wholly by the old model or wholly by the new one.

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
from typing import Callable

import numpy as np
from sqlalchemy import bindparam, false, or_, select, update
from sqlalchemy.engine import Engine

from service.errors import Conflict
from service.inputs import state_to_bytes
from service.lifecycle import active as active_model
from service.lifecycle.active import ActiveModel
from service.scoring.inference import Model
from service.scoring.rebuild import read_stays, replay
from service.storage.db import read_only
from service.storage.tables import Patient

log = logging.getLogger("service.lifecycle.upgrades")
UTC = dt.timezone.utc
P = Patient.__table__
CHUNK_PATIENTS = 1000  # patients read and stepped together; progress is reported per chunk


def _monitored():
    """Patients still on the ward with a state to carry: not discharged, at least one observation."""
    return (P.c.n_observations > 0, P.c.discharged_at.is_(None),
            or_(P.c.outcome.is_(None), P.c.outcome != "no_sepsis"))


def monitored_versions(conn) -> dict[str, int]:
    return dict(conn.execute(select(P.c.id, P.c.version).where(*_monitored())).all())


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
    """Model switches made by this process; at most one at a time on the database."""
    engine: Engine
    active: ActiveModel
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
            to = f"{target.name}:{target.version}"
            token = active_model.claim(self.engine, to, by)  # of two switches on the database, one runs
            try:
                with read_only(self.engine).connect() as conn:
                    was = active_model.recorded(conn)
                if was is None:  # no switch yet: the configured model is in force
                    was = (self.active.current.name, self.active.current.version)
                if was == (target.name, target.version):
                    raise Conflict(f"{to} is already the active model; nothing was changed")
                p = self.progress = Progress(state="running", from_model=f"{was[0]}:{was[1]}", to_model=to,
                                             phase="rebuild", started_at=dt.datetime.now(UTC), by=by, note=note)
                try:
                    self._switch(target, p, token, audit, on_chunk)
                except BaseException as err:
                    # The answer names the kind of failure only: an exception's text can carry the
                    # server's paths or connection details, which belong in the log below.
                    p.state, p.error, p.finished_at = ("failed", f"{type(err).__name__} (details in the service log)",
                                                       dt.datetime.now(UTC))
                    log.exception("model switch %s -> %s failed; the active model is unchanged", p.from_model, to)
                    raise
                return p
            except BaseException:
                active_model.abandon(self.engine, token)  # a no-op once the switch freed it itself
                raise
        finally:
            self._running.release()

    def _rebuild(self, target: Model, ids: list[str], p: Progress) -> dict[str, tuple[int, np.ndarray]]:
        reader = read_only(self.engine)
        with reader.connect() as conn:
            stays = read_stays(conn, ids)
        _, states = replay(target, stays)
        p.hours_rebuilt += sum(len(s.obs) for s in stays)
        return {s.patient_id: (s.version, states[i]) for i, s in enumerate(stays)}

    def _switch(self, target: Model, p: Progress, token: str, audit, on_chunk) -> None:
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
            active_model.renew(self.engine, token)
            if on_chunk is not None:
                on_chunk(p)
        p.rebuild_seconds = time.perf_counter() - start
        with self.active.exclusive():
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
                active_model.release(s, token)  # first: a claim lost to a stale takeover rolls all back
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
            self.active.swap(target)
            p.pause_seconds = time.perf_counter() - paused
        p.seconds = time.perf_counter() - start
        p.patients_per_second = p.patients_rebuilt / p.seconds if p.seconds else None
        p.hours_per_second = p.hours_rebuilt / p.seconds if p.seconds else None
        p.state, p.phase = "done", None
        log.info("model switch %s -> %s done: %d patients, %d hours in %.2f s (paused writes %.3f s, %d caught up)",
                 p.from_model, p.to_model, p.patients_rebuilt, p.hours_rebuilt, p.seconds, p.pause_seconds, p.caught_up)
