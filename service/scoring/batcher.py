"""Gathers concurrent single-patient steps into one model run (worth it on a GPU, where a run of
64 rows costs about what one row does). Bounded by a maximum size and a maximum wait."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Item:
    obs: np.ndarray
    elapsed: np.ndarray
    state: np.ndarray
    future: Future = field(default_factory=Future)


class MicroBatcher:
    def __init__(self, step: StepFn, max_size: int = 64, max_wait_s: float = 0.003):
        if max_size < 1 or max_wait_s < 0:
            raise ValueError("micro-batch max_size must be >= 1 and max_wait >= 0")
        self._step = step
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, obs: np.ndarray, elapsed: np.ndarray, state: np.ndarray) -> Future:
        """Rows for one or more patients (obs [n, 40], elapsed [n, 1], state [n, S], as the step takes
        them); the future yields (risk [n], next_state [n, S])."""
        if self._closed:
            raise RuntimeError("micro-batcher is closed")
        item = _Item(obs, elapsed, state)
        self._queue.put(item)
        return item.future

    def step(self, obs, elapsed, state):
        return self.submit(obs, elapsed, state).result()

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        items, rows = [first], len(first.obs)
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_size:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                nxt = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if nxt is None:
                return items, True
            items.append(nxt)
            rows += len(nxt.obs)
        return items, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            items, stop = self._collect(first)
            try:
                obs = np.concatenate([i.obs for i in items])
                elapsed = np.concatenate([i.elapsed for i in items])
                state = np.concatenate([i.state for i in items])
                risk, next_state = self._step(obs, elapsed, state)
            except BaseException as err:  # hand the failure to every waiting request
                for i in items:
                    i.future.set_exception(err)
                continue
            start = 0
            for i in items:
                n = len(i.obs)
                i.future.set_result((risk[start:start + n], next_state[start:start + n]))
                start += n
