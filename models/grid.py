"""The model's time grid: where a timestamped value falls among the hourly steps the model was
validated on, and what one variable's several values in one hour become. Pure; the service files
incoming values with these, the replay and its tests check against them.

The PhysioNet/CinC 2019 rows (Reyna et al., Crit Care Med 48(2):210-217, 2020, Methods) are
one-hour bins of the ICU stay: ICULOS k holds what was measured in [admission + (k - 1) h,
admission + k h), and "multiple heart rate measurements in an hourly time window were summarized
as the median heart rate measurement". So:

- `hour_of(ts, icu_admit)` = floor((ts - icu_admit) / 1 h) + 1. A time exactly on the hour opens
  the next hour (bins are closed at the start, open at the end): admission itself is ICULOS 1,
  admission + 1 h is ICULOS 2. A time before the admission belongs to no hour of the stay
  (`BeforeAdmission`). Times must carry a zone.
- `hour_value(values)` = the median (the mean of the middle two of an even count).
- A value is charted under a key (the source's identifier of that measurement: a FHIR
  Observation id, a lab accession and test). `current(messages)` applies, in arrival order:
  `preliminary` and `final` chart a value unless the key already holds one that is not
  preliminary (a re-sent final is a duplicate; a final replaces its preliminary result);
  `amended` (or `corrected`) replaces the value it amends, and a later amendment the earlier one,
  but a late-arriving `final` never undoes an amendment; `entered-in-error` removes the key for
  good. FHIR Observation.status names these; other statuses carry no value and are refused.
- `hourly(messages, icu_admit)` = {(ICULOS, variable): median of that hour's current values}.
"""
from __future__ import annotations

import datetime as dt
import statistics

import numpy as np
from collections.abc import Iterable
from dataclasses import dataclass

from models.contract import CLINICAL, DEMOGRAPHICS, ICULOS_INDEX, N_CLINICAL, STEP

PRELIMINARY = "preliminary"
FINAL = "final"
AMENDING = frozenset({"amended", "corrected"})
ENTERED_IN_ERROR = "entered-in-error"
STATUSES = frozenset({PRELIMINARY, FINAL, ENTERED_IN_ERROR}) | AMENDING


class BeforeAdmission(ValueError):
    """A time earlier than the ICU admission: it has no hour of the stay."""


def _aware(ts: dt.datetime, name: str) -> None:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"{name} {ts.isoformat()} has no time zone")


def hour_of(ts: dt.datetime, icu_admit: dt.datetime) -> int:
    """ICULOS of a time: the 1-based hour of the ICU stay it falls in."""
    _aware(ts, "time")
    _aware(icu_admit, "ICU admission")
    if ts < icu_admit:
        raise BeforeAdmission(f"{ts.isoformat()} is before the ICU admission at {icu_admit.isoformat()}")
    return (ts - icu_admit) // STEP + 1  # timedelta floor division: exact, no float rounding at the edges


def hour_start(iculos: int, icu_admit: dt.datetime) -> dt.datetime:
    """The first instant of hour `iculos` of the stay (where the replay stamps a file row)."""
    if iculos < 1:
        raise ValueError(f"ICULOS {iculos} is not an hour of the stay (they count from 1)")
    return icu_admit + (iculos - 1) * STEP


def hour_value(values: Iterable[float]) -> float:
    """The one value several measurements of a variable in one hour give the model: their median."""
    values = list(values)
    if not values:
        raise ValueError("no value to summarise")
    return float(statistics.median(values))


@dataclass(frozen=True)
class Charted:
    """One message about one value: `time` is when it was measured (a lab: drawn), not sent."""
    key: str
    variable: str
    time: dt.datetime
    value: float
    status: str = FINAL

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} carries no value the model uses; "
                             f"accepted: {', '.join(sorted(STATUSES))}")
        if self.variable not in CLINICAL and self.variable not in DEMOGRAPHICS:
            raise ValueError(f"{self.variable!r} is not one of the model's vital signs, labs or demographics")


class Standing:
    """The standing message of each key as messages are applied in arrival order (the rules above);
    anything with `key` and `status` applies."""

    def __init__(self):
        self.values: dict[str, object] = {}
        self.removed: set[str] = set()

    def apply(self, m) -> None:
        if m.key in self.removed:
            return
        if m.status == ENTERED_IN_ERROR:
            self.removed.add(m.key)
            self.values.pop(m.key, None)
        elif m.status in AMENDING or m.key not in self.values or self.values[m.key].status == PRELIMINARY:
            self.values[m.key] = m


def current(messages: Iterable[Charted]) -> dict[str, Charted]:
    """Each key's standing message after `messages` (in arrival order); removed keys are absent."""
    standing = Standing()
    for m in messages:
        standing.apply(m)
    return standing.values


def hourly(messages: Iterable[Charted], icu_admit: dt.datetime) -> dict[tuple[int, str], float]:
    """{(ICULOS, variable): the value the model reads for that hour} from a patient's messages."""
    by_hour: dict[tuple[int, str], list[float]] = {}
    for m in current(messages).values():
        by_hour.setdefault((hour_of(m.time, icu_admit), m.variable), []).append(m.value)
    return {k: hour_value(v) for k, v in by_hour.items()}


def from_admission(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stays' rows as the service steps them: from the ICU admission's hour 1. A file that
    starts at ICULOS s > 1 gets s - 1 empty rows before its first (no vital sign or lab, its
    demographics, ICULOS 1 .. s - 1), as the service steps the hours between the admission and the
    first value. Returns (rows, offsets, index of each original row among them)."""
    starts = offsets[:-1]
    first = np.nan_to_num(values[starts, ICULOS_INDEX], nan=1.0).astype(np.int64) if len(values) else np.zeros(0, np.int64)
    pad = np.maximum(first - 1, 0)
    lengths = np.diff(offsets) + pad
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(offsets.dtype)
    out = np.empty((int(new_offsets[-1]), values.shape[1]), values.dtype)
    kept = np.empty(len(values), np.int64)
    for i, (a, b) in enumerate(zip(starts, offsets[1:])):
        at, k = int(new_offsets[i]), int(pad[i])
        if k:
            out[at:at + k] = values[a]
            out[at:at + k, :N_CLINICAL] = np.nan
            out[at:at + k, ICULOS_INDEX] = np.arange(1, k + 1)
        out[at + k:at + k + (b - a)] = values[a:b]
        kept[a:b] = np.arange(at + k, at + k + (b - a))
    return out, new_offsets, kept
