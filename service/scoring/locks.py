"""Per-patient serialisation inside one process: a fixed array of locks, a patient hashed to one.

Across processes the database does it (UPDATE ... WHERE version = read version, retried on a
miss); these locks make such retries rare within a worker.
"""
from __future__ import annotations

import threading
import zlib
from contextlib import contextmanager
from typing import Iterable, Iterator


class StripedLocks:
    def __init__(self, stripes: int = 1024):
        self._locks = [threading.Lock() for _ in range(stripes)]

    def _index(self, key: str) -> int:
        return zlib.crc32(key.encode()) % len(self._locks)

    @contextmanager
    def hold_all(self) -> Iterator[None]:
        """Every stripe (in the same ascending order): no patient's write runs meanwhile in this
        process. A model switch swaps the active model under it (service/lifecycle/upgrades.py)."""
        with self._hold(range(len(self._locks))):
            yield

    @contextmanager
    def hold(self, keys: Iterable[str]) -> Iterator[None]:
        # Always in ascending stripe order, so two batches sharing patients cannot deadlock.
        with self._hold(sorted({self._index(k) for k in keys})):
            yield

    @contextmanager
    def _hold(self, stripes) -> Iterator[None]:
        taken = []
        try:
            for i in stripes:
                self._locks[i].acquire()
                taken.append(i)
            yield
        finally:
            for i in reversed(taken):
                self._locks[i].release()
