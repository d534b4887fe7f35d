"""`make test` finds the local PostgreSQL server through devtools.databases.local_test_url: the URL
when the server lets us in (database created if missing), None with a reason when it does not."""
import os
import socket
import uuid

import pytest

from devtools.databases import local_test_url

PG_URL = os.environ.get("SEPSIS_TEST_PG_URL")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_no_server_is_none_with_the_reason(capsys):
    assert local_test_url(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}", timeout_s=1) is None
    assert "no PostgreSQL test database at 127.0.0.1:" in capsys.readouterr().err


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="SEPSIS_TEST_PG_URL is not set")
def test_a_live_server_gives_its_url_and_the_database_is_created():
    import psycopg

    server = PG_URL.rsplit("/", 1)[0]
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = local_test_url(server, database=name)
    try:
        assert url == f"{server}/{name}"
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == name
        assert local_test_url(server, database=name) == url  # already there: the same answer
    finally:
        raw = server.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(f"{raw}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
