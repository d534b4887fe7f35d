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


def monitored(first_measured: dt.datetime | None, ts: dt.datetime) -> bool:
    """Whether the hour starting at `ts` is at or after the patient's first measured one
    (`first_measured`, None: none yet; models.alarm_figures.first_measured): before it nothing
    alarms, whatever the risk. The one place this is decided (the timeline, FHIR, the shadows)."""
    return first_measured is not None and ts >= first_measured


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


def _replay(policy: AlarmPolicy, latest: LatestAlarm | None, since: Sequence[tuple[dt.datetime, float]],
            new: Sequence[tuple[dt.datetime, float]]):
    """(steps replayed, their hours from the epoch, the policy's events, index of new's first step)."""
    steps, actions, epoch = list(new), [], new[0][0]
    if latest is not None and latest.state in ("open", "acknowledged") and alarming(latest.risk, policy.threshold):
        epoch = latest.raised_at
        steps = [(latest.raised_at, latest.risk), *since, *new]
        if latest.state == "acknowledged" and latest.acknowledged_at is not None:
            actions = [Action(_hours(latest.acknowledged_at, epoch), ACKNOWLEDGE)]
    times = [_hours(t, epoch) for t, _ in steps]
    return steps, times, alarm_events(policy, times, [r for _, r in steps], actions), len(steps) - len(new)


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
    if latest is not None and latest.state == "snoozed":
        blocked = [latest.snoozed_until is None or t < latest.snoozed_until for t, _ in new]
        free = [step for step, b in zip(new, blocked) if not b]
        return [None] * (len(new) - len(free)) + policy_events(policy, None, (), free)
    _, times, events, first_new = _replay(policy, latest, since, new)
    sent = {e.time: e.kind for e in events}
    return [sent.get(times[first_new + k]) for k in range(len(new))]


def episode_ends(policy: AlarmPolicy, latest: LatestAlarm | None, since: Sequence[tuple[dt.datetime, float]],
                 new: Sequence[tuple[dt.datetime, float]]) -> dict[int | None, dt.datetime]:
    """When open alarms (nobody answered them) stop being open because a risk fell below the
    threshold at one of `new`'s steps (`models.alarm_policy`: the episode is over): {None: the
    newest stored alarm's end, k: the end of the alarm raised at new's step k}. Ends only what the
    policy ends: an acknowledged or snoozed alarm is closed by its action."""
    if not new or (latest is not None and latest.state == "snoozed"):
        return {}
    steps, times, events, first_new = _replay(policy, latest, since, new)
    at = {h: t for h, (t, _) in zip(times, steps)}
    replayed_latest = first_new > 0  # the stored alarm is the first event of the replay
    out: dict[int | None, dt.datetime] = {}
    for j, e in enumerate(events):
        if e.closed_by != RESOLVED or e.closed_at is None or e.closed_at < times[first_new]:
            continue
        if j == 0 and replayed_latest:
            if latest.state == "open":
                out[None] = at[e.closed_at]
            continue
        raised = [k for k in range(len(new)) if times[first_new + k] == e.time]
        if raised:
            out[raised[0]] = at[e.closed_at]
    return out


def is_realert(kind: str) -> bool:
    return kind != RAISED
