"""The one replay of stored observations through a model: a patient's state (and risks) rebuilt
exactly as the rows were scored, from their stored ICULOS and elapsed hours and the admission's
demographics. Used wherever a state must be rebuilt: a state of another model found by ingest, a
correction (the rows that remain), a model switch (the whole ward), a shadow model's catch-up.

`replay` steps many stays together: one runtime call per hour of stay across every stay still
running, longest first (so they are a prefix of the batch); one stay is the same call with one row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from sqlalchemy import select

from models.contract import N_FEATURES
from service.inputs import DEMOGRAPHIC_FIELDS, model_input
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


def replay(model, stays: Sequence[Stay], initial: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """(risks [T_i] per stay, final states [n, S]) of every stay stepped from `initial` [n, S]
    (default: a new patient's state). `model` is anything with `state_size` and `runtime.step`."""
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
