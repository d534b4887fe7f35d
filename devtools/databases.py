"""A private PostgreSQL schema for one test or benchmark run, dropped afterwards, so that runs
sharing a database never see each other's tables."""
from __future__ import annotations

import contextlib
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
