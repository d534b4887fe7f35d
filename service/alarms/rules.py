"""The alarm rules, pure: when a risk alarms, when an existing alarm suppresses a new one, and the
state machine of what a clinician may do with an alarm.

| from-state    | ack          | snooze                 | resolve  |
|---------------|--------------|------------------------|----------|
| open          | acknowledged | snoozed                | resolved |
| acknowledged  | 409          | snoozed                | resolved |
| snoozed       | acknowledged | snoozed (new end time) | resolved |
| resolved      | 409          | 409                    | 409      |
"""
from __future__ import annotations

import datetime as dt

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


def blocks(alarm, ts: dt.datetime) -> bool:
    """Whether an existing alarm (anything with `state` and `snoozed_until`) suppresses a new one at
    `ts`: open and acknowledged alarms do until resolved, a snoozed one until its snooze ends."""
    if alarm is None or alarm.state == "resolved":
        return False
    if alarm.state == "snoozed":
        return alarm.snoozed_until is not None and alarm.snoozed_until > ts
    return True
