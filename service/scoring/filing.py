"""Posted values into the model's hourly grid. Pure: what a posted observation's values are as
messages, whether each is new, a duplicate or a conflict with what is stored, and which hourly
rows the messages give (models/grid.py). service/scoring/ingest.py does the reading and writing.

A value is known by its key: the sender's `source_id` and the variable when the sender gave one (a
FHIR Observation id), else the variable and its timestamp. Statuses follow `models.grid.current`:
- final or preliminary for a key that holds no final value: new (a final replaces its preliminary);
  the same value again: a duplicate (nothing changes); another value: a conflict (409) that says
  to send it as amended, since a silent replacement of a charted value is not a hospital's intent;
  after an amendment of the key: superseded (a duplicate: the amendment stands, whatever order
  the two arrive in);
- amended or corrected: replaces the key's value (a duplicate when it is the standing message);
- entered-in-error: removes the key for good (a duplicate once removed); a key removed cannot come
  back (409: a new value needs a new source id).
An observation posted with no values still marks its hour as part of the stay (a `tick`).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Sequence

from models.grid import AMENDING, ENTERED_IN_ERROR, PRELIMINARY, Standing, hour_value

NEW, DUPLICATE = "new", "duplicate"


@dataclass(frozen=True)
class Value:
    """One value of a posted observation, filed in an hour of the stay."""
    index: int                 # the posted observation's index in the request
    key: str
    variable: str | None       # None: an empty observation's tick
    value: float | None
    ts: dt.datetime
    hour: int
    status: str
    source_id: str | None


def value_key(variable: str | None, ts: dt.datetime, source_id: str | None) -> str:
    """A value's identity: the sender's id of the message and the variable, else the variable and
    the instant (UTC) it was measured."""
    name = variable or ""
    if source_id:
        return f"{source_id}#{name}"
    return f"{name}@{ts.astimezone(dt.timezone.utc).isoformat()}"


def values_of(index: int, ts: dt.datetime, vitals: dict[str, float], status: str, source_id: str | None,
              hour: int) -> list[Value]:
    """A posted observation's values (one per variable; a tick when it carried none)."""
    if not vitals:
        return [Value(index, value_key(None, ts, source_id), None, None, ts, hour, status, source_id)]
    return [Value(index, value_key(name, ts, source_id), name, float(v), ts, hour, status, source_id)
            for name, v in vitals.items()]


@dataclass(frozen=True)
class Stored:
    """A stored message, as classification and filing need it (arrival order = id order)."""
    id: int
    key: str
    variable: str | None
    value: float | None
    ts: dt.datetime
    hour: int
    status: str


def classify(stored: Sequence[Stored], incoming: Sequence[Value]) -> list[str]:
    """NEW, DUPLICATE or a conflict's reason for each incoming value, in order, against the stored
    messages of the same keys (in arrival order) and the incoming values before it."""
    standing = Standing()
    for m in stored:
        standing.apply(m)
    out = []
    for v in incoming:
        verdict = _verdict(standing.values.get(v.key), v.key in standing.removed, v)
        out.append(verdict)
        if verdict == NEW:
            standing.apply(v)
    return out


def _same(a, b) -> bool:
    return a.value == b.value and a.ts == b.ts and a.variable == b.variable


def _verdict(standing, removed: bool, v: Value) -> str:
    what = f"{v.variable or 'the observation'} at {v.ts.isoformat()}" + (f" (source_id {v.source_id})" if v.source_id else "")
    if v.status == ENTERED_IN_ERROR:
        return DUPLICATE if removed else NEW
    if removed:
        return (f"{what} was entered in error and removed; a removed value cannot come back: send the new value "
                "under a new source_id (or another time)")
    if v.variable is None:
        return DUPLICATE if standing is not None else NEW
    if standing is None:
        return NEW
    if v.status in AMENDING:
        return DUPLICATE if standing.status in AMENDING and _same(standing, v) else NEW
    if standing.status in AMENDING:
        return DUPLICATE  # the result it amends, arriving after its amendment: superseded, nothing changes
    if _same(standing, v) and (standing.status == v.status or v.status == PRELIMINARY):
        return DUPLICATE
    if standing.status == PRELIMINARY:
        return NEW  # a result replaces its preliminary report
    return (f"{what} already holds {standing.value:g} ({standing.status}); a charted value is replaced only by a "
            "message with status amended or corrected")


@dataclass(frozen=True)
class Hour:
    """One hourly row of the stay as the model steps it."""
    iculos: int
    values: dict[str, float]
    elapsed: float
    last_at: dt.datetime | None = None  # the latest time measured of the hour's values (None: an empty hour)


def hours(messages: Iterable[Stored | Value], first: int, last: int) -> list[Hour]:
    """The rows `first`..`last` (ICULOS) from the messages (arrival order) that concern them:
    each variable's current values of the hour combined by their median (models/grid.py); an hour
    with none is an empty row, stepped as the training data's empty rows are. The stay's first
    hour is stepped with 0 elapsed hours, every later one with 1 (one row per hour since
    admission, as `models.contract.elapsed_hours` reads the files' ICULOS)."""
    by_hour: dict[int, dict[str, list[float]]] = {}
    last_at: dict[int, dt.datetime] = {}
    standing = Standing()
    for m in messages:
        if m.variable is not None:
            standing.apply(m)
        elif m.hour not in last_at or m.ts > last_at[m.hour]:
            last_at[m.hour] = m.ts  # an empty observation's time counts as the hour's latest
    for m in standing.values.values():
        by_hour.setdefault(m.hour, {}).setdefault(m.variable, []).append(m.value)
        if m.hour not in last_at or m.ts > last_at[m.hour]:
            last_at[m.hour] = m.ts
    return [Hour(h, {name: hour_value(vals) for name, vals in sorted(by_hour.get(h, {}).items())},
                 0.0 if h == 1 else 1.0, last_at.get(h)) for h in range(first, last + 1)]
