"""The service's clocks.

Times posted from the future: one observation stamped years ahead made every real observation of
its patient "earlier than the last stored" (409) for good, so a time further ahead of the wall
clock than a margin is refused before anything is stored (`refuse_future`).

The service clock (`ServiceClock`, setting SEPSIS_CLOCK) stamps every action: acknowledge,
snooze, resolve, outcome, correction, supersession. `wall` (the default) is the machine's clock,
right for a live feed. `simulated` is the feed's own time, the latest observation timestamp
stored: a replay faster than real time then snoozes, resolves and acknowledges on the same clock
its observations carry, so a 30-minute snooze holds for 30 minutes of data. In both modes an
action on an alarm is never stamped before the alarm was raised (`stamp`).
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

from sqlalchemy import func, select

from service.errors import Invalid
from service.storage.tables import Patient

UTC = dt.timezone.utc


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def refuse_future(times: Iterable[tuple[str, dt.datetime | None]], margin: dt.timedelta,
                  clock: dt.datetime | None = None) -> None:
    """422 naming every (field, time) that lies more than `margin` after the service's clock."""
    clock = clock or now()
    try:
        limit = clock + margin
    except OverflowError:  # a margin past year 9999: nothing is too far ahead
        return
    errors = [{"field": name, "reason": f"{ts.astimezone(UTC).isoformat()} is "
                                        f"{(ts - clock).total_seconds() / 3600:.2f} h ahead of the service's clock "
                                        f"({clock.isoformat(timespec='seconds')}); at most "
                                        f"{margin.total_seconds() / 3600:g} h ahead is accepted (SEPSIS_FUTURE_MARGIN_HOURS)"}
              for name, ts in times if ts is not None and ts > limit]
    if errors:
        shown = errors[:20]
        more = f" (and {len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
        raise Invalid("invalid request: " + "; ".join(f"{e['field']}: {e['reason']}" for e in shown[:3])
                      + ("; ..." if len(shown) > 3 else "") + more + ". Nothing was stored.", errors=shown)


CLOCK_MODES = ("wall", "simulated")


class ServiceClock:
    """`now(conn)` is the time an action is stamped with; `stamp(conn, not_before)` never earlier
    than `not_before` (the alarm's raise time)."""

    def __init__(self, mode: str = "wall"):
        if mode not in CLOCK_MODES:
            raise ValueError(f"clock must be one of {', '.join(CLOCK_MODES)} (SEPSIS_CLOCK), got {mode!r}")
        self.mode = mode

    @property
    def simulated(self) -> bool:
        return self.mode == "simulated"

    def now(self, conn=None) -> dt.datetime:
        """Wall: the machine's time. Simulated: the latest observation time stored (read through
        `conn`, a Connection or Session, so every worker process agrees on it), or the machine's
        time while nothing is stored."""
        if not self.simulated:
            return now()
        if conn is None:
            raise ValueError("the simulated clock reads the latest observation time: pass a connection")
        return feed_time(conn) or now()

    def stamp(self, conn=None, not_before: dt.datetime | None = None) -> dt.datetime:
        t = self.now(conn)
        return t if not_before is None or t >= not_before else not_before


def feed_time(conn) -> dt.datetime | None:
    """The latest observation timestamp stored (patients.last_ts is each stay's latest)."""
    latest = conn.execute(select(func.max(Patient.last_ts))).scalar()
    if latest is None:
        return None
    if isinstance(latest, str):  # SQLite's aggregate bypasses the column type
        latest = dt.datetime.fromisoformat(latest)
    return latest.replace(tzinfo=UTC) if latest.tzinfo is None else latest.astimezone(UTC)
