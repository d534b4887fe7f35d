"""Why this risk: the change in risk when each variable's value is replaced by a normal one.

Computed from the exported step itself (any `(obs, elapsed, state) -> (risk, next_state)` callable:
`StepRuntime._run`, the service's `Model.run`), all variants of all rows in ONE batched call
(up to MAX_ROWS rows per call; a larger batch is split between observations, see withheld_deltas):

    delta[i, j] = risk(row i as posted) - risk(row i with variable j's latest value replaced)

A positive delta means that value pushes the risk up; a negative one, down.

Against what: a clinical reference (the default, baseline="reference")
---------------------------------------------------------------------
Each vital sign and lab is compared with its documented normal value (`models/reference.py`,
e.g. MAP 85 mmHg, lactate 1.0 mmol/L, platelets 250, with sources): "the risk is <delta> higher
than it would be were this value normal". So hypotension raises the risk wherever the model itself
reads it as raising the risk, and a value equal to its reference contributes exactly 0 (it gets no
variant: the row would be the same). The reference replaces the value *at the same age*:

(a) posted in this observation: the posted value is replaced by the reference (the step then
    remembers the reference, measured now, as it would have remembered the value);
(b) carried in the state from an earlier observation (the shipped sepsis steps keep, per variable,
    a forward-fill memory, `training/sepsis/features.py`: last value, hours since, seen flag and,
    from v2 on, a count; found by `find_memory`, verified by probing the real step, never
    assumed): the remembered last value is replaced by the reference in every ensemble member;
    the hours since, the seen flag and the count are kept.

So the delta isolates the value: how old it is and how often it was measured are the same on both
sides. The age is shown beside it (`latest_ages`, `top_contributions(..., ages_row=...)`): an
abnormal value from two days ago can still lead, and the clinician sees that it is two days old.

Administrative columns (Age, Gender, Unit1, Unit2, HospAdmTime) have no physiological normal: they
are compared with "not recorded" (withheld, as below) and never lead the list while a clinical
value moves the risk by at least LEAD_FLOOR (see `top_contributions`). ICULOS is never replaced
(the service derives it from the admission time): its delta is always 0.

Not measured for long: a reason of its own (`unmeasured_deltas`)
----------------------------------------------------------------
For a vital sign or lab never measured, or last measured more than STALE_HOURS (24 h) ago, the
risk as posted minus the risk had it been measured at its reference now. Separate from the
contributions above (a variable can have both: an old abnormal value, and its age).

The service shows only the gaps that raise the risk, of the 13 sepsis-defining variables (GAP_COLUMNS:
those with a documented abnormal value): `top_unmeasured` keeps deltas of at least
LEAD_FLOOR (a normal value now would lower the risk by 0.05 percentage points or more), at most
SHOWN_UNMEASURED (2) per risk, largest first, listed after the SHOWN value contributions with
`"basis": "not measured"` (value contributions carry `"basis": "value"`). A negative delta (the
model reads the absence as reassuring: a lab that was never ordered, in most validation rows) is
never shown: it describes the team's ordering habits, not the patient's physiology. A step
without a memory gets none (`find_memory` is None: "never measured" cannot be told apart).

The earlier method (baseline="missing"): withheld
-------------------------------------------------
Every value is compared with "never measured": set missing (NaN) in the posted row and, with a
memory, the variable's memory reset to never measured in every member (last value, hours since,
seen flag and count all 0). Measured on sepsis-cfc/3 it shows many clearly abnormal values as
*lowering* the risk, because "never measured" is itself a strong signal to the model (a lab that was
never ordered says the team suspected nothing); kept for that comparison
(`training/sepsis/plausibility.py`) and for the administrative columns.

Not replaced under either: the recurrent core's state. Earlier hours' values have already been
mixed into it and cannot be taken apart, so the delta is the variable's effect through what the
step reads now (its current or carried value), not through everything it did to the patient's
history. Without a memory (a step whose state carries no per-variable values, e.g. the test
fixture of `models/testing.py`), only (a) applies: a variable not posted in this row has delta 0.
A variable neither posted nor carried has delta exactly 0 and gets no variant in the batch.

With a `hold_silent` step (sepsis-cfc/3), withholding the only vital or lab of a row makes the row
carry no measurement: the step then holds its previous risk (baseline="missing" only; a reference
is still a measurement).

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
from models.reference import NORMAL, PLAUSIBILITY, REFERENCES, SYSTEMS

Step = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

# ICULOS is never withheld; every other column may be.
WITHHOLDABLE = np.array([j != ICULOS_INDEX for j in range(N_FEATURES)])
MAX_ROWS = 4096  # rows per step call (see withheld_deltas)
DELTA_DECIMALS = 6  # 1e-6 of risk is 0.0001 percentage points: below anything shown or stored
BASELINES = ("reference", "missing")
# a clinical value "moves the risk" from 0.05 percentage points: administrative columns rank after such values
LEAD_FLOOR = 0.0005
SHOWN = 5  # contributions the service lists per risk (its API and the dashboard show these)
STALE_HOURS = 24.0  # a value older than this counts as "not measured" for unmeasured_deltas
SHOWN_UNMEASURED = 2  # "not measured for long" reasons the service lists per risk, after the SHOWN values
# the variables whose gap can be a reason: the 13 with a documented abnormal value (models/reference_values.csv:
# the SOFA, qSOFA, SIRS and septic-shock variables). A rarely ordered lab (fibrinogen, troponin) missing for a
# day says nothing a clinician would act on, however the model reads its absence.
GAP_COLUMNS = np.array([f in PLAUSIBILITY for f in FEATURES])
ADMINISTRATIVE = np.array([REFERENCES[f].system == "administrative" for f in FEATURES])


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


def latest_ages(obs: np.ndarray, elapsed: np.ndarray, state: np.ndarray, memory: Memory | None) -> np.ndarray:
    """[n, 40] float64: hours since each variable's latest value as the step will read it: 0 when
    posted in this row, the carried hours since plus this row's elapsed time when carried (what
    the step's memory will say after this row), NaN when there is none."""
    obs, elapsed, state = _check_inputs(obs, elapsed, state)
    ages = np.where(np.isnan(obs), np.nan, 0.0)
    if memory is not None:
        from_state = np.isnan(obs) & carried(state, memory)
        since = state[:, memory.since[0]].astype(np.float64) + elapsed.astype(np.float64)
        ages[from_state] = since[from_state]
    return ages


def withheld_deltas(step: Step, obs: np.ndarray, elapsed: np.ndarray, state: np.ndarray, *,
                    memory: Memory | None = None, max_rows: int | None = MAX_ROWS,
                    baseline: str = "reference") -> np.ndarray:
    """delta [n, 40] float64 = risk(as posted) - risk(variable j's latest value replaced by its
    normal reference value), or, with baseline="missing", withheld (see the module's doc).

    obs [n, 40] float32 (NaN = not measured), elapsed [n, 1] or [n] hours, state [n, S]: the
    inputs of the step that produced the risk to explain. `memory` (from `find_memory`, once per
    model) also replaces values carried in the state; without it only posted values are
    replaced. The as-posted rows and every variant go through `step` in one call; variables with
    nothing to replace, a value equal to its reference, and ICULOS get exactly 0 without a variant.

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
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    present = (~np.isnan(obs) | carried(state, memory)) & WITHHOLDABLE
    if baseline == "reference":
        present &= latest_values(obs, state, memory) != NORMAL  # equal to the reference: exactly 0
    return _in_calls(step, obs, elapsed, state, present, memory, baseline, max_rows)


def unmeasured_deltas(step: Step, obs: np.ndarray, elapsed: np.ndarray, state: np.ndarray, *, memory: Memory,
                      stale_hours: float = STALE_HOURS, max_rows: int | None = MAX_ROWS,
                      columns: np.ndarray | None = None) -> np.ndarray:
    """delta [n, 40] float64 = risk(as posted) - risk(variable j measured at its reference now),
    for each vital sign and lab the step has no recent value of: never measured, or last measured
    more than `stale_hours` before this row (0 for every other variable).

    "Not measured for 30 h" as a reason of its own: a positive delta says that a normal value
    now would lower the risk by that much (the gap, or the old value, is what raises it); a
    negative one, that the model reads the absence as reassuring (a lab that was never ordered).
    Pass a row to `top_contributions` with a `latest_values` and a `latest_ages` row: `value` is
    then the old value (None if never measured) and `hours_since` its age. Needs the step's
    memory (`find_memory`): without it, "never measured" cannot be told from "not posted now".
    `columns` ([40] bool, e.g. GAP_COLUMNS) limits the variants to those variables (0 elsewhere).
    """
    obs, elapsed, state = _check_inputs(obs, elapsed, state)
    if memory is None:
        raise ValueError("memory: unmeasured_deltas needs the step's per-variable memory (find_memory)")
    if max_rows is not None and (not isinstance(max_rows, (int, np.integer)) or max_rows < 1):
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    ages = latest_ages(obs, elapsed, state, memory)
    with np.errstate(invalid="ignore"):
        present = np.isnan(obs) & np.isfinite(NORMAL) & (np.isnan(ages) | (ages > stale_hours))
    if columns is not None:
        columns = np.asarray(columns, dtype=bool).reshape(-1)
        if columns.shape != (N_FEATURES,):
            raise ValueError(f"columns must have {N_FEATURES} values, got {columns.shape[0]}")
        present &= columns
    return _in_calls(step, obs, elapsed, state, present, memory, "now", max_rows)


def _in_calls(step: Step, obs, elapsed, state, present, memory: Memory | None, mode: str,
              max_rows: int | None) -> np.ndarray:
    """Every row plus one variant per True in present [n, 40], in calls of at most max_rows rows."""
    n = obs.shape[0]
    deltas = np.zeros((n, N_FEATURES), dtype=np.float64)
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
        deltas[rows] = _one_call(step, obs[rows], elapsed[rows], state[rows], present[rows], memory, mode)
    return deltas


def _one_call(step: Step, obs, elapsed, state, present, memory: Memory | None, mode: str) -> np.ndarray:
    """mode "reference" / "missing": a withheld_deltas baseline; "now": the reference posted in the row."""
    deltas = np.zeros((obs.shape[0], N_FEATURES), dtype=np.float64)
    rows, cols = np.nonzero(present)  # one variant per (row, variable) with something to replace
    if len(rows) == 0:
        return deltas
    alone = np.zeros((len(rows), N_FEATURES), dtype=bool)
    alone[np.arange(len(rows)), cols] = True
    posted, replaced = _variant_risks(step, obs, elapsed, state, rows, alone, memory, mode)
    deltas[rows, cols] = posted[rows] - replaced
    return deltas


def _variant_risks(step: Step, obs, elapsed, state, rows, replaced, memory: Memory | None,
                   mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(risk of each row as posted [n], risk of each variant [v]) from one step call: variant v is
    row rows[v] with the variables True in replaced[v] (one, or a whole organ system) replaced."""
    n = obs.shape[0]
    v_obs, v_state = obs[rows].copy(), state[rows].copy()
    variant, cols = np.nonzero(replaced)  # one (variant, variable) pair per value replaced
    reference = NORMAL[cols]
    replace = np.isfinite(reference) if mode in ("reference", "now") else np.zeros(len(cols), dtype=bool)
    # replaced by the reference: in the row when posted now (or measured now), else in the memory's last value
    now = replace & (~np.isnan(obs[rows[variant], cols]) | (mode == "now"))
    v_obs[variant[now], cols[now]] = reference[now]
    if memory is not None:
        earlier = replace & ~now
        v_state[variant[earlier][:, None], memory.last[:, cols[earlier]].T] = reference[earlier][:, None]
    # withheld (baseline "missing", and the administrative columns): missing now, never seen before
    held = ~replace
    v_obs[variant[held], cols[held]] = np.nan
    if memory is not None:
        mem_cols = memory.columns()[:, cols[held]].T  # [withheld values, blocks * members]
        v_state[variant[held][:, None], mem_cols] = 0.0
    risk, _ = step(np.concatenate([obs, v_obs]), np.concatenate([elapsed, elapsed[rows]]),
                   np.concatenate([state, v_state]))
    risk = _risk_vector(risk)
    if risk.shape[0] != n + len(rows):
        raise ValueError(f"step: returned {risk.shape[0]} risks for {n + len(rows)} rows")
    return risk[:n], risk[n:]


CLINICAL_SYSTEMS = tuple(x for x in SYSTEMS if x != "administrative")
SYSTEM_INDEX = np.array([CLINICAL_SYSTEMS.index(REFERENCES[f].system) if REFERENCES[f].system in CLINICAL_SYSTEMS
                         else -1 for f in FEATURES])


def by_system(mask: np.ndarray) -> np.ndarray:
    """[n, len(CLINICAL_SYSTEMS)] bool: per row, whether any variable of each system is True in mask [n, 40]."""
    return np.stack([mask[:, SYSTEM_INDEX == g].any(axis=1) for g in range(len(CLINICAL_SYSTEMS))], axis=1)


def system_deltas(step: Step, obs: np.ndarray, elapsed: np.ndarray, state: np.ndarray, *,
                  memory: Memory | None = None) -> np.ndarray:
    """delta [n, len(CLINICAL_SYSTEMS)] float64 = risk(as posted) - risk(every latest value of the
    organ system replaced by its reference together), as `withheld_deltas` replaces one variable
    (posted values in the row, carried ones in the memory, ages and counts kept).

    Why together: the variables of a system move together in a patient (SBP, MAP and DBP; lactate,
    pH and HCO3), and replacing one alone builds a row no patient has (a MAP of 85 beside an SBP of
    77). A system with nothing to replace gets exactly 0. Measurement only (the plausibility suite);
    the service lists the per-variable contributions."""
    obs, elapsed, state = _check_inputs(obs, elapsed, state)
    values = latest_values(obs, state, memory)
    present = (~np.isnan(obs) | carried(state, memory)) & WITHHOLDABLE & np.isfinite(NORMAL) & (values != NORMAL)
    rows, groups = np.nonzero(by_system(present))
    deltas = np.zeros((obs.shape[0], len(CLINICAL_SYSTEMS)), dtype=np.float64)
    if len(rows) == 0:
        return deltas
    together = present[rows] & (SYSTEM_INDEX[None, :] == groups[:, None])
    posted, replaced = _variant_risks(step, obs, elapsed, state, rows, together, memory, "reference")
    deltas[rows, groups] = posted[rows] - replaced
    return deltas


def _number(x: float) -> float:
    """A float32 input back as the number that was posted (4.800000190734863 -> 4.8)."""
    return float(f"{float(x):.7g}")


def top_contributions(deltas_row: np.ndarray, obs_row: np.ndarray, k: int = 5,
                      ages_row: np.ndarray | None = None) -> list[dict]:
    """The k leading contributions as JSON-ready items, zero deltas dropped:
    [{"feature": "Lactate", "value": 4.8, "delta": 0.031, "system": "metabolic/perfusion",
      "reference": 1.0, "unit": "mmol/L", "hours_since": 3.0, "basis": "value"}, ...].

    Order: clinical values (vital signs and labs) whose |delta| is at least LEAD_FLOOR, largest
    first; then everything else (administrative columns, smaller clinical deltas) by |delta|. So an
    administrative column leads only when no clinical value moves the risk. Ties keep column order.

    `value` is obs_row's entry (pass a `latest_values` row to show carried values), None if NaN.
    `system` is the variable's organ system and `reference` the normal value it was compared
    with (None for the administrative columns, compared with "not recorded"), from
    `models/reference.py`; `unit` the unit both are in (None for the administrative columns).
    `hours_since` (only when `ages_row`, a `latest_ages` row, is given) is
    the value's age in hours, None when there is no value. Deltas are rounded to 6 decimals; one
    that rounds to 0 is dropped.
    """
    deltas_row = np.asarray(deltas_row, dtype=np.float64).reshape(-1)
    obs_row = np.asarray(obs_row, dtype=np.float64).reshape(-1)
    if deltas_row.shape != (N_FEATURES,) or obs_row.shape != (N_FEATURES,):
        raise ValueError(f"deltas_row and obs_row must have {N_FEATURES} values, got "
                         f"{deltas_row.shape[0]} and {obs_row.shape[0]}")
    if ages_row is not None:
        ages_row = np.asarray(ages_row, dtype=np.float64).reshape(-1)
        if ages_row.shape != (N_FEATURES,):
            raise ValueError(f"ages_row must have {N_FEATURES} values, got {ages_row.shape[0]}")
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    if not np.all(np.isfinite(deltas_row)):
        raise ValueError("deltas_row: contains NaN or infinity (the step returned a non-finite risk)")
    size = np.abs(deltas_row)
    leads = ~ADMINISTRATIVE & (size >= LEAD_FLOOR)
    order = np.lexsort((np.arange(N_FEATURES), -size, ~leads))  # leads first, then by size, then column
    items = []
    for j in order:
        if len(items) >= k:
            break
        d = round(float(deltas_row[j]), DELTA_DECIMALS)
        if d == 0.0:
            continue
        items.append(_item(j, d, obs_row[j], "value", None if ages_row is None else ages_row[j]))
    return items


def _item(j: int, delta: float, value: float, basis: str, age: float | None) -> dict:
    """One contribution of column j as a JSON-ready item (top_contributions, top_unmeasured): its
    value (None if NaN), system, reference and unit (models/reference_values.csv; no unit for the
    administrative columns, whose "units" are codings such as Gender "0 female / 1 male") and, when
    an age is given (None: not asked), `hours_since` (None if NaN)."""
    feature = FEATURES[j]
    item = {"feature": feature, "value": None if math.isnan(value) else _number(value), "delta": delta,
            "system": REFERENCES[feature].system, "reference": REFERENCES[feature].normal,
            "unit": None if ADMINISTRATIVE[j] else REFERENCES[feature].unit}
    if age is not None:
        item["hours_since"] = None if math.isnan(age) else round(float(age), 2)
    item["basis"] = basis
    return item


def top_unmeasured(deltas_row: np.ndarray, values_row: np.ndarray, ages_row: np.ndarray,
                   k: int = SHOWN_UNMEASURED) -> list[dict]:
    """The k largest "not measured for long" reasons that raise the risk, as JSON-ready items:
    [{"feature": "Lactate", "value": 2.1, "delta": 0.012, "system": "metabolic/perfusion",
      "reference": 1.0, "unit": "mmol/L", "hours_since": 31.0, "basis": "not measured"}, ...].

    deltas_row is an `unmeasured_deltas` row; only the GAP_COLUMNS (the 13 sepsis-defining variables)
    and only deltas of at least LEAD_FLOOR are kept (a normal
    value now would lower the risk by that much), largest first, ties in column order. A negative
    delta (the absence read as reassuring) is never kept. `value` is values_row's entry (a
    `latest_values` row: the old value, None when never measured), `hours_since` ages_row's (a
    `latest_ages` row: None when never measured). Deltas are rounded to 6 decimals as in
    `top_contributions`; one that rounds to 0 is dropped.
    """
    deltas_row = np.asarray(deltas_row, dtype=np.float64).reshape(-1)
    values_row = np.asarray(values_row, dtype=np.float64).reshape(-1)
    ages_row = np.asarray(ages_row, dtype=np.float64).reshape(-1)
    if not (deltas_row.shape == values_row.shape == ages_row.shape == (N_FEATURES,)):
        raise ValueError(f"deltas_row, values_row and ages_row must have {N_FEATURES} values, got "
                         f"{deltas_row.shape[0]}, {values_row.shape[0]} and {ages_row.shape[0]}")
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    if not np.all(np.isfinite(deltas_row)):
        raise ValueError("deltas_row: contains NaN or infinity (the step returned a non-finite risk)")
    raising = GAP_COLUMNS & (deltas_row >= LEAD_FLOOR)
    order = np.lexsort((np.arange(N_FEATURES), -deltas_row))  # largest first, then column
    items = []
    for j in order:
        if len(items) >= k:
            break
        d = round(float(deltas_row[j]), DELTA_DECIMALS)
        if not raising[j] or d == 0.0:
            continue
        items.append(_item(j, d, values_row[j], "not measured", ages_row[j]))
    return items
