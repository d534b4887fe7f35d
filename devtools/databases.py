"""PostgreSQL for tests and benchmarks: the local test database `make test` finds on its own, and a
private schema for one run, dropped afterwards, so that runs sharing a database never see each
other's tables."""
from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import quote


@contextlib.contextmanager
def private_pg_schema(pg_url: str, prefix: str = "t") -> Iterator[str]:
    """Yields `pg_url` with its search_path set to a new schema; drops the schema at the end."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    raw = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(raw, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


LOCAL_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def local_test_url(server: str = LOCAL_SERVER, database: str = "test", timeout_s: float = 2.0) -> str | None:
    """`<server>/<database>` when a PostgreSQL server there lets us in (the database is created if
    missing), else None: what `make test` runs the PostgreSQL tests against when
    SEPSIS_TEST_PG_URL is not set."""
    import psycopg

    raw = server.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(f"{raw}/postgres", autocommit=True, connect_timeout=timeout_s) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a parallel run made it first
                    conn.execute(f'CREATE DATABASE "{database}"')
    except psycopg.Error as err:  # nothing listening, refused login, no right to create the database
        reason = " ".join(str(err).split()) or type(err).__name__
        print(f"no PostgreSQL test database at {server.split('@')[-1]}: {reason}", file=sys.stderr)
        return None
    return f"{server}/{database}"


if __name__ == "__main__":  # `python -m devtools.databases`: print the local test URL, or nothing
    print(local_test_url() or "")
