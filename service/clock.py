"""Times posted from the future: one observation stamped years ahead made every real observation of
its patient "earlier than the last stored" (409) for good, so a time further ahead of the
service's clock than a margin is refused before anything is stored."""
from __future__ import annotations

import datetime as dt
from typing import Iterable

from service.errors import Invalid

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
