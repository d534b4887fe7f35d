"""The one replay of stored observations through a model: a patient's state (and risks) rebuilt
exactly as the rows were scored, from their stored ICULOS and elapsed hours and the admission's
demographics. Used wherever a state must be rebuilt: a state of another model found by ingest, a
correction (the rows that remain), a model switch (the whole ward), a shadow model's catch-up and
its re-stepped hours.

A rewind (a late or amended value) resumes from the state stored after the hour before the revised
one (`stored_state`: the live model's on its hourly row, a shadow's on its score row) and re-steps
only the hours from the revised one on; the replay from the admission is the fallback where that
state is missing or of another model.

`replay` steps many stays together: one runtime call per hour of stay across every stay still
running, longest first (so they are a prefix of the batch); one stay is the same call with one row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from sqlalchemy import select

from models.contract import N_FEATURES
from service.inputs import DEMOGRAPHIC_FIELDS, model_input, state_from_bytes
from service.storage.tables import Observation, Patient

P, O = Patient.__table__, Observation.__table__


@dataclass
class Stay:
    """One patient's stored observations as model inputs, and the patient row's version when read."""
    patient_id: str
    version: int
    obs: np.ndarray      # [T, 40] float32
    elapsed: np.ndarray  # [T] float32 hours


def demographics_of(row) -> dict[str, float | None]:
    """The admission's demographics of a patients row."""
    return {f: getattr(row, f) for f in DEMOGRAPHIC_FIELDS.values()}


def stay(patient_id: str, rows: Iterable, demographics: dict[str, float | None], version: int = 0) -> Stay:
    """A Stay from stored observation rows (with vitals, iculos, elapsed_hours) in time order."""
    rows = list(rows)
    x = (np.stack([model_input(o.vitals, demographics, o.iculos) for o in rows]) if rows
         else np.zeros((0, N_FEATURES), np.float32))
    return Stay(patient_id, version, x, np.array([o.elapsed_hours for o in rows], np.float32))


def stored_state(model, saved: bytes | None, name: str | None, version: str | None) -> np.ndarray | None:
    """A state stored after some hour by `name`:`version`, when `model` can resume from it: None when
    there is none (stored before states were kept per hour), it is another model's, or its size
    does not fit; the caller then replays the stored hours instead."""
    if saved is None or (name, version) != (model.name, model.version):
        return None
    return state_from_bytes(saved, model.state_size)


def replay(model, stays: Sequence[Stay], initial: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """(risks [T_i] per stay, final states [n, S]) of every stay stepped from `initial` [n, S]
    (default: a new patient's state). `model` is anything with `state_size` and `runtime.step`."""
    risks, final, _ = _steps(model, stays, initial, each=False)
    return risks, final


def replay_hours(model, stays: Sequence[Stay], initial: np.ndarray | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`replay` keeping the state after every row: (risks [T_i], states [T_i, S]) per stay, for a
    caller that stores each hour's state so that a later rewind can resume there."""
    risks, _, each = _steps(model, stays, initial, each=True)
    return risks, each


def _steps(model, stays: Sequence[Stay], initial: np.ndarray | None, each: bool):
    n = len(stays)
    states = np.zeros((n, model.state_size), np.float32)
    if n == 0:
        return [], states, []
    lengths = np.array([len(s.obs) for s in stays], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.concatenate([s.obs for s in stays]).astype(np.float32, copy=False)
    gaps = np.concatenate([s.elapsed for s in stays]).astype(np.float32, copy=False)
    order = np.argsort(-lengths, kind="stable")
    if initial is not None:
        states[:] = np.asarray(initial, np.float32)[order]
    running = lengths[order]
    risks = np.empty(len(values), np.float32)
    after = np.empty((len(values), model.state_size), np.float32) if each else None
    for t in range(int(lengths.max(initial=0))):
        k = int(np.count_nonzero(running > t))
        rows = offsets[order[:k]] + t
        res = model.runtime.step(values[rows], gaps[rows, None], states[:k])
        states[:k] = res.next_state
        risks[rows] = res.risk
        if after is not None:
            after[rows] = states[:k]
    final = np.empty_like(states)
    final[order] = states  # a stay's row stops changing once it has ended (it left the prefix)
    cut = [slice(offsets[i], offsets[i + 1]) for i in range(n)]
    return [risks[c] for c in cut], final, [after[c] for c in cut] if after is not None else []


def read_stays(conn, ids: Sequence[str]) -> list[Stay]:
    """The patients' rows, then their observations in time order, as Stays. A write that lands
    between the two reads moves the row's version (a model switch rebuilds that patient again)."""
    if not ids:
        return []
    cols = [P.c.id, P.c.version] + [P.c[f] for f in DEMOGRAPHIC_FIELDS.values()]
    rows = {r.id: r for r in conn.execute(select(*cols).where(P.c.id.in_(list(ids))))}
    history: dict[str, list] = {pid: [] for pid in rows}
    q = (select(O.c.patient_id, O.c.vitals, O.c.elapsed_hours, O.c.iculos)
         .where(O.c.patient_id.in_(list(rows))).order_by(O.c.patient_id, O.c.ts))
    for o in conn.execute(q):
        history[o.patient_id].append(o)
    return [stay(pid, history[pid], demographics_of(r), r.version) for pid, r in rows.items()]
