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


def test_sqlite_syncs_every_commit_by_default(sqlite_url):
    from sqlalchemy import text

    for mode, expected in ((None, 2), ("NORMAL", 1), ("FULL", 2)):  # PRAGMA synchronous: 1 NORMAL, 2 FULL
        engine = make_engine(sqlite_url) if mode is None else make_engine(sqlite_url, mode)
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA synchronous")).scalar() == expected
        engine.dispose()
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        make_engine(sqlite_url, "OFF")


def test_stored_prefixes_shrink_and_old_keys_keep_working(db_url):
    engine = make_engine(db_url)
    try:
        migrate(engine, "0002")  # the schema before the shorter prefix
        factory = sessions(engine)
        old = "sk_" + "A1b2C3d4E5f6" * 3
        with factory.begin() as s:  # stored as the earlier code did: 10 characters
            s.add(ApiKey(key_hash=hash_key(old), prefix=old[:10], role="viewer", name="old",
                         created_at=dt.datetime.now(dt.timezone.utc), revoked=False))
        migrate(engine)
        new = create_key(factory, "ingest")
        with factory.begin() as s:
            prefixes = {k.name: k.prefix for k in s.scalars(select(ApiKey))}
        assert prefixes["old"] == old[:6] and prefixes[None] == new[:6] and len(prefixes) == 2
        verifier = KeyVerifier(factory)
        assert verifier.role_of(old) == "viewer" and verifier.role_of(new) == "ingest"
    finally:
        engine.dispose()


def test_a_key_revoked_elsewhere_fails_on_the_next_request(sqlite_url, models_root):
    """Another process (the keys CLI, another worker) revokes: the default settings look the key up
    on every request, so no cache of this process can keep it alive."""
    from service.config import Settings
    from tests.service.conftest import client_for, hdr, obs

    with client_for(sqlite_url, models_root, key_cache_seconds=Settings().key_cache_seconds) as c:
        key = create_key(c.app.state.services.factory, "ingest", name="feed")
        assert c.post("/predict", json=obs("rv", 0, HR=80), headers={"X-API-Key": key}).status_code == 200
        elsewhere = make_engine(sqlite_url)
        factory = sessions(elsewhere)
        with factory.begin() as s:
            key_id = s.scalar(select(ApiKey.id).where(ApiKey.name == "feed"))
        revoke_key(factory, key_id)
        elsewhere.dispose()
        r = c.post("/predict", json=obs("rv", 1, HR=80), headers={"X-API-Key": key})
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        assert c.get("/patients", headers=hdr("viewer")).status_code == 200


@pytest.mark.parametrize("asked, opened", [("auto", "cpu"), ("cpu", "cpu"), ("cuda", "cuda")])
def test_serving_device_auto_means_the_cpu_provider(monkeypatch, models_root, asked, opened):
    # measured on an H200 (results/gpu/h200-2026-12-01): per request the CPU provider beat CUDA
    from models.runtime import StepRuntime
    from service.config import Settings
    from service.scoring.inference import Model
    from service.metrics import Metrics

    seen = []
    real_open = StepRuntime.open.__func__

    def recording_open(cls, info, device="auto", intra_op_threads=None):
        seen.append(device)
        return real_open(cls, info, device="cpu", intra_op_threads=intra_op_threads)

    monkeypatch.setattr(StepRuntime, "open", classmethod(recording_open))
    settings = Settings(models_dir=str(models_root), model="sepsis-cfc", model_version="1", device=asked)
    Model.load(settings, Metrics()).close()
    assert seen == [opened]


def test_observations_stored_before_the_hourly_grid_are_refiled_from_their_values(db_url, models_root):
    """A database of revision 0009 (one stored row per posted time, two of them in one hour) is
    upgraded: its rows become messages, and the next value refiles the stay on the hourly grid:
    the hour's two values by their median, the risks those of the values posted afresh."""
    from sqlalchemy import text

    from tests.service.conftest import T0, client_for, hdr, obs

    engine = make_engine(db_url)
    try:
        migrate(engine, "0009")
        from sqlalchemy import JSON, Float, Integer, String, column, table

        from service.storage.tables import UTCDateTime
        patients = table("patients", column("id", String), column("created_at", UTCDateTime()),
                         column("admitted_by", String), column("icu_admit_time", UTCDateTime()),
                         column("first_ts", UTCDateTime()), column("last_ts", UTCDateTime()),
                         column("n_observations", Integer), column("version", Integer))
        rows = table("observations", column("patient_id", String), column("ts", UTCDateTime()), column("vitals", JSON),
                     column("elapsed_hours", Float), column("iculos", Float), column("risk", Float),
                     column("threshold", Float), column("model_name", String), column("model_version", String),
                     column("received_at", UTCDateTime()))
        with engine.begin() as conn:  # as the code of revision 0009 stored them
            conn.execute(patients.insert().values(id="old", created_at=T0, admitted_by="admission", icu_admit_time=T0,
                                                  first_ts=T0, last_ts=T0 + dt.timedelta(minutes=90), n_observations=3,
                                                  version=3))
            for minutes, hr, hour in ((0, 80.0, 1), (30, 100.0, 1), (90, 120.0, 2)):
                at = T0 + dt.timedelta(minutes=minutes)
                conn.execute(rows.insert().values(patient_id="old", ts=at, vitals={"HR": hr}, elapsed_hours=0.0,
                                                  iculos=hour, risk=0.5, threshold=0.5, model_name="sepsis-cfc",
                                                  model_version="1", received_at=at))
        migrate(engine)
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT variable, value, hour FROM messages WHERE patient_id = 'old' ORDER BY id")).all()
        assert [tuple(r) for r in kept] == [("HR", 80.0, 1), ("HR", 100.0, 1), ("HR", 120.0, 2)]
    finally:
        engine.dispose()
    with client_for(db_url, models_root) as c:
        r = c.post("/predict", json=obs("old", 2, HR=90.0), headers=hdr("ingest"))
        assert r.status_code == 200, r.text
        timeline = c.get("/patients/old", headers=hdr("viewer")).json()["timeline"]
    with client_for(db_url, models_root) as fresh:  # the same values posted afresh
        for h, hr in ((0, 80.0), (0.5, 100.0), (1.5, 120.0), (2, 90.0)):
            fresh.post("/predict", json=obs("new", h, HR=hr), headers=hdr("ingest"))
        want = fresh.get("/patients/new", headers=hdr("viewer")).json()["timeline"]
    assert [e["vitals"] for e in timeline] == [{"HR": 90.0}, {"HR": 120.0}, {"HR": 90.0}]
    assert [e["risk"] for e in timeline] == pytest.approx([e["risk"] for e in want], abs=1e-6)


def test_shadow_scores_stored_before_hourly_shadow_states_keep_none(db_url):
    """Revision 0014 adds each shadow score's state after its hour; the scores stored before keep
    theirs as none, which sends a rewind of such a stay to a replay from the admission
    (tests/service/test_shadow.py: test_shadow_scores_without_states_replay_the_stay_once)."""
    from sqlalchemy import Boolean, Float, Integer, String, column, table

    from service.storage.tables import ShadowScore, UTCDateTime
    from tests.service.conftest import T0

    engine = make_engine(db_url)
    try:
        migrate(engine, "0013")
        with engine.connect() as conn:
            assert "state" not in {c["name"] for c in inspect(conn).get_columns("shadow_scores")}
        patients = table("patients", column("id", String), column("created_at", UTCDateTime()),
                         column("admitted_by", String), column("n_observations", Integer), column("version", Integer))
        scores = table("shadow_scores", column("patient_id", String), column("model_name", String),
                       column("model_version", String), column("ts", UTCDateTime()), column("risk", Float),
                       column("threshold", Float), column("alarm", Boolean))
        with engine.begin() as conn:  # as the code of revision 0013 stored them
            conn.execute(patients.insert().values(id="old", created_at=T0, admitted_by="admission", n_observations=1,
                                                  version=1))
            conn.execute(scores.insert().values(patient_id="old", model_name="sepsis-cfc", model_version="2", ts=T0,
                                                risk=0.25, threshold=0.5, alarm=False))
        migrate(engine)
        with engine.connect() as conn:
            kept = conn.execute(select(ShadowScore)).one()
        assert (kept.patient_id, kept.ts, kept.risk, kept.state) == ("old", T0, 0.25, None)
    finally:
        engine.dispose()


def test_stays_stored_before_first_measured_get_it_from_their_hourly_rows(db_url):
    """Revision 0015 adds each patient's first measured hour (the start of the first hourly row with
    a vital sign or lab: demographics alone or nothing do not count), filled for stored stays."""
    from sqlalchemy import JSON, Float, Integer, String, column, table

    from service.storage.tables import UTCDateTime
    from tests.service.conftest import T0

    hour = dt.timedelta(hours=1)
    engine = make_engine(db_url)
    try:
        migrate(engine, "0014")
        patients = table("patients", column("id", String), column("created_at", UTCDateTime()),
                         column("admitted_by", String), column("n_observations", Integer), column("version", Integer))
        rows = table("observations", column("patient_id", String), column("ts", UTCDateTime()), column("vitals", JSON),
                     column("elapsed_hours", Float), column("iculos", Float), column("risk", Float),
                     column("threshold", Float), column("model_name", String), column("model_version", String),
                     column("received_at", UTCDateTime()))
        with engine.begin() as conn:  # as the code of revision 0014 stored them
            for pid in ("late", "never"):
                conn.execute(patients.insert().values(id=pid, created_at=T0, admitted_by="admission", n_observations=3,
                                                      version=1))
            for pid, vitals in (("late", [{}, {"Age": 70.0}, {"HR": 80.0}]), ("never", [{}, {}, {"Age": 70.0}])):
                conn.execute(rows.insert(), [dict(patient_id=pid, ts=T0 + k * hour, vitals=v, elapsed_hours=float(k > 0),
                                                  iculos=float(k + 1), risk=0.1, threshold=0.5, model_name="sepsis-cfc",
                                                  model_version="1", received_at=T0) for k, v in enumerate(vitals)])
        migrate(engine)
        with engine.connect() as conn:
            found = dict(conn.execute(select(Patient.id, Patient.first_measured)).all())
        assert found == {"late": T0 + 2 * hour, "never": None}
    finally:
        engine.dispose()
