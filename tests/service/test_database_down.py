"""A database the service cannot reach, or a connection pool that stays empty, is a 503 the client
may retry, never a 500, and a retried observation is stored once.

On the H200 bench, 8 workers with 20 connections each exceeded PostgreSQL's max_connections and a
quarter of the requests came back as 500s (results/gpu/h200-2026-12-02)."""
from __future__ import annotations

import contextlib
import os

import psycopg
import pytest

from tests.service.conftest import PG_URL, client_for, hdr, obs

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(not PG_URL, reason="SEPSIS_TEST_PG_URL is not set")]


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextlib.contextmanager
def _own_database():
    """A database of its own, so the test can shut its door without touching other tests."""
    name = f"sepsis_down_{os.getpid()}"
    base = PG_URL.split("?", 1)[0].rsplit("/", 1)[0]
    with psycopg.connect(_plain(PG_URL), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{base}/{name}", admin, name
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _stored(client, pid: str) -> int:
    r = client.get(f"/patients/{pid}", headers=hdr("viewer"))
    assert r.status_code == 200, r.text
    return r.json()["n_observations"]


def test_a_refused_connection_is_a_503_and_the_retry_stores_once(models_root):
    with _own_database() as (url, admin, name), client_for(url, models_root) as client:
        assert client.post("/predict", json=obs("p1", 0, HR=80.0), headers=hdr("ingest")).status_code == 200
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

        r = client.post("/predict", json=obs("p1", 1, HR=90.0), headers=hdr("ingest"))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert "database is unavailable" in r.json()["detail"] and "not currently accepting connections" in r.json()["detail"]

        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        again = client.post("/predict", json=obs("p1", 1, HR=90.0), headers=hdr("ingest"))
        assert again.status_code == 200 and again.json()["duplicate"] is False, again.text
        assert client.post("/predict", json=obs("p1", 1, HR=90.0), headers=hdr("ingest")).json()["duplicate"] is True
        assert _stored(client, "p1") == 2


def test_an_empty_pool_is_a_503_within_the_pool_timeout(models_root):
    with _own_database() as (url, _admin, _name), \
            client_for(url, models_root, db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.5) as client:
        engine = client.app.state.services.engine
        with engine.connect():  # the pool's only connection, held
            r = client.post("/predict", json=obs("p2", 0, HR=80.0), headers=hdr("ingest"))
        assert r.status_code == 503, r.text
        assert "no database connection came free" in r.json()["detail"]
        assert client.post("/predict", json=obs("p2", 0, HR=80.0), headers=hdr("ingest")).status_code == 200
        assert _stored(client, "p2") == 1
