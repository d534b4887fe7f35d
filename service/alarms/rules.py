"""The alarm rules, pure: when a risk alarms, which alarm events a patient's new risks send (the
unit's `models.alarm_policy.AlarmPolicy`, replayed by its own code; a snooze suppresses them until
it ends), and the state machine of what a clinician may do with an alarm.

| from-state    | ack          | snooze                 | resolve  |
|---------------|--------------|------------------------|----------|
| open          | acknowledged | snoozed                | resolved |
| acknowledged  | 409          | snoozed                | resolved |
| snoozed       | acknowledged | snoozed (new end time) | resolved |
| resolved      | 409          | 409                    | 409      |
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

from models.alarm_policy import ACKNOWLEDGE, RAISED, RESOLVED, Action, AlarmPolicy, alarm_events

ACTIVE_STATES = ("open", "acknowledged", "snoozed")
# action -> (the states it may start from, the state it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("open", "snoozed"), "acknowledged"),
    "snooze": (("open", "acknowledged", "snoozed"), "snoozed"),
    "resolve": (("open", "acknowledged", "snoozed"), "resolved"),
}


def alarming(risk: float, threshold: float) -> bool:
    """Whether a risk is at or above the threshold in force: the one place this is decided (the
    stored rows, the answers, the explanations kept and the shadows' would-be alarms all ask here)."""
    return risk >= threshold


@dataclass(frozen=True)
class LatestAlarm:
    """The patient's newest alarm row, as the policy needs it."""
    id: int
    state: str
    raised_at: dt.datetime
    risk: float
    acknowledged_at: dt.datetime | None = None
    snoozed_until: dt.datetime | None = None


def _hours(t: dt.datetime, epoch: dt.datetime) -> float:
    return (t - epoch).total_seconds() / 3600.0


def policy_events(policy: AlarmPolicy, latest: LatestAlarm | None, since: Sequence[tuple[dt.datetime, float]],
                  new: Sequence[tuple[dt.datetime, float]]) -> list[str | None]:
    """The alarm event (its kind) each of `new`'s (time, risk) steps sends, None where none.

    The policy's state after an alarm is raised depends only on that alarm, so the stay is replayed
    by `models.alarm_policy.alarm_events` from the newest alarm's raise: its risk at its time, the
    stored steps `since` it and its acknowledgement, then the new steps. An alarm resolved (by a
    clinician, an outcome or a newer alarm) leaves the patient quiet. A snooze is the ward's, not
    the policy's: nothing alarms before it ends, and the patient is quiet after it."""
    if not new:
        return []
    steps, actions, epoch = list(new), [], new[0][0]
    if latest is not None and latest.state == "snoozed":
        blocked = [latest.snoozed_until is None or t < latest.snoozed_until for t, _ in new]
        free = [step for step, b in zip(new, blocked) if not b]
        return [None] * (len(new) - len(free)) + policy_events(policy, None, (), free)
    if latest is not None and latest.state in ("open", "acknowledged") and alarming(latest.risk, policy.threshold):
        epoch = latest.raised_at
        steps = [(latest.raised_at, latest.risk), *since, *new]
        if latest.state == "acknowledged" and latest.acknowledged_at is not None:
            actions = [Action(_hours(latest.acknowledged_at, epoch), ACKNOWLEDGE)]
    times = [_hours(t, epoch) for t, _ in steps]
    events = alarm_events(policy, times, [r for _, r in steps], actions)
    first_new = len(steps) - len(new)
    sent = {e.time: e.kind for e in events}
    return [sent.get(times[first_new + k]) for k in range(len(new))]


def episode_end(policy: AlarmPolicy, latest: LatestAlarm | None, since: Sequence[tuple[dt.datetime, float]],
                new: Sequence[tuple[dt.datetime, float]]) -> dt.datetime | None:
    """When the newest alarm, open (nobody has answered it), stops being open because a risk fell
    below the threshold (`models.alarm_policy`: the episode is over): the time of that step of
    `since` or `new`; None while it stays open, or when it is not open."""
    if latest is None or latest.state != "open" or not alarming(latest.risk, policy.threshold) or not new:
        return None
    steps = [(latest.raised_at, latest.risk), *since, *new]
    times = [_hours(t, latest.raised_at) for t, _ in steps]
    first = alarm_events(policy, times, [r for _, r in steps])[0]
    if first.closed_by != RESOLVED or first.closed_at is None:
        return None
    return next(t for t, h in zip((t for t, _ in steps), times) if h == first.closed_at)


def is_realert(kind: str) -> bool:
    return kind != RAISED
