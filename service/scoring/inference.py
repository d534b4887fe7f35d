"""The loaded model, run directly or through the micro-batcher, with its step metrics."""
from __future__ import annotations

import time

import numpy as np

from models.registry import resolve
from models.runtime import StepRuntime
from service.scoring.batcher import MicroBatcher
from service.config import Settings
from service.metrics import Metrics


class Model:
    def __init__(self, runtime: StepRuntime, metrics: Metrics, microbatch: bool,
                 max_size: int = 64, max_wait_ms: float = 3.0, active: bool = True):
        self.runtime = runtime
        self.metrics = metrics
        self.batcher = MicroBatcher(self.run, max_size, max_wait_ms / 1000.0) if microbatch else None
        if active:
            self.set_active(True)

    def set_active(self, active: bool) -> None:
        """Whether /metrics lists this model as the one serving (a shadow or a replaced model is not)."""
        labels = (self.name, self.version, self.provider, str(self.batcher is not None).lower())
        self.metrics.model_info.labels(*labels).set(1 if active else 0)

    # what the service reports and stores comes from the runtime (and so from the card), never a copy
    name = property(lambda self: self.runtime.name)
    version = property(lambda self: str(self.runtime.version))
    threshold = property(lambda self: float(self.runtime.threshold))
    state_size = property(lambda self: self.runtime.state_size)
    provider = property(lambda self: self.runtime.provider)

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics, name: str | None = None, version: str | None = None,
             active: bool = True, shadow: bool = False) -> "Model":
        """The configured model, or `name`/`version` from the same registry (an upgrade's target, a
        shadow); `active=False` loads it without announcing it as the serving model. A shadow gets
        no micro-batcher: it runs inside the live request's transaction, on that request's rows."""
        if name is None:
            name, version = settings.model, settings.model_version
        info = resolve(name, version, settings.models_dir)
        runtime = StepRuntime.open(info, device=settings.serving_device(), intra_op_threads=settings.model_threads)
        microbatch = not shadow and settings.use_microbatch(runtime.provider)
        return cls(runtime, metrics, microbatch, settings.microbatch_max_size, settings.microbatch_max_wait_ms,
                   active=active)

    def run(self, obs: np.ndarray, elapsed: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One model run over these rows as they are (a batch request's step across its patients):
        obs [n, 40], elapsed [n, 1] hours, state [n, S]."""
        start = time.perf_counter()
        res = self.runtime.step(obs, elapsed, state)
        self.metrics.step_latency.observe(time.perf_counter() - start)
        self.metrics.batch_size.observe(len(obs))
        return res.risk, res.next_state

    def step_one(self, obs: np.ndarray, elapsed: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Single-request step: gathered with other requests when micro-batching is on."""
        if self.batcher is not None:
            return self.batcher.step(obs, elapsed, state)
        return self.run(obs, elapsed, state)

    def new_state(self) -> np.ndarray:
        return np.zeros(self.state_size, dtype=np.float32)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
