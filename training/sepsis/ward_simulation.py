"""A ward simulated offline: each stay's hourly risks through the alarm policy
(`models.alarm_policy`, the code the service is to run), a scripted ward acting on the alarms, and the figures
of `models.alarm_figures` over the result.

Hour t of a stay is time t; its onset is the first SepsisLabel hour + 6 (the challenge's clinical
onset). A stay is monitored from its first measured hour (`models.alarm_figures.first_measured`,
passed as `starts`, one index per stay): the policy sees no earlier hour and they count in no
figure. Ward scenarios:

- "none": nobody acts; an alarm stays open until the risk falls below the threshold, sent again
  each lockout while nobody answers (one alarm per episode with `SILENT_FOR_GOOD`).
- "acknowledge_all": every alarm acknowledged the hour it is raised.
- "dismiss_early": each stay's first alarm dismissed as a false alarm the hour it is raised when it
  came 12 h or more before onset (on a stay that never becomes septic, always); every later alarm
  is left open. The scenario of the probe that found dismissed alarms silent for good.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from models.alarm_figures import BEFORE_HOURS, AFTER_HOURS, Figures, Stay, figures, in_window
from models.alarm_policy import ACKNOWLEDGE, DISMISS, AlarmEvent, AlarmPolicy, simulate_ward

SCENARIOS = ("none", "acknowledge_all", "dismiss_early")
ONSET_AFTER_FIRST_LABEL = 6.0


def onset_hour(labels: np.ndarray) -> float | None:
    """The clinical onset (first SepsisLabel hour + 6), None for a stay that never turns septic."""
    pos = np.flatnonzero(np.asarray(labels) == 1)
    return float(pos[0]) + ONSET_AFTER_FIRST_LABEL if len(pos) else None


def _ward(scenario: str, onset: float | None):
    if scenario == "none":
        return lambda event: None
    if scenario == "acknowledge_all":
        return lambda event: ACKNOWLEDGE
    if scenario == "dismiss_early":
        seen = []

        def ward(event: AlarmEvent):
            first = not seen
            seen.append(event)
            early = onset is None or event.time <= onset - BEFORE_HOURS
            return DISMISS if first and early else None
        return ward
    raise ValueError(f"scenario: {scenario!r} is not one of {', '.join(SCENARIOS)}")


def hourly_stay(labels: np.ndarray, risks: np.ndarray, policy: AlarmPolicy, scenario: str = "none",
                start: int = 0) -> Stay:
    """One stay's alarms under `policy` with the scripted ward `scenario`, monitored from row
    `start` (its first measured hour): the policy starts quiet there, the hours before it are not
    the stay's. The onset stays the labels' (an onset before monitoring began is still the stay's)."""
    risks = np.asarray(risks, dtype=np.float64)
    start = int(start)
    if not 0 <= start <= len(risks):
        raise ValueError(f"start: {start} is not a row of a stay of {len(risks)} hours")
    onset = onset_hour(labels)
    watched = risks[start:]
    if len(watched) and watched.max() >= policy.threshold:
        events, _ = simulate_ward(policy, np.arange(start, len(risks), dtype=np.float64), watched,
                                  _ward(scenario, onset))
    else:  # never at the threshold: no alarm whatever the policy (the common case, skipped for speed)
        events = []
    return Stay(hours=float(len(watched)), alarms=tuple(events), septic=onset is not None, onset=onset,
                start=float(start))


def _starts(starts: Sequence[int] | None, n: int) -> Sequence[int]:
    if starts is None:
        return [0] * n
    if len(starts) != n:
        raise ValueError(f"{len(starts)} starts for {n} stays")
    return starts


def ward_stays(labels: Sequence[np.ndarray], risks: Sequence[np.ndarray], policy: AlarmPolicy,
               scenario: str = "none", starts: Sequence[int] | None = None) -> list[Stay]:
    """Every stay's alarms (`hourly_stay`); `starts`: each stay's first measured row
    (`models.alarm_figures.first_measured`), None: every stay monitored from its first row."""
    return [hourly_stay(lab, r, policy, scenario, s)
            for lab, r, s in zip(labels, risks, _starts(starts, len(labels)))]


def ward_figures(labels: Sequence[np.ndarray], risks: Sequence[np.ndarray], policy: AlarmPolicy,
                 scenario: str = "none", starts: Sequence[int] | None = None) -> Figures:
    """`models.alarm_figures.figures` of the simulated ward: the one way offline code gets them."""
    return figures(ward_stays(labels, risks, policy, scenario, starts))


@dataclass(frozen=True)
class DismissedEarly:
    """The probe's question on the "dismiss_early" scenario: of the septic stays whose first alarm
    was dismissed 12 h or more before onset and whose risk then reached `rise` x the dismissed risk
    inside the window, how many got a new alarm (any kind) raised inside the window; and how many
    had one at least open in it (raised after the dismissal, still open when the window began)."""
    septic_stays: int
    dismissed_early: int
    rose: int
    new_alarm_in_window: int
    alarm_open_in_window: int

    @property
    def share_new_alarm(self) -> float | None:
        return self.new_alarm_in_window / self.rose if self.rose else None

    @property
    def share_open(self) -> float | None:
        return self.alarm_open_in_window / self.rose if self.rose else None

    def as_dict(self) -> dict:
        return {**self.__dict__, "share_new_alarm": self.share_new_alarm, "share_open": self.share_open}


def dismissed_early(labels: Sequence[np.ndarray], risks: Sequence[np.ndarray], policy: AlarmPolicy,
                    rise: float = 2.0, scenario: str = "dismiss_early",
                    starts: Sequence[int] | None = None) -> DismissedEarly:
    n_septic = n_dismissed = n_rose = n_new = n_open = 0
    for lab, r, start in zip(labels, risks, _starts(starts, len(labels))):
        stay = hourly_stay(lab, r, policy, scenario, start)
        if not stay.septic:
            continue
        n_septic += 1
        if (not stay.alarms or stay.alarms[0].closed_by not in (DISMISS, ACKNOWLEDGE)
                or stay.alarms[0].time > stay.onset - BEFORE_HOURS):
            continue
        n_dismissed += 1
        first = stay.alarms[0]
        lo = max(int(start), int(np.ceil(stay.onset - BEFORE_HOURS)))
        hi = min(len(r) - 1, int(np.floor(stay.onset + AFTER_HOURS)))
        if hi < lo or float(np.max(np.asarray(r)[lo:hi + 1])) < rise * first.risk:
            continue
        n_rose += 1
        later = stay.alarms[1:]
        new = any(in_window(a.time, stay.onset) for a in later)
        begin = stay.onset - BEFORE_HOURS
        held = any(a.time < begin and (a.closed_at is None or a.closed_at > begin) for a in later)
        n_new += new
        n_open += new or held
    return DismissedEarly(n_septic, n_dismissed, n_rose, n_new, n_open)


# ---------------------------------------------------------------- choosing the policy by measurement

RISE_FACTORS = (None, 1.5, 2.0, 3.0)
LOCKOUTS = (6.0, 12.0, 18.0, 24.0)
IN_WINDOW = 0.8   # the default point catches at least this share of septic stays in the window...
BAR = 0.9         # ...and re-alerts at least this share of the dismissed stays whose risk doubled


def policy_row(labels: Sequence[np.ndarray], risks: Sequence[np.ndarray], policy: AlarmPolicy,
               starts: Sequence[int] | None = None) -> dict:
    """A policy's figures under both scenarios that act on alarms, and the probe's question under each."""
    row = {"threshold": policy.threshold, "rise_factor": policy.rise_factor,
           "lockout_hours": policy.lockout_hours, "tiers": list(policy.tiers)}
    for scenario in ("acknowledge_all", "dismiss_early"):
        row[scenario] = {**ward_figures(labels, risks, policy, scenario, starts).as_dict(),
                         "dismissed_early": dismissed_early(labels, risks, policy, scenario=scenario,
                                                            starts=starts).as_dict()}
    return row


def caught_with_policy(labels, risks, policy: AlarmPolicy, starts: Sequence[int] | None = None) -> float:
    return ward_figures(labels, risks, policy, "acknowledge_all", starts).caught_in_window or 0.0


def highest_threshold_catching(labels: Sequence[np.ndarray], risks: Sequence[np.ndarray], levels: np.ndarray,
                               settings: dict, target: float = IN_WINDOW,
                               starts: Sequence[int] | None = None) -> float | None:
    """The highest of `levels` (ascending) at which the policy `settings`, with every alarm
    acknowledged at once, still catches `target` of the septic stays in the window. Catching falls
    as the threshold rises (not strictly: lockouts shift with the alarms), so this is a boundary
    found by bisection and checked where it is returned; None when even the lowest level misses."""
    def ok(k: int) -> bool:
        return caught_with_policy(labels, risks, AlarmPolicy(float(levels[k]), **settings), starts) >= target

    if not len(levels) or not ok(0):
        return None
    lo, hi = 0, len(levels) - 1   # ok(lo) holds
    if ok(hi):
        return float(levels[hi])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return float(levels[lo])


def sweep(labels: Sequence[np.ndarray], risks: Sequence[np.ndarray], levels: np.ndarray,
          rise_factors=RISE_FACTORS, lockouts=LOCKOUTS, target: float = IN_WINDOW,
          starts: Sequence[int] | None = None) -> list[dict]:
    """For each (rise factor, lockout): the highest threshold of `levels` catching `target` of the
    septic stays in the window with every alarm acknowledged, and the policy's figures there."""
    rows = []
    for rise in rise_factors:
        for lockout in lockouts:
            settings = {"rise_factor": rise, "lockout_hours": lockout}
            t = highest_threshold_catching(labels, risks, levels, settings, target, starts)
            if t is not None:
                rows.append(policy_row(labels, risks, AlarmPolicy(t, **settings), starts))
    return rows


def choose(rows: Sequence[dict], bar: float = BAR) -> dict | None:
    """The fewest alarms per patient-day (every alarm acknowledged) among the rows whose re-alert
    share of dismissed-early stays that doubled (same scenario) reaches `bar`."""
    good = [r for r in rows if (r["acknowledge_all"]["dismissed_early"]["share_new_alarm"] or 0.0) >= bar]
    return min(good, key=lambda r: r["acknowledge_all"]["alarms_per_patient_day"], default=None)
