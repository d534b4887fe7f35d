"""The active model as recorded in the database, so that a switch outlives the process that made it.

A model switch (service/lifecycle/upgrades.py) writes the target here in the transaction that writes the
rebuilt states. At start-up the service serves the recorded model rather than the configured one
(SEPSIS_MODEL is the default until the first switch), and every process follows a switch made by
another: it polls the record every SEPSIS_MODEL_FOLLOW_S seconds and adopts the new model under all
its patient locks. The states are already rebuilt by the switching process; a state of the other
model that a request still finds is rebuilt from the stored history (ingest), so a process that
has not yet followed answers correctly on its own model, stamped as such.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from service.storage.db import read_only
from service.storage.tables import ActiveModel

log = logging.getLogger("service.lifecycle.active")
A = ActiveModel.__table__


def recorded(conn: Connection) -> tuple[str, str] | None:
    row = conn.execute(select(A.c.model_name, A.c.model_version).where(A.c.id == 1)).first()
    return None if row is None else (row.model_name, row.model_version)


def record(conn: Connection, name: str, version: str, at: dt.datetime, by: str | None) -> None:
    """Inside the switch's transaction: this model is the active one from now on."""
    values = dict(model_name=name, model_version=version, switched_at=at, switched_by=by)
    if conn.execute(update(A).where(A.c.id == 1).values(**values)).rowcount == 0:
        conn.execute(A.insert().values(id=1, **values))


class Follower:
    """Polls the record and calls `adopt(name, version)` when it names another model than `current()`."""

    def __init__(self, engine: Engine, interval_s: float, current: Callable[[], tuple[str, str]],
                 adopt: Callable[[str, str], None]):
        self.engine, self.interval_s, self.current, self.adopt = read_only(engine), interval_s, current, adopt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="model-follower", daemon=True)
        self._thread.start()

    def check(self) -> bool:
        """One poll; True when it adopted another model."""
        with self.engine.connect() as conn:
            target = recorded(conn)
        if target is None or target == self.current():
            return False
        self.adopt(*target)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # a database blip or an unloadable model: keep serving, try again
                log.exception("following the recorded active model failed; still serving %s:%s", *self.current())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
