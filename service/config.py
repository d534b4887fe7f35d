"""One settings object for the service; every field reads from the environment (prefix SEPSIS_)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields


def _env(name: str, default, kind=str):
    raw = os.environ.get(f"SEPSIS_{name.upper()}")
    if raw is None or raw == "":
        return default
    if kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable SEPSIS_{name.upper()}={raw!r}: {exc}") from None


@dataclass(frozen=True)
class Settings:
    db_url: str = "sqlite:///.cache/service/sepsis.db"  # relative to the working directory (git-ignored)
    # SQLite in WAL mode: FULL syncs every commit (an answered write survives power loss); NORMAL
    # only a crash of the process. PostgreSQL keeps its own synchronous_commit (default on).
    sqlite_synchronous: str = "FULL"
    # PostgreSQL connections per worker process: pool + overflow, waited for up to pool_timeout_s.
    # Keep workers x (pool + overflow) below the server's max_connections (100 by default): 8 workers
    # x (10 + 10) exceeded it on the H200 bench and a quarter of the requests failed
    # (results/gpu/h200-2026-12-02). SQLite keeps a fixed pool: its writers queue on one lock anyway.
    db_pool_size: int = 10
    db_max_overflow: int = 10
    db_pool_timeout_s: float = 30.0
    # Observation, admission and outcome times further ahead of the service's clock are a 422.
    future_margin_hours: float = 1.0
    # The clock that stamps actions (service/clock.py): "wall", or "simulated" = the feed's time
    # (the latest observation stored), for a replay faster than real time.
    clock: str = "wall"
    model: str | None = None             # registry name; None = the registry's default
    # (SEPSIS_MODEL and _VERSION are the default until the first model switch; from then on the switch
    # recorded in the database is served, also after a restart: service/active_model.py)
    model_version: str | None = None
    # Candidate models scored silently beside the active one on every observation (service/shadow.py):
    # "name:version,name:version"; empty for none.
    shadow_models: str = ""
    models_dir: str | None = None        # None = the registry's default root
    # onnxruntime provider: auto / cpu / cuda. For serving, auto means the CPU provider: on an H200 the
    # CUDA provider cost more model time per request than the CPU one at every ward size measured
    # (results/gpu/h200-2026-12-01: a few rows per step; the database and HTTP bound throughput).
    device: str = "auto"
    # Micro-batching gathers concurrent requests into one model run. "auto" enables it only on
    # CUDA, where one run of 64 rows costs about as much as one row; on CPU a step runs at once.
    # One intra-op thread: a step is a few small matmuls, and spare cores serve other requests.
    model_threads: int = 1
    microbatch: str = "auto"             # auto / on / off
    microbatch_max_size: int = 64
    microbatch_max_wait_ms: float = 3.0
    bootstrap_keys: str = ""             # "role:key,role:key" seeded (hashed) at start-up; dev/demo only
    key_cache_seconds: float = 0.0       # how long a verified key is trusted without a DB lookup (0: never)
    host: str = "127.0.0.1"
    port: int = 8000
    # uvicorn's HTTP parser: auto = httptools when installed (the serve extra installs it), else h11.
    # On the H200 the two served at the same rate (results/gpu/h200-2026-12-02): the HTTP layer's
    # time is FastAPI's routing, validation and serialisation, not parsing.
    http: str = "auto"                   # auto / h11 / httptools
    # How often a process checks for a model switch made by another worker (0: never).
    model_follow_s: float = 2.0
    migrate: bool = True                 # run Alembic migrations at start-up
    # Contributions per scored observation (models/explain.py): one extra batched run of every row and
    # its withheld-variable variants, timed by sepsis_explain_seconds. off stores null contributions.
    explain: bool = True
    # Fairness: a batch holds its patients' writes and the model for its whole length, so one of
    # 20,000 rows kept other patients' observations waiting for seconds (bench/batch_fairness.py).
    max_batch_rows: int = 1000           # rows per /predict/batch request; more is a 413 (at most 20,000)
    max_body_bytes: int = 16 * 1024 * 1024  # larger request bodies are a 413 before they are parsed

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        values = {}
        for f in fields(cls):
            kind = {"int": int, "float": float, "bool": bool}.get(str(f.type).split(" ")[0], str)
            values[f.name] = _env(f.name, f.default, kind)
        # SEPSIS_MODEL / SEPSIS_MODELS_DIR are the registry's own variables; we read the same names.
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def serving_device(self) -> str:
        return "cpu" if self.device == "auto" else self.device

    def use_microbatch(self, provider: str) -> bool:
        if self.microbatch == "on":
            return True
        if self.microbatch == "off":
            return False
        return "CUDA" in provider.upper()

