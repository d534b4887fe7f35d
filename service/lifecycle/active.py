"""The active model: held in one place in a process, recorded in the database across processes.

In a process, `ActiveModel` holds it. A request pins it (`pin()`) once it holds its patients'
locks, and everything of that request reads `current`, the pinned model; a switch swaps it inside
`exclusive()` (every patient lock of the process), so it falls between requests and each request is
answered wholly by one model.

Across processes, the database records it. A model switch (service/lifecycle/upgrades.py) first
claims the one `model_switch_claim` row with a conditional UPDATE (free, or its heartbeat stale):
of two switches on one database, one runs and the other is a 409 naming it. The switch writes the
target to `active_model` in the transaction that writes the rebuilt states and frees the claim, so
the model_switch audit rows form a chain (each one's `from` is the previous one's `to`). At start-up
the service serves the recorded model rather than the configured one (SEPSIS_MODEL is the default
until the first switch), and every process follows a switch made by another: it polls the record
every SEPSIS_MODEL_FOLLOW_S seconds and adopts the new model. The states are already rebuilt by the
switching process; a state of the other model that a request still finds is rebuilt from the stored
history (ingest), so a process that has not yet followed answers correctly on its own model, stamped
as such.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection, Engine

from service.errors import Conflict
from service.scoring.inference import Model
from service.scoring.locks import StripedLocks
from service.storage.db import read_only
from service.storage.tables import ActiveModel as ActiveModelRow
from service.storage.tables import ModelSwitchClaim

log = logging.getLogger("service.lifecycle.active")
A, C = ActiveModelRow.__table__, ModelSwitchClaim.__table__
UTC = dt.timezone.utc
# A claim whose switch has not renewed it for this long belongs to a process that died mid-switch.
CLAIM_STALE = dt.timedelta(minutes=5)


class ActiveModel:
    """The model every request of this process uses."""

    def __init__(self, model: Model, locks: StripedLocks):
        self._model = model
        self.locks = locks  # the patients' locks every writer takes
        self._request = threading.local()
        self._exclusive = False

    @property
    def current(self) -> Model:
        """The model this request pinned, else the active one."""
        return getattr(self._request, "model", None) or self._model

    @contextmanager
    def pin(self) -> Iterator[Model]:
        """This request's model: the active one when the request took its locks."""
        self._request.model = self._model
        try:
            yield self._request.model
        finally:
            self._request.model = None

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Every patient lock of this process: no write runs meanwhile, so a swap falls between requests."""
        with self.locks.hold_all():
            self._exclusive = True
            try:
                yield
            finally:
                self._exclusive = False

    def swap(self, model: Model) -> None:
        """Make `model` the active one (inside `exclusive()`); the replaced one is closed."""
        if not self._exclusive:
            raise RuntimeError("the active model is swapped only inside exclusive()")
        old, self._model = self._model, model
        old.set_active(False)
        model.set_active(True)
        old.close()

    def adopt(self, name: str, version: str, load: Callable[[str, str], Model]) -> bool:
        """Follow a switch another process made (its states are rebuilt already): swap only.
        False when it is the active model already."""
        model = load(name, version)
        with self.exclusive():
            if (self._model.name, self._model.version) == (name, version):
                model.close()
                return False
            self.swap(model)
        log.info("following the recorded model switch: now serving %s:%s", name, version)
        return True

    def close(self) -> None:
        self._model.close()


# -- the record ------------------------------------------------------------------------------------

def recorded(conn: Connection) -> tuple[str, str] | None:
    row = conn.execute(select(A.c.model_name, A.c.model_version).where(A.c.id == 1)).first()
    return None if row is None else (row.model_name, row.model_version)


def record(conn: Connection, name: str, version: str, at: dt.datetime, by: str | None) -> None:
    """Inside the switch's transaction: this model is the active one from now on."""
    values = dict(model_name=name, model_version=version, switched_at=at, switched_by=by)
    if conn.execute(update(A).where(A.c.id == 1).values(**values)).rowcount == 0:
        conn.execute(A.insert().values(id=1, **values))


# -- the claim -------------------------------------------------------------------------------------

def claim(engine: Engine, target: str, by: str | None) -> str:
    """Claim the database's one model switch; its token. A 409 naming the switch that holds it."""
    token, now = str(uuid.uuid4()), dt.datetime.now(UTC)
    with engine.begin() as conn:
        # One statement decides: PostgreSQL re-checks the WHERE on the locked row, SQLite runs
        # writers one at a time, so of two concurrent claims exactly one updates the row.
        won = conn.execute(update(C).where(C.c.id == 1, or_(C.c.token.is_(None), C.c.heartbeat_at < now - CLAIM_STALE))
                           .values(token=token, target=target, claimed_by=by, claimed_at=now,
                                   heartbeat_at=now)).rowcount == 1
        if won:
            return token
        held = conn.execute(select(C).where(C.c.id == 1)).first()
    if held is None:
        raise RuntimeError("the model_switch_claim row is missing: run the migrations")
    who = f" by {held.claimed_by}" if held.claimed_by else ""
    raise Conflict(f"a model switch to {held.target} is running{who} since {held.claimed_at.isoformat()}; "
                   "GET /models/upgrade shows its progress (on the process that runs it); nothing was changed")


def renew(engine: Engine, token: str) -> None:
    """The switch is alive: its claim does not go stale."""
    with engine.begin() as conn:
        conn.execute(update(C).where(C.c.id == 1, C.c.token == token).values(heartbeat_at=dt.datetime.now(UTC)))


def release(conn: Connection, token: str) -> None:
    """Free the claim inside the transaction that records the switch; a 409 (and a rollback) when
    the claim went stale and another switch took it meanwhile."""
    if conn.execute(update(C).where(C.c.id == 1, C.c.token == token).values(token=None)).rowcount != 1:
        raise Conflict("this model switch's claim went stale and another switch took it; nothing was changed")


def abandon(engine: Engine, token: str) -> None:
    """Free the claim of a switch that failed."""
    with engine.begin() as conn:
        conn.execute(update(C).where(C.c.id == 1, C.c.token == token).values(token=None))


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
