"""The re-alert policy: which alarms a ward is sent, given a stay's risks and what the ward did.

One pure function, `alarm_events(policy, steps, actions)`, replays a stay: its (time, risk) steps in
time order and the ward's actions (acknowledge or dismiss at a time) -> every alarm event with its
kind. The offline evaluation (`training.sepsis.ward_simulation`) runs it, and the service is to run
the same code; `simulate_ward` drives the same state machine with a scripted ward instead of
recorded actions.

States of a stay and what moves it (times in hours on one clock; risks in [0, 1]):

- quiet -> open: a risk >= threshold raises an alarm ("raised").
- open -> quiet: a risk below the threshold resolves it (the episode is over; nobody was told twice).
- open -> open: a risk reaching a higher tier escalates it ("escalation: next tier"); an alarm nobody
  answered for `lockout_hours`, the risk still >= threshold, is sent again ("re-alert: lockout
  ended"). Either is a new event and closes the one it replaces ("escalated").
- open -> acknowledged: the ward acknowledges or dismisses it. The acknowledged risk is the latest
  risk at or before the action (what the ward saw); an action with no open alarm changes nothing.
- acknowledged -> open, each a new event:
  "escalation: next tier" when a risk reaches a tier above the acknowledged risk's tier;
  "re-alert: risk doubled" when a risk >= threshold reaches `rise_factor` x the acknowledged risk;
  "re-alert: lockout ended" at the first step at or after `lockout_hours` past the action whose risk
  is still >= threshold.
- acknowledged -> quiet: the lockout ends with the risk below the threshold (the next rise is a new
  "raised").

So no alarm is repeated within `lockout_hours` of the last one sent or acknowledged, and none stays
quiet longer while the risk is above the threshold. Acknowledgement is never forever unless the
policy says so (`lockout_hours=None`, no rise factor and no tiers: the behaviour this replaced, kept
as `SILENT_FOR_GOOD` for comparison; with nobody acting it sends one alarm per episode).
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

RAISED = "raised"
RISK_DOUBLED = "re-alert: risk doubled"
LOCKOUT_ENDED = "re-alert: lockout ended"
NEXT_TIER = "escalation: next tier"
KINDS = (RAISED, RISK_DOUBLED, LOCKOUT_ENDED, NEXT_TIER)

ACKNOWLEDGE = "acknowledge"
DISMISS = "dismiss"
ACTIONS = (ACKNOWLEDGE, DISMISS)

# why an event stopped being open
RESOLVED, ESCALATED = "resolved", "escalated"


@dataclass(frozen=True)
class AlarmPolicy:
    """A unit's alarm policy. `tiers` are risk levels above the threshold (e.g. the thresholds of
    stricter operating points); crossing the next one escalates, NEWS2-style. `rise_factor` None
    turns the relative re-alert off; `lockout_hours` None makes an acknowledgement last the stay."""
    threshold: float
    rise_factor: float | None = 2.0
    lockout_hours: float | None = 12.0
    tiers: tuple[float, ...] = ()

    def __post_init__(self):
        # above 1 is allowed: a threshold that never alarms (what "no threshold beats silence" chooses)
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and self.threshold >= 0.0):
            raise ValueError(f"threshold: {self.threshold!r} is not a risk level >= 0")
        if self.rise_factor is not None and not (math.isfinite(self.rise_factor) and self.rise_factor > 1.0):
            raise ValueError(f"rise_factor: {self.rise_factor!r} must be above 1 (or None for no relative re-alert)")
        if self.lockout_hours is not None and not (math.isfinite(self.lockout_hours) and self.lockout_hours > 0):
            raise ValueError(f"lockout_hours: {self.lockout_hours!r} must be a positive number of hours (or None)")
        tiers = tuple(float(t) for t in self.tiers)
        if any(not (self.threshold < t <= 1.0) for t in tiers) or list(tiers) != sorted(set(tiers)):
            raise ValueError(f"tiers: {list(tiers)} must rise strictly, each above the threshold "
                             f"({self.threshold}) and at most 1")
        object.__setattr__(self, "tiers", tiers)

    def tier(self, risk: float) -> int:
        """0 below the first tier, k at or above the k-th."""
        return bisect_right(self.tiers, risk)

    def describe(self) -> str:
        parts = [f"alarm at risk >= {self.threshold:.4g}"]
        if self.rise_factor is not None:
            parts.append(f"an acknowledged alarm re-alerts when the risk reaches {self.rise_factor:g}x the acknowledged risk")
        if self.lockout_hours is not None:
            parts.append(f"an acknowledged alarm re-alerts when the risk is still above the threshold "
                         f"{self.lockout_hours:g} h after the acknowledgement")
        if self.tiers:
            parts.append("escalates at " + ", ".join(f"{t:.3g}" for t in self.tiers))
        if len(parts) == 1:
            parts.append("an acknowledgement lasts the stay")
        return "; ".join(parts)


SILENT_FOR_GOOD = dict(rise_factor=None, lockout_hours=None, tiers=())


@dataclass(frozen=True)
class AlarmEvent:
    """One alarm the ward is sent. `closed_at` is when it stopped being open (None: still open at
    the last step), `closed_by` why: "acknowledge", "dismiss", "resolved" or "escalated"."""
    time: float
    kind: str
    risk: float
    tier: int = 0
    closed_at: float | None = None
    closed_by: str | None = None


@dataclass(frozen=True)
class Action:
    time: float
    kind: str  # ACKNOWLEDGE or DISMISS

    def __post_init__(self):
        if self.kind not in ACTIONS:
            raise ValueError(f"action kind: {self.kind!r} is not one of {', '.join(ACTIONS)}")
        if not math.isfinite(self.time):
            raise ValueError(f"action time: {self.time!r} is not a finite time")


@dataclass
class _Machine:
    """The state machine behind `alarm_events` and `simulate_ward`."""
    policy: AlarmPolicy
    events: list[AlarmEvent] = field(default_factory=list)
    state: str = "quiet"            # quiet, open, acknowledged
    ref_risk: float = 0.0           # the acknowledged risk
    ref_tier: int = 0
    acked_at: float = 0.0
    last_risk: float | None = None
    last_time: float | None = None

    def _close(self, t: float, why: str) -> None:
        self.events[-1] = replace(self.events[-1], closed_at=t, closed_by=why)

    def _raise(self, t: float, risk: float, kind: str) -> AlarmEvent:
        if self.state == "open":
            self._close(t, ESCALATED)
        event = AlarmEvent(time=t, kind=kind, risk=risk, tier=self.policy.tier(risk))
        self.events.append(event)
        self.state = "open"
        return event

    def observe(self, t: float, risk: float) -> AlarmEvent | None:
        p = self.policy
        if self.last_time is not None and t < self.last_time:
            raise ValueError(f"steps must come in time order: {t} after {self.last_time}")
        if not (math.isfinite(risk) and 0.0 <= risk <= 1.0):
            raise ValueError(f"risk at {t}: {risk!r} is not a risk in [0, 1]")
        self.last_time, self.last_risk = t, risk
        above = risk >= p.threshold
        if self.state == "quiet":
            return self._raise(t, risk, RAISED) if above else None
        if self.state == "open":
            if not above:
                self._close(t, RESOLVED)
                self.state = "quiet"
                return None
            if p.tier(risk) > self.events[-1].tier:
                return self._raise(t, risk, NEXT_TIER)
            if p.lockout_hours is not None and t >= self.events[-1].time + p.lockout_hours:
                return self._raise(t, risk, LOCKOUT_ENDED)  # nobody answered: send it again
            return None
        # acknowledged
        if p.tier(risk) > self.ref_tier:  # the stronger news first: a new tier, even if also doubled
            return self._raise(t, risk, NEXT_TIER)
        if above and p.rise_factor is not None and risk >= p.rise_factor * self.ref_risk:
            return self._raise(t, risk, RISK_DOUBLED)
        if p.lockout_hours is not None and t >= self.acked_at + p.lockout_hours:
            if above:
                return self._raise(t, risk, LOCKOUT_ENDED)
            self.state = "quiet"
        return None

    def act(self, t: float, kind: str) -> bool:
        """Acknowledge or dismiss the open alarm; False (and no change) when none is open."""
        if self.state != "open":
            return False
        self._close(t, kind)
        self.state = "acknowledged"
        self.ref_risk = self.last_risk if self.last_risk is not None else self.events[-1].risk
        self.ref_tier = self.policy.tier(self.ref_risk)
        self.acked_at = t
        return True


def _steps(times: Sequence[float], risks: Sequence[float]) -> Iterable[tuple[float, float]]:
    if len(times) != len(risks):
        raise ValueError(f"{len(times)} times but {len(risks)} risks")
    return zip((float(t) for t in times), (float(r) for r in risks))


def alarm_events(policy: AlarmPolicy, times: Sequence[float], risks: Sequence[float],
                 actions: Iterable[Action] = ()) -> list[AlarmEvent]:
    """Every alarm event of one stay, replayed from its steps and the ward's recorded actions.

    An action applies after the step at the same time (an alarm raised at t can be acknowledged at
    t) and before any later step."""
    machine = _Machine(policy)
    pending = sorted(actions, key=lambda a: a.time)
    i = 0
    for t, risk in _steps(times, risks):
        while i < len(pending) and pending[i].time < t:
            machine.act(pending[i].time, pending[i].kind)
            i += 1
        machine.observe(t, risk)
    for a in pending[i:]:
        machine.act(a.time, a.kind)
    return machine.events


Ward = Callable[[AlarmEvent], str | None]


def simulate_ward(policy: AlarmPolicy, times: Sequence[float], risks: Sequence[float],
                  ward: Ward) -> tuple[list[AlarmEvent], list[Action]]:
    """A scripted ward: `ward(event)` is asked at each new event and answers ACKNOWLEDGE, DISMISS or
    None; an answer is acted on at once (at the event's time). Returns the events and the actions,
    so `alarm_events(policy, times, risks, actions)` replays exactly the same events."""
    machine = _Machine(policy)
    actions = []
    for t, risk in _steps(times, risks):
        event = machine.observe(t, risk)
        if event is not None:
            answer = ward(event)
            if answer is not None and machine.act(t, answer):
                actions.append(Action(t, answer))
    return machine.events, actions
