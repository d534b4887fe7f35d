"""Migrations create exactly the models' schema, re-run safely, and keys are stored hashed."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from service.auth import KeyVerifier, create_key, hash_key, revoke_key
from service.storage.db import make_engine, migrate, sessions
from service.storage.tables import ApiKey, Base, Patient

ROOT = Path(__file__).resolve().parents[2]


def test_migrations_match_models_and_are_idempotent(db_url):
    engine = make_engine(db_url)
    try:
        migrate(engine)
        migrate(engine)  # every start-up runs it
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], diff
            assert {"patients", "observations", "alarms", "api_keys", "alembic_version"} <= set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_times_round_trip_as_utc(db_url):
    engine = make_engine(db_url)
    try:
        migrate(engine)
        factory = sessions(engine)
        local = dt.datetime(2024, 3, 1, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        with factory.begin() as s:
            s.add(Patient(id="tz", created_at=local, admitted_by="admission", n_observations=0, version=0,
                          icu_admit_time=local))
        with factory.begin() as s:
            got = s.get(Patient, "tz").icu_admit_time
        assert got == local and got.utcoffset() == dt.timedelta(0)
    finally:
        engine.dispose()


def test_keys_hashed_and_revocable(sqlite_url):
    engine = make_engine(sqlite_url)
    migrate(engine)
    factory = sessions(engine)
    key = create_key(factory, "clinician", name="ward 3")
    with factory.begin() as s:
        stored = s.scalars(select(ApiKey)).one()
    assert stored.key_hash == hash_key(key) and key not in (stored.key_hash, stored.prefix)
    verifier = KeyVerifier(factory, ttl=0)
    assert verifier.role_of(key) == "clinician" and verifier.role_of(key + "x") is None
    revoke_key(factory, stored.id)
    assert verifier.role_of(key) is None
    engine.dispose()


def test_cli_creates_a_working_key(tmp_path):
    env = {**os.environ, "SEPSIS_DB_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "service", "keys", "create", "--role", "ingest"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("sk_") and len(key) > 30
    engine = make_engine(env["SEPSIS_DB_URL"])
    assert KeyVerifier(sessions(engine), ttl=0).role_of(key) == "ingest"
    engine.dispose()
    bad = subprocess.run([sys.executable, "-m", "service", "keys", "create", "--role", "root"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr


def test_settings_read_from_environment(monkeypatch):
    from service.config import Settings

    monkeypatch.setenv("SEPSIS_DB_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("SEPSIS_PORT", "9001")
    monkeypatch.setenv("SEPSIS_MICROBATCH", "on")
    monkeypatch.setenv("SEPSIS_MICROBATCH_MAX_WAIT_MS", "2.5")
    s = Settings.from_env()
    assert (s.db_url, s.port, s.microbatch_max_wait_ms) == ("postgresql+psycopg://u@h/db", 9001, 2.5)
    assert s.use_microbatch("CPUExecutionProvider")
    assert Settings().use_microbatch("CUDAExecutionProvider") and not Settings().use_microbatch("CPUExecutionProvider")
    monkeypatch.setenv("SEPSIS_PORT", "eighty")
    with pytest.raises(ValueError, match="SEPSIS_PORT"):
        Settings.from_env()
