"""Engine and session set-up, and Alembic migrations run from code at start-up."""
from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


# SQLite's durability levels in WAL mode: FULL syncs the log at every commit, so an answered write
# survives power loss and kernel crashes; NORMAL syncs only at checkpoints, so the last few hundred
# answered writes survive a crash of the process but not of the machine (bench/durability.py).
SQLITE_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")


def make_engine(url: str, sqlite_synchronous: str = "FULL", pool_size: int = 10, max_overflow: int = 10,
                pool_timeout_s: float = 30.0) -> Engine:
    if url.startswith("sqlite"):
        if sqlite_synchronous.upper() not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, got {sqlite_synchronous!r}")
        path = url.removeprefix("sqlite:///")
        if path and path != url and not path.startswith(":memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=8, max_overflow=8)
        _sqlite_immediate_transactions(engine, sqlite_synchronous.upper())
        return engine
    # PostgreSQL keeps its server default, synchronous_commit=on: a commit returns once its WAL
    # record is flushed, so an answered write is durable.
    if pool_size < 1 or max_overflow < 0 or pool_timeout_s <= 0:
        raise ValueError(f"database pool: size must be >= 1, overflow >= 0 and timeout > 0, got {pool_size}, "
                         f"{max_overflow}, {pool_timeout_s}")
    return create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout_s,
                         pool_pre_ping=True)


def _sqlite_immediate_transactions(engine: Engine, synchronous: str) -> None:
    """WAL, the durability level, and BEGIN IMMEDIATE so that concurrent transactions queue
    (busy_timeout) instead of failing on a lock upgrade."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let the events below issue BEGIN themselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    # SQLite's busy handler polls with sleeps of up to 100 ms, which makes the latency tail under
    # load; threads of this process therefore queue on a lock instead (woken at once), and only
    # other processes meet the busy handler.
    lock = threading.Lock()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return  # single reads (key lookups, read_only below) need neither the write lock nor a transaction
        dbapi = conn.connection.dbapi_connection
        if dbapi.isolation_level is not None:  # the pool resets a connection that served an autocommit read to ""
            dbapi.isolation_level = None       # (pysqlite's implicit BEGINs); we issue BEGIN ourselves
        lock.acquire()
        conn.info["holds_lock"] = True
        try:
            # Every transaction takes the write lock up front: a deferred one that read first and
            # then wrote would fail at once (SQLITE_BUSY) if another connection committed meanwhile.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(conn)
            raise

    def _release(conn):
        if conn.info.pop("holds_lock", False):
            lock.release()

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)


def read_only(engine: Engine) -> Engine:
    """The engine for single-statement reads: each runs on its own (autocommit), so on SQLite it
    waits for no writer, and on PostgreSQL it costs no BEGIN/COMMIT round trips."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`, by default the latest (idempotent; safe on every start-up).
    An earlier revision builds the schema an older release stored, for the migrations' tests."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
