"""Why this risk: the change in risk when each variable's latest value is withheld from the step.

Computed from the exported step itself (any `(obs, elapsed, state) -> (risk, next_state)` callable:
`StepRuntime._run`, the service's `Model.run`), all variants of all rows in ONE batched call
(up to MAX_ROWS rows per call; a larger batch is split between observations, see withheld_deltas):

    delta[i, j] = risk(row i as posted) - risk(row i with variable j's latest value withheld)

A positive delta means that value pushes the risk up; a negative one, down.

What "withheld" means
---------------------
(a) A variable measured in this observation: it is set missing (NaN) in the posted row.
(b) A variable the step carries in its state from an earlier observation: the shipped sepsis
    steps keep, per variable, a forward-fill memory (`training/sepsis/features.py`: the last value,
    the hours since it, whether it was ever seen and, from v2 on, how often). When that memory is
    found in the state (`find_memory`, verified by probing the real step, never assumed), the
    variable's memory is reset to "never measured" in every ensemble member (last value, hours
    since, seen flag and count all 0; the featurizer masks value and hours by the seen flag, so
    the step reads exactly what it reads for a variable never measured), on top of (a). So withholding a variable makes the step see it as never measured *at this step*.

    Not withheld: the recurrent core's state. Earlier hours' values have already been mixed into
    it and cannot be taken apart, so the delta is the variable's effect through what the step
    reads now (its current and carried value, age and count), not through everything it did to
    the patient's history. Said in words: "the risk would be <delta> lower if the model did not
    know this value now".

    Without a memory (a step whose state carries no per-variable values, e.g. the test fixture
    of `models/testing.py`), only (a) applies: a variable not posted in this row has delta 0.

Demographics (Age, Gender, Unit1, Unit2, HospAdmTime) come with every post from the admission
record; they are withheld like any other variable (missing in the row and, with a memory, never
seen). ICULOS is never withheld (the service derives it from the admission time; "not knowing how
long the patient has been in the ICU" is not a property of the patient): its delta is always 0.
A variable neither posted nor carried has delta exactly 0 and gets no variant in the batch.

With a `hold_silent` step (sepsis-cfc/3), withholding the only vital or lab of a row makes the row
carry no measurement: the step then holds its previous risk, so the delta is risk now minus the
risk before this observation. That is what the model would really have said.

State layout relied on (checked by `find_memory` against the step, see `Memory`):
each ensemble member's part of the state starts with the featurizer memory
`[last value (40) | hours since (40) | seen (40) | count (40, v2 on)]`, then the core's state
(and, v3, 3 hold numbers). sepsis-cfc/3: 5 members of 291 = 160 + 128 + 3, members at 0, 291, ...
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from models.contract import FEATURES, ICULOS_INDEX, N_FEATURES

Step = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

# ICULOS is never withheld; every other column may be.
WITHHOLDABLE = np.array([j != ICULOS_INDEX for j in range(N_FEATURES)])
MAX_ROWS = 4096  # rows per step call (see withheld_deltas)
DELTA_DECIMALS = 6  # 1e-6 of risk is 0.0001 percentage points: below anything shown or stored


@dataclass(frozen=True)
class Memory:
    """Where a step keeps its per-variable forward-fill memory in the state.

    Each array is [members, 40] of state column indices: `last[m, j]` holds variable j's last
    value in member m, `since` the hours since it was measured, `seen` 1 once it was measured,
    `count` how often (None for steps without counts, e.g. sepsis-cfc/1).
    """
    last: np.ndarray
    since: np.ndarray
    seen: np.ndarray
    count: np.ndarray | None

    @property
    def members(self) -> int:
        return self.last.shape[0]

    def columns(self) -> np.ndarray:
        """[blocks * members, 40]: every state column that belongs to variable j, per column j."""
        blocks = [self.last, self.since, self.seen] + ([self.count] if self.count is not None else [])
        return np.concatenate(blocks, axis=0)


def _risk_vector(risk) -> np.ndarray:
    risk = np.asarray(risk)
    if risk.ndim == 2 and risk.shape[1] == 1:
        risk = risk[:, 0]
    if risk.ndim != 1:
        raise ValueError(f"step: risk must have shape [n] or [n, 1], got {list(risk.shape)}")
    return risk.astype(np.float64)


def find_memory(step: Step, state_size: int) -> Memory | None:
    """Find the per-variable memory in a step's state by probing it (two calls of 3 rows), or None
    when the step does not keep one in the documented layout.

    Probe 1 from a new patient's state: rows A and B measure all 40 variables with distinct
    values (the columns holding exactly A's value in A and B's in B are the `last` columns), row H
    measures only the even-numbered variables. Probe 2 steps H's state with H again after 1.5 h.
    Then, relative to each member's `last` block at offset o, the step must show
    since = o+40.. (0 for measured, 1.5 for odd ones never measured), seen = o+80.. (1 for even,
    0 for odd), and optionally count = o+120.. (2 for even, 0 for odd).
    """
    j = np.arange(N_FEATURES, dtype=np.float32)
    a = 1000.0 + 7.25 * j
    b = 2000.0 + 3.5 * j
    h = np.where(j % 2 == 0, a, np.nan).astype(np.float32)
    obs = np.stack([a, b, h]).astype(np.float32)
    zero = np.zeros((3, state_size), np.float32)
    _, s1 = step(obs, np.zeros((3, 1), np.float32), zero)
    s1 = np.asarray(s1, dtype=np.float32)
    last = [np.flatnonzero((s1[0] == a[k]) & (s1[1] == b[k])) for k in range(N_FEATURES)]
    members = len(last[0])
    if members == 0 or any(len(cols) != members for cols in last):
        return None
    last = np.stack(last, axis=1)  # [members, 40]
    offsets = last[:, 0]
    if not np.array_equal(last, offsets[:, None] + np.arange(N_FEATURES)):
        return None  # not a contiguous block per member: not the layout documented above
    if np.any(offsets + 3 * N_FEATURES > state_size):
        return None
    _, s2 = step(h[None, :], np.full((1, 1), 1.5, np.float32), s1[2:3])
    s2 = np.asarray(s2, dtype=np.float32)[0]
    even = (j % 2 == 0)
    block = offsets[:, None] + np.arange(N_FEATURES)
    since, seen = block + N_FEATURES, block + 2 * N_FEATURES
    if not (np.array_equal(s2[since], np.broadcast_to(np.where(even, 0.0, 1.5), since.shape))
            and np.array_equal(s2[seen], np.broadcast_to(even.astype(np.float32), seen.shape))
            and np.array_equal(s1[2][seen], s2[seen])):
        return None
    count = None
    if np.all(offsets + 4 * N_FEATURES <= state_size):
        candidate = block + 3 * N_FEATURES
        if np.array_equal(s2[candidate], np.broadcast_to(np.where(even, 2.0, 0.0), candidate.shape)):
            count = candidate
    return Memory(last=last, since=since, seen=seen, count=count)


def _check_inputs(obs, elapsed, state) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs = np.asarray(obs, dtype=np.float32)
    if obs.ndim != 2 or obs.shape[1] != N_FEATURES:
        raise ValueError(f"obs: must have shape [n, {N_FEATURES}], got {list(obs.shape)}")
    n = obs.shape[0]
    elapsed = np.asarray(elapsed, dtype=np.float32).reshape(-1, 1) if np.ndim(elapsed) else None
    if elapsed is None or elapsed.shape[0] != n:
        raise ValueError(f"elapsed: must have shape [n, 1] or [n] with n = {n}")
    state = np.asarray(state, dtype=np.float32)
    if state.ndim != 2 or state.shape[0] != n:
        raise ValueError(f"state: must have shape [n, S] with n = {n}, got {list(state.shape)}")
    return obs, elapsed, state


def carried(state: np.ndarray, memory: Memory | None) -> np.ndarray:
    """[n, 40] bool: variables the state remembers as measured earlier (all False without a memory)."""
    state = np.asarray(state)
    if memory is None:
        return np.zeros((state.shape[0], N_FEATURES), dtype=bool)
    return state[:, memory.seen[0]] > 0.5


def latest_values(obs: np.ndarray, state: np.ndarray, memory: Memory | None) -> np.ndarray:
    """[n, 40] float32: each variable's latest value as the step will read it: posted in this row,
    else carried in the state's memory, else NaN. Pass a row as `obs_row` of `top_contributions`
    so a carried value is shown with its delta."""
    obs = np.asarray(obs, dtype=np.float32)
    values = obs.copy()
    if memory is not None:
        state = np.asarray(state, dtype=np.float32)
        from_state = np.isnan(obs) & carried(state, memory)
        values[from_state] = state[:, memory.last[0]][from_state]
    return values


def withheld_deltas(step: Step, obs: np.ndarray, elapsed: np.ndarray, state: np.ndarray, *,
                    memory: Memory | None = None, max_rows: int | None = MAX_ROWS) -> np.ndarray:
    """delta [n, 40] float64 = risk(as posted) - risk(variable j's latest value withheld).

    obs [n, 40] float32 (NaN = not measured), elapsed [n, 1] or [n] hours, state [n, S]: the
    inputs of the step that produced the risk to explain. `memory` (from `find_memory`, once per
    model) also withholds values carried in the state; without it only posted values are
    withheld. The as-posted rows and every variant go through `step` in one call; variables with
    nothing to withhold (and ICULOS) get exactly 0 without a variant.

    max_rows bounds the rows of one call (MAX_ROWS = 4096: about 100 observations with all 40
    variants, so one observation or a batch of 64 is always one call). A larger batch is split
    between observations, each with all its variants, into calls of at most max(max_rows, 40)
    rows; None makes one call whatever its size. Why: a call holds [rows, S] floats several
    times over; 1,000 observations of sepsis-cfc/3 (26,000 rows) took about 1 GB in one call,
    and no less time than in calls of 512 to 8192 rows (bench/explain.py's machine).
    """
    obs, elapsed, state = _check_inputs(obs, elapsed, state)
    if max_rows is not None and (not isinstance(max_rows, (int, np.integer)) or max_rows < 1):
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    n = obs.shape[0]
    deltas = np.zeros((n, N_FEATURES), dtype=np.float64)
    present = (~np.isnan(obs) | carried(state, memory)) & WITHHOLDABLE
    sizes = 1 + present.sum(axis=1)  # rows each observation brings to a call
    group = np.zeros(n, dtype=np.int64)
    if max_rows is not None and n:
        # greedy: start a new call when this observation would push the current one past max_rows
        total = 0
        for i, size in enumerate(sizes):
            if total and total + size > max_rows:
                group[i], total = group[i - 1] + 1, 0
            else:
                group[i] = group[i - 1] if i else 0
            total += size
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        deltas[rows] = _one_call(step, obs[rows], elapsed[rows], state[rows], present[rows], memory)
    return deltas


def _one_call(step: Step, obs, elapsed, state, present, memory: Memory | None) -> np.ndarray:
    n = obs.shape[0]
    deltas = np.zeros((n, N_FEATURES), dtype=np.float64)
    rows, cols = np.nonzero(present)  # one variant per (row, variable) with something to withhold
    if len(rows) == 0:
        return deltas
    v_obs = obs[rows].copy()
    v_obs[np.arange(len(rows)), cols] = np.nan
    v_state = state[rows].copy()
    if memory is not None:
        mem_cols = memory.columns()[:, cols].T  # [variants, blocks * members]
        v_state[np.arange(len(rows))[:, None], mem_cols] = 0.0
    risk, _ = step(np.concatenate([obs, v_obs]), np.concatenate([elapsed, elapsed[rows]]),
                   np.concatenate([state, v_state]))
    risk = _risk_vector(risk)
    if risk.shape[0] != n + len(rows):
        raise ValueError(f"step: returned {risk.shape[0]} risks for {n + len(rows)} rows")
    deltas[rows, cols] = risk[rows] - risk[n:]
    return deltas


def _number(x: float) -> float:
    """A float32 input back as the number that was posted (4.800000190734863 -> 4.8)."""
    return float(f"{float(x):.7g}")


def top_contributions(deltas_row: np.ndarray, obs_row: np.ndarray, k: int = 5) -> list[dict]:
    """The k largest |delta| as JSON-ready items, largest first, zero deltas dropped:
    [{"feature": "Lactate", "value": 4.8, "delta": 0.031}, ...].

    `value` is obs_row's entry (pass a `latest_values` row to show carried values), None if NaN.
    Deltas are rounded to 6 decimals; one that rounds to 0 is dropped. Ties keep column order.
    """
    deltas_row = np.asarray(deltas_row, dtype=np.float64).reshape(-1)
    obs_row = np.asarray(obs_row, dtype=np.float64).reshape(-1)
    if deltas_row.shape != (N_FEATURES,) or obs_row.shape != (N_FEATURES,):
        raise ValueError(f"deltas_row and obs_row must have {N_FEATURES} values, got "
                         f"{deltas_row.shape[0]} and {obs_row.shape[0]}")
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    if not np.all(np.isfinite(deltas_row)):
        raise ValueError("deltas_row: contains NaN or infinity (the step returned a non-finite risk)")
    order = np.argsort(-np.abs(deltas_row), kind="stable")
    items = []
    for j in order:
        if len(items) >= k:
            break
        d = round(float(deltas_row[j]), DELTA_DECIMALS)
        if d == 0.0:
            continue
        v = obs_row[j]
        items.append({"feature": FEATURES[j], "value": None if math.isnan(v) else _number(v), "delta": d})
    return items
