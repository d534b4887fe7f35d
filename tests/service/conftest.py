"""Fixtures: a tiny real ONNX model in a registry layout, and databases (a temp SQLite file, and a
private PostgreSQL schema when SEPSIS_TEST_PG_URL is set)."""
from __future__ import annotations

import contextlib
import datetime as dt
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient

from devtools.databases import private_pg_schema
from models.card import FEATURES
from models.testing import fixture_weights, reference_step, write_fixture_model
from service.app import create_app
from service.config import Settings

PG_URL = os.environ.get("SEPSIS_TEST_PG_URL")
STATE_SIZE = 8
T0 = dt.datetime(2024, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
KEYS = {"admin": "sk_test_admin", "ingest": "sk_test_ingest", "clinician": "sk_test_clinician", "viewer": "sk_test_viewer",
        "monitor": "sk_test_monitor"}
BOOTSTRAP = ",".join(f"{role}:{key}" for role, key in KEYS.items())


def hdr(role: str = "admin") -> dict:
    return {"X-API-Key": KEYS[role]}


def iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="session")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_fixture_model(root / "sepsis-cfc" / "1", state_size=STATE_SIZE, threshold=0.5)
    write_fixture_model(root / "sepsis-cfc" / "2", state_size=STATE_SIZE, threshold=0.5, version="2", seed=7)
    # threshold 0: every observation is at or above it, so alarm behaviour is fully determined
    write_fixture_model(root / "always" / "1", state_size=STATE_SIZE, threshold=0.0, name="always")
    return root


def _pg_schema():
    return private_pg_schema(PG_URL, prefix="t")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'service.db'}"
        return
    if not PG_URL:
        pytest.skip("SEPSIS_TEST_PG_URL is not set")
    with _pg_schema() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'service.db'}"


def make_settings(db_url: str, models_root, **kw) -> Settings:
    base = dict(db_url=db_url, models_dir=str(models_root), model="sepsis-cfc", model_version="1",
                bootstrap_keys=BOOTSTRAP, device="cpu", microbatch="off", key_cache_seconds=0.0)
    base.update(kw)
    return Settings(**base)


@contextlib.contextmanager
def client_for(db_url: str, models_root, **kw):
    with TestClient(create_app(make_settings(db_url, models_root, **kw)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def client(db_url, models_root):
    with client_for(db_url, models_root) as c:
        yield c


def obs(patient: str, hour: float, **vitals) -> dict:
    return {"patient_id": patient, "timestamp": iso(T0 + dt.timedelta(hours=hour)), "vitals": vitals}


def reference_hourly(rows: list[tuple[float, dict]], demographics: dict | None = None, icu_admit_hour: float = None,
                     seed: int = 0) -> dict[int, float]:
    """{ICULOS: risk} of a stay's (hour, vitals) values, computed independently with the fixture's
    numpy reference on the model's hourly grid: every value filed in hour floor(h - admit) + 1,
    several of one variable in one hour by their median, every hour from 1 to the latest (empty
    ones too) stepped with 0 then 1 elapsed hours, demographics every step. `admit` defaults to
    the first row's hour (a patient created by its first observation)."""
    weights = fixture_weights(STATE_SIZE, seed)
    admit = rows[0][0] if icu_admit_hour is None else icu_admit_hour
    demographics = demographics if demographics is not None else {
        k: v for k, v in rows[0][1].items() if k in ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime")}
    filed: dict[int, dict[str, list[float]]] = {}
    for h, vitals in rows:
        filed.setdefault(int(np.floor(h - admit)) + 1, {})
        for name, value in vitals.items():
            filed[int(np.floor(h - admit)) + 1].setdefault(name, []).append(value)
    state = np.zeros((1, STATE_SIZE), np.float32)
    risks = {}
    for k in range(1, max(filed) + 1):
        x = np.full((1, len(FEATURES)), np.nan, np.float32)
        for name, value in {**demographics, **{n: float(np.median(v)) for n, v in filed.get(k, {}).items()}}.items():
            x[0, FEATURES.index(name)] = value
        x[0, FEATURES.index("ICULOS")] = k
        risk, state = reference_step(x, np.array([[0.0 if k == 1 else 1.0]], np.float32), state, weights)
        risks[k] = float(risk[0, 0])
    return risks


def reference_risks(rows: list[tuple[float, dict]], demographics: dict | None = None, icu_admit_hour: float = None,
                    seed: int = 0) -> list[float]:
    """What the service must answer to each of a stream of (hour, vitals) posts: its own hour's
    risk (`reference_hourly`) after the posts so far."""
    admit = rows[0][0] if icu_admit_hour is None else icu_admit_hour
    return [reference_hourly(rows[:i + 1], demographics, admit, seed)[int(np.floor(rows[i][0] - admit)) + 1]
            for i in range(len(rows))]


def vitals_stream(n: int, seed: int = 0) -> list[tuple[float, dict]]:
    """n hourly observations with a changing subset of variables measured."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in range(n):
        v = {"HR": float(np.round(rng.uniform(60, 140), 1)), "MAP": float(np.round(rng.uniform(50, 100), 1))}
        if h % 3 == 0:
            v["Temp"] = float(np.round(rng.uniform(35.5, 40.5), 1))
        if h % 5 == 0:
            v["Lactate"] = float(np.round(rng.uniform(0.5, 6), 2))
        if h == 0:
            v.update(Age=67.0, Gender=1.0, Unit1=1.0, Unit2=0.0, HospAdmTime=-3.5)
        rows.append((float(h), v))
    return rows
