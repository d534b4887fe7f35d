"""Why a risk: the top contributions of each scored row, from the step that scored it.

For a model run over rows (obs, elapsed, pre-step state), `models.explain.withheld_deltas` runs
every row as posted plus one variant per variable with a latest value replaced by its reference,
all in one batched call of the same runtime, and `top_contributions` keeps the SHOWN (5) largest
changes as `[{"feature", "value", "delta", ..., "basis": "value"}]` (schemas.Contribution).
When the step keeps a per-variable memory (`find_memory`), `unmeasured_deltas` runs, in a second
batched call, every row plus one variant per sepsis-defining vital sign or lab (GAP_COLUMNS, 13)
not measured for more than 24 h (or never) measured at its reference now, and `top_unmeasured` appends at most SHOWN_UNMEASURED
(2) of those gaps that raise the risk by at least LEAD_FLOOR, with `"basis": "not measured"`.
Those extra runs are the cost: they are timed together on their own histogram
(`sepsis_explain_seconds`) and can be switched off with SEPSIS_EXPLAIN=off, which stores null
contributions.
"""
from __future__ import annotations

import time
import weakref

import numpy as np

from models.explain import (GAP_COLUMNS, SHOWN, SHOWN_UNMEASURED, find_memory, latest_ages, latest_values,
                            top_contributions, top_unmeasured, unmeasured_deltas, withheld_deltas)
from service.metrics import Metrics

class Explainer:
    """Contributions for the rows of a model run; one per model, as the memory layout is the model's."""

    def __init__(self, metrics: Metrics, enabled: bool = True, k: int = SHOWN, k_unmeasured: int = SHOWN_UNMEASURED):
        self.metrics = metrics
        self.enabled = enabled
        self.k = k
        self.k_unmeasured = k_unmeasured
        self._memories = weakref.WeakKeyDictionary()  # runtime -> its Memory (or None), probed once

    @staticmethod
    def _step(runtime):
        def step(obs, elapsed, state):
            res = runtime.step(obs, elapsed, state)
            return res.risk, res.next_state
        return step

    def _memory(self, runtime, step):
        if runtime not in self._memories:
            self._memories[runtime] = find_memory(step, runtime.state_size)
        return self._memories[runtime]

    def contributions(self, model, obs: np.ndarray, elapsed: np.ndarray, state: np.ndarray) -> list[list[dict] | None]:
        """One list per row (obs [n, 40], elapsed [n, 1], state [n, S] before the step), or None per
        row when explanations are off: the value contributions, then (with a memory) the gaps
        not measured for long that raise the risk. `model` is the service's Model whose step scored
        the rows."""
        if not self.enabled:
            return [None] * len(obs)
        runtime = model.runtime
        step = self._step(runtime)
        memory = self._memory(runtime, step)
        start = time.perf_counter()
        deltas = withheld_deltas(step, obs, elapsed, state, memory=memory)
        values = latest_values(obs, state, memory)
        ages = latest_ages(obs, elapsed, state, memory)
        out = [top_contributions(deltas[i], values[i], self.k, ages_row=ages[i]) for i in range(len(obs))]
        if memory is not None and self.k_unmeasured:
            gaps = unmeasured_deltas(step, obs, elapsed, state, memory=memory, columns=GAP_COLUMNS)
            for i, items in enumerate(out):
                items += top_unmeasured(gaps[i], values[i], ages[i], self.k_unmeasured)
        self.metrics.explain_latency.observe(time.perf_counter() - start)
        return out
