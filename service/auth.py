"""API keys: random tokens, stored as SHA-256 hashes, each with one role."""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.storage.tables import ApiKey

ROLES = ("ingest", "clinician", "viewer", "admin")
# What each role may do. Admin implies all; a clinician also reads.
GRANTS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest"}),
    "clinician": frozenset({"clinician", "viewer"}),
    "viewer": frozenset({"viewer"}),
    "admin": frozenset({"ingest", "clinician", "viewer", "admin"}),
}
KEY_PREFIX = "sk_"


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
        s.add(ApiKey(key_hash=hash_key(key), prefix=key[:10], role=role, name=name,
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


class KeyVerifier:
    """Looks keys up by hash, remembering good ones for `ttl` seconds so the hot path skips the DB
    (a revoked key therefore stops working within `ttl`)."""

    def __init__(self, factory: sessionmaker[Session], ttl: float = 10.0):
        self._factory = factory
        self._ttl = ttl
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def role_of(self, key: str) -> str | None:
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit and now - hit[1] < self._ttl:
            return hit[0]
        with self._factory.begin() as s:
            row = s.execute(select(ApiKey.role, ApiKey.revoked).where(ApiKey.key_hash == digest)).first()
        if row is None or row.revoked:
            with self._lock:
                self._cache.pop(digest, None)
            return None
        with self._lock:
            self._cache[digest] = (row.role, now)
        return row.role
