"""One settings object for the service; every field reads from the environment (prefix SEPSIS_),
typed and checked when it is built: a value of the wrong type or outside its choices fails the
start with a message naming the variable (SEPSIS_CLOCK='feed': ...). `Settings.from_env()` reads the
environment, its keywords winning (the command line's options); an empty variable means the default.
`Settings(...)` takes only its keywords."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from service.schemas import MAX_BATCH_ROWS


def _upper(value):
    return value.upper() if isinstance(value, str) else value


def _problem(error: dict) -> str:
    name = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        return f"{name}: not a setting"
    return f"{name} (SEPSIS_{name.upper()}={error['input']!r}): {error['msg']}"


class SettingsError(ValueError):
    """Settings that cannot be served: each problem names its variable, the value given and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEPSIS_", env_ignore_empty=True, frozen=True, extra="forbid",
                                      protected_namespaces=())

    db_url: str = "sqlite:///.cache/service/sepsis.db"  # relative to the working directory (git-ignored)
    # SQLite in WAL mode: FULL syncs every commit (an answered write survives power loss); NORMAL
    # only a crash of the process. PostgreSQL keeps its own synchronous_commit (default on).
    sqlite_synchronous: Annotated[Literal["NORMAL", "FULL", "EXTRA"], BeforeValidator(_upper)] = "FULL"
    # PostgreSQL connections per worker process: pool + overflow, waited for up to pool_timeout_s.
    # Keep workers x (pool + overflow) below the server's max_connections (100 by default): 8 workers
    # x (10 + 10) exceeded it on the H200 bench and a quarter of the requests failed
    # (results/gpu/h200-2026-12-02). SQLite keeps a fixed pool: its writers queue on one lock anyway.
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    db_pool_timeout_s: float = Field(30.0, gt=0)
    # Observation, admission and outcome times further ahead of the service's clock are a 422.
    future_margin_hours: float = Field(1.0, ge=0)
    # A late or amended value rewinds the patient to the hour it belongs to and re-steps every later
    # hour (service/scoring/ingest.py); one for an hour further back than this behind the patient's
    # latest hour is a 409 that names the window.
    revision_window_hours: int = Field(72, ge=1)
    # Hours between values are stepped empty, as the training rows are; a value further than this
    # after the patient's latest hour is a 409 (a clock set days ahead would otherwise step them all).
    max_gap_hours: int = Field(168, ge=1)
    # The clock that stamps actions (service/clock.py): "wall", or "simulated" = the feed's time
    # (the latest observation stored), for a replay faster than real time.
    clock: Literal["wall", "simulated"] = "wall"
    model: str | None = None             # registry name; None = the registry's default
    # (SEPSIS_MODEL and _VERSION are the default until the first model switch; from then on the switch
    # recorded in the database is served, also after a restart: service/lifecycle/active.py)
    model_version: str | None = None
    # Candidate models scored silently beside the active one on every observation (service/lifecycle/shadows.py):
    # "name:version,name:version"; empty for none.
    shadow_models: str = ""
    models_dir: str | None = None        # None = the registry's default root
    # onnxruntime provider. For serving, auto means the CPU provider: on an H200 the CUDA provider
    # cost more model time per request than the CPU one at every ward size measured
    # (results/gpu/h200-2026-12-01: a few rows per step; the database and HTTP bound throughput).
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Micro-batching gathers concurrent requests into one model run. "auto" enables it only on
    # CUDA, where one run of 64 rows costs about as much as one row; on CPU a step runs at once.
    # One intra-op thread: a step is a few small matmuls, and spare cores serve other requests.
    model_threads: int = Field(1, ge=1)
    microbatch: Literal["auto", "on", "off"] = "auto"
    microbatch_max_size: int = Field(64, ge=1)
    microbatch_max_wait_ms: float = Field(3.0, ge=0)
    bootstrap_keys: str = ""             # "role:key,role:key" seeded (hashed) at start-up; dev/demo only
    key_cache_seconds: float = Field(0.0, ge=0)  # how long a verified key is trusted without a DB lookup (0: never)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # uvicorn's HTTP parser: auto = httptools when installed (the serve extra installs it), else h11.
    # On the H200 the two served at the same rate (results/gpu/h200-2026-12-02): the HTTP layer's
    # time is FastAPI's routing, validation and serialisation, not parsing.
    http: Literal["auto", "h11", "httptools"] = "auto"
    # How often a process checks for a model switch made by another worker (0: never).
    model_follow_s: float = Field(2.0, ge=0)
    migrate: bool = True                 # run Alembic migrations at start-up
    # Contributions per scored observation (models/explain.py): one extra batched run of every row and
    # its withheld-variable variants, and with a memory model a second one for the variables not measured
    # for more than 24 h, timed together by sepsis_explain_seconds. off stores null contributions.
    explain: bool = True
    # Fairness: a batch holds its patients' writes and the model for its whole length, so one of
    # 20,000 rows kept other patients' observations waiting for seconds (bench/batch_fairness.py).
    max_batch_rows: int = Field(1000, ge=1, le=MAX_BATCH_ROWS)  # rows per /predict/batch request; more is a 413
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1)  # larger request bodies are a 413 before they are parsed

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise SettingsError("; ".join(map(_problem, err.errors()))) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Settings(...) is what it is given (tests build exact settings whatever the shell exports);
        # from_env reads the environment.
        return (init_settings,)

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """The environment's settings; overrides that are None (an option not given) leave them."""
        return cls(**{**EnvSettingsSource(cls)(), **{k: v for k, v in overrides.items() if v is not None}})

    def serving_device(self) -> str:
        return "cpu" if self.device == "auto" else self.device

    def use_microbatch(self, provider: str) -> bool:
        if self.microbatch == "on":
            return True
        if self.microbatch == "off":
            return False
        return "CUDA" in provider.upper()
