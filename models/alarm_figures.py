"""The one definition of every alarm figure a ward, the model card and the operating-points table show.

Pure functions on stays: each stay is its hours monitored, its alarm events (`models.alarm_policy`:
raised, re-alert or escalation, each with when it stopped being open) and its outcome. Times are
hours on any clock shared by a stay's alarms and its onset; `stay_from_timestamps` turns the
service's datetimes into that. The offline table builds stays from hourly risks
(`training.sepsis.operating_points`); the service is to build them from what it stored
(`stay_from_timestamps`) and call the same `figures`.

A patient is monitored from their first measured value: the first hour with a vital sign or a lab
(`measured`; an hour with only the demographics or nothing is not). Before it the service raises no
alarm (a risk from age, sex and unit alone is not evidence a nurse can act on) and no figure counts
those hours: offline, each stay's alarms and hours start at `first_measured` (its index among the
stay's rows); live, at the start of the first measured hour. The challenge's utility is not an
alarm figure: it scores every row, as the challenge does.

Definitions:

- window: the challenge's [onset - 12 h, onset + 3 h], onset the clinical onset (the first
  SepsisLabel hour + 6 h offline; the recorded onset time in the service).
- alarm: one event the ward is sent (a raised alarm, a re-alert, an escalation). With no ward
  action, no tiers and no lockout, one alarm is one episode: a run of steps with risk >= threshold.
- true alarm: raised inside the window of a septic stay; false: any other alarm of a stay whose
  outcome is known; alarms of stays without an outcome are left out of the shares.
- caught in time: a septic stay with an alarm raised inside its window, or raised before it and
  still open (not acknowledged, dismissed, resolved or escalated) when the window begins.
- lead time: onset minus the raise time of the alarm that caught the stay (the earliest such).
- caught before onset (second line, the older figure): a septic stay with any alarm raised at or
  before onset; its lead time is onset minus the stay's first alarm.
- PPV per stay: share of stays with any alarm that are septic. PPV per alarm: true / (true + false).
- alarms per patient-day: alarms / (hours monitored / 24).
- red share: share of patient-hours during which the stay had an open alarm.
"""
from __future__ import annotations

import datetime as dt
import math
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from models.alarm_policy import KINDS, AlarmEvent
from models.contract import CLINICAL, N_CLINICAL

BEFORE_HOURS = 12.0
AFTER_HOURS = 3.0

DEFINITIONS = {
    "monitored": "a stay is monitored from its first measured hour (the first with a vital sign or lab): no alarm "
                 "before it, and none of its earlier hours counts in any figure below (the utility scores every row)",
    "window": f"[onset - {BEFORE_HOURS:g} h, onset + {AFTER_HOURS:g} h], the challenge's; onset = first SepsisLabel hour + 6 h",
    "alarm": "one event the ward is sent: raised, re-alert or escalation (models.alarm_policy); with no ward "
             "action, no tiers and no lockout (the plain figures), one alarm per run of consecutive hours with "
             "risk >= threshold",
    "caught_in_window": "share of septic stays with an alarm raised inside the window, or raised before it and "
                        "still open (not acknowledged, resolved or escalated) when it begins",
    "median_lead_time_in_window_hours": "onset minus the raise time of the earliest alarm that caught the stay in "
                                        "the window, median over caught septic stays",
    "sensitivity": "second line, the older figure: share of septic stays with any alarm at or before onset",
    "median_lead_time_hours": "second line: onset minus the stay's first alarm, median over septic stays alarmed "
                              "at or before onset",
    "median_lead_time_last_alarm_hours": "second line: onset minus the latest alarm raised at or before onset, "
                                         "median over the same stays",
    "ppv": "per stay: share of stays with any alarm that are septic",
    "ppv_alarms": "per alarm: alarms raised inside a septic stay's window / all alarms of stays with an outcome",
    "alarms_per_patient_day": "alarms / (patient-hours monitored / 24)",
    "red_share": "share of patient-hours monitored with an open alarm (raised, not yet acknowledged, resolved or "
                 "escalated)",
}


# ---------------------------------------------------------------- monitored from the first measured value

def measured(values: Mapping[str, float | None]) -> bool:
    """Whether an hour's values (variable -> value) hold a vital sign or a lab: demographics alone
    (age, sex, unit, hospital admission time) or nothing do not make a patient monitored."""
    return any(name in CLINICAL and v is not None and not (isinstance(v, float) and math.isnan(v))
               for name, v in values.items())


def first_measured(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[stays] int64: each stay's index (among its own rows) of its first row with a vital sign or
    lab measured (the contract's first `N_CLINICAL` columns); the stay's length when it has none
    (never monitored: no hour counts). `values` are the stays' rows [hours, 40] concatenated."""
    offsets = np.asarray(offsets, dtype=np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    rows = ~np.isnan(np.asarray(values)[:, :N_CLINICAL]).all(axis=1)
    hit = np.append(np.flatnonzero(rows), len(rows))  # the measured rows, then one past the last row
    # the first measured row at or after each stay's first row; past its end: none in the stay
    first = hit[np.searchsorted(hit, starts)]
    return np.minimum(first, ends) - starts


@dataclass(frozen=True)
class Stay:
    """One stay's alarms and outcome. `septic` None: outcome not known yet; `onset` only for septic
    stays; `start` is when monitoring began on the stay's clock and `hours` how long it lasted."""
    hours: float
    alarms: tuple[AlarmEvent, ...] = ()
    septic: bool | None = False
    onset: float | None = None
    start: float = 0.0

    def __post_init__(self):
        if self.septic and self.onset is None:
            raise ValueError("a septic stay needs its onset")
        if self.hours < 0:
            raise ValueError(f"hours: {self.hours} is negative")


def in_window(t: float, onset: float) -> bool:
    return onset - BEFORE_HOURS <= t <= onset + AFTER_HOURS


def verdict(stay: Stay, alarm: AlarmEvent) -> str:
    """"true", "false" or "unknown" (no outcome yet)."""
    if stay.septic is None:
        return "unknown"
    return "true" if stay.septic and in_window(alarm.time, stay.onset) else "false"


def catching_alarm(stay: Stay) -> AlarmEvent | None:
    """The earliest alarm that catches a septic stay in time (see the module docstring), or None."""
    if not stay.septic:
        return None
    begin = stay.onset - BEFORE_HOURS
    for a in stay.alarms:  # alarms come in time order
        if in_window(a.time, stay.onset):
            return a
        if a.time < begin and (a.closed_at is None or a.closed_at > begin):
            return a
    return None


def first_alarm_before_onset(stay: Stay) -> AlarmEvent | None:
    if not stay.septic or not stay.alarms or stay.alarms[0].time > stay.onset:
        return None
    return stay.alarms[0]


def last_alarm_before_onset(stay: Stay) -> AlarmEvent | None:
    """The latest alarm raised at or before onset: an alarm that fired on admission and went quiet
    for days inflates the first alarm's lead time; this one asks how recent the last warning was."""
    if not stay.septic:
        return None
    before = [a for a in stay.alarms if a.time <= stay.onset]
    return before[-1] if before else None


def open_hours(stay: Stay) -> float:
    """Hours of the stay during which an alarm was open (an escalation closes what it replaces, so
    open spans do not overlap)."""
    end = stay.start + stay.hours
    return sum(max(0.0, min(a.closed_at if a.closed_at is not None else end, end) - max(a.time, stay.start))
               for a in stay.alarms)


def _share(num: int | float, den: int | float) -> float | None:
    return num / den if den else None


def _median(xs: Sequence[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


@dataclass(frozen=True)
class Figures:
    stays: int
    septic: int
    patient_days: float
    alarms: int
    alarms_by_kind: dict[str, int] = field(default_factory=dict)
    alarms_per_patient_day: float | None = None
    true_alarms: int = 0
    false_alarms: int = 0
    ppv_alarms: float | None = None
    ppv: float | None = None                    # per stay
    caught_in_window: float | None = None
    septic_caught_in_window: int = 0
    median_lead_time_in_window_hours: float | None = None
    sensitivity: float | None = None            # any alarm at or before onset
    median_lead_time_hours: float | None = None
    median_lead_time_last_alarm_hours: float | None = None
    non_septic_alarmed: float | None = None
    red_share: float | None = None

    def as_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


def figures(stays: Iterable[Stay]) -> Figures:
    """Every figure of `DEFINITIONS` over `stays`."""
    stays = list(stays)
    known = [s for s in stays if s.septic is not None]
    septic = [s for s in known if s.septic]
    hours = sum(s.hours for s in stays)
    n_alarms = sum(len(s.alarms) for s in stays)
    verdicts = [verdict(s, a) for s in known for a in s.alarms]
    true, false = verdicts.count("true"), verdicts.count("false")
    alarmed = [s for s in known if s.alarms]
    caught = [(s, catching_alarm(s)) for s in septic]
    caught = [(s, a) for s, a in caught if a is not None]
    before = [(s, first_alarm_before_onset(s)) for s in septic]
    before = [(s, a) for s, a in before if a is not None]
    by_kind = {k: 0 for k in KINDS}
    for s in stays:
        for a in s.alarms:
            by_kind[a.kind] = by_kind.get(a.kind, 0) + 1
    non_septic = [s for s in known if not s.septic]
    return Figures(
        stays=len(stays), septic=len(septic), patient_days=hours / 24.0, alarms=n_alarms,
        alarms_by_kind=by_kind,
        alarms_per_patient_day=_share(n_alarms * 24.0, hours),
        true_alarms=true, false_alarms=false, ppv_alarms=_share(true, true + false),
        ppv=_share(sum(bool(s.septic) for s in alarmed), len(alarmed)),
        caught_in_window=_share(len(caught), len(septic)), septic_caught_in_window=len(caught),
        median_lead_time_in_window_hours=_median([s.onset - a.time for s, a in caught]),
        sensitivity=_share(len(before), len(septic)),
        median_lead_time_hours=_median([s.onset - a.time for s, a in before]),
        median_lead_time_last_alarm_hours=_median([s.onset - last_alarm_before_onset(s).time for s, _ in before]),
        non_septic_alarmed=_share(sum(bool(s.alarms) for s in non_septic), len(non_septic)),
        red_share=_share(sum(open_hours(s) for s in stays), hours),
    )


# ---------------------------------------------------------------- the service's timestamps

def hours_between(t: dt.datetime, epoch: dt.datetime) -> float:
    return (t - epoch).total_seconds() / 3600.0


@dataclass(frozen=True)
class TimedAlarm:
    """An alarm as the service stores it: when it was raised, its kind, and when it stopped being
    open (acknowledged, dismissed, resolved, superseded; None while still open)."""
    raised_at: dt.datetime
    kind: str = "raised"
    closed_at: dt.datetime | None = None
    risk: float = 0.0


def stay_from_timestamps(first_seen: dt.datetime, hours_monitored: float, alarms: Iterable[TimedAlarm],
                         outcome: str | None, onset_time: dt.datetime | None) -> Stay:
    """A service patient as a `Stay`: times become hours since `first_seen`; outcome "sepsis",
    "no_sepsis" or None (not known). A "sepsis" outcome without an onset time counts as unknown."""
    h = lambda t: hours_between(t, first_seen)  # noqa: E731
    events = tuple(AlarmEvent(time=h(a.raised_at), kind=a.kind, risk=a.risk,
                              closed_at=None if a.closed_at is None else h(a.closed_at))
                   for a in sorted(alarms, key=lambda a: a.raised_at))
    if outcome == "sepsis" and onset_time is not None:
        return Stay(hours=hours_monitored, alarms=events, septic=True, onset=h(onset_time))
    if outcome == "no_sepsis":
        return Stay(hours=hours_monitored, alarms=events, septic=False)
    return Stay(hours=hours_monitored, alarms=events, septic=None)


def verdict_at(raised_at: dt.datetime, outcome: str | None, onset: dt.datetime | None) -> str:
    """The verdict of one stored alarm: `verdict` on datetimes."""
    if outcome is None or (outcome == "sepsis" and onset is None):
        return "unknown"
    return "true" if outcome == "sepsis" and in_window(hours_between(raised_at, onset), 0.0) else "false"
