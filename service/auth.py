"""API keys: random tokens, stored as SHA-256 hashes, each with one role.

A key is looked up in the database on every request by default (key_cache_seconds=0), so a key
revoked from any process (`python -m service keys revoke`, another worker) fails on its next
request: a per-process cache cannot hear of a revocation elsewhere. The lookup is one indexed
read (bench/key_lookup.py measures it)."""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.storage.db import read_only
from service.storage.tables import ApiKey

ROLES = ("ingest", "clinician", "viewer", "monitor", "admin")
# What each role may do. Admin implies all; a clinician also reads; monitor reads /metrics only
# (what Prometheus is given).
GRANTS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest"}),
    "clinician": frozenset({"clinician", "viewer"}),
    "viewer": frozenset({"viewer"}),
    "monitor": frozenset({"metrics"}),
    "admin": frozenset({"ingest", "clinician", "viewer", "metrics", "admin"}),
}
KEY_PREFIX = "sk_"
# Listings show the first characters of a key to tell keys apart: "sk_" and 3 of the secret.
PREFIX_LENGTH = 6


def hash_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash suffices: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(factory: sessionmaker[Session], role: str, name: str | None = None, key: str | None = None) -> str:
    """Store a key (a new random one unless given) and return it in clear; only its hash is kept."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    key = key or new_key()
    with factory.begin() as s:
        s.add(ApiKey(key_hash=hash_key(key), prefix=key[:PREFIX_LENGTH], role=role, name=name,
                     created_at=dt.datetime.now(dt.timezone.utc), revoked=False))
    return key


def seed_keys(factory: sessionmaker[Session], spec: str) -> list[tuple[str, str]]:
    """Insert the keys of a "role:key,role:key" spec that are not stored yet (dev/demo only)."""
    seeded = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        role, sep, key = item.partition(":")
        if not sep or not key or role not in ROLES:
            raise ValueError(f"SEPSIS_BOOTSTRAP_KEYS item {item!r}: expected role:key with role in {', '.join(ROLES)}")
        with factory.begin() as s:
            exists = s.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_key(key)))
        if exists is None:
            try:
                create_key(factory, role, name="bootstrap", key=key)
            except IntegrityError:
                pass  # another worker seeded it at the same moment
        seeded.append((role, key))
    return seeded


def list_keys(factory: sessionmaker[Session]) -> list[ApiKey]:
    with factory.begin() as s:
        return list(s.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(factory: sessionmaker[Session], key_id: int) -> bool:
    with factory.begin() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            return False
        row.revoked = True
        return True


@dataclass(frozen=True)
class KeyIdentity:
    id: int
    role: str
    name: str | None
    prefix: str


def identify(factory: sessionmaker[Session], key: str) -> KeyIdentity | None:
    """Which stored, unrevoked key this is (for audit records)."""
    with factory.begin() as s:
        row = s.execute(select(ApiKey.id, ApiKey.role, ApiKey.name, ApiKey.prefix, ApiKey.revoked)
                        .where(ApiKey.key_hash == hash_key(key))).first()
    return None if row is None or row.revoked else KeyIdentity(row.id, row.role, row.name, row.prefix)


_LOOKUP = select(ApiKey.role, ApiKey.revoked).where(ApiKey.key_hash == bindparam("digest"))


class KeyVerifier:
    """Looks keys up by hash. With `ttl` > 0 a good key is remembered that long without a lookup, so a
    key revoked elsewhere keeps working up to `ttl` seconds; 0 (the default) looks up every time."""

    def __init__(self, factory: sessionmaker[Session], ttl: float = 0.0):
        self._factory = factory
        self._reads = read_only(factory.kw["bind"])
        self._ttl = ttl
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def role_of(self, key: str) -> str | None:
        digest = hash_key(key)
        now = time.monotonic()
        if self._ttl > 0:
            with self._lock:
                hit = self._cache.get(digest)
            if hit and now - hit[1] < self._ttl:
                return hit[0]
        with self._reads.connect() as conn:
            row = conn.execute(_LOOKUP, {"digest": digest}).first()
        if row is None or row.revoked:
            with self._lock:
                self._cache.pop(digest, None)
            return None
        if self._ttl > 0:
            with self._lock:
                self._cache[digest] = (row.role, now)
        return row.role
