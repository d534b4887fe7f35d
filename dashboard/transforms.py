"""Pure functions from the service's answers to what the pages draw. No I/O, no Streamlit."""
from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from dashboard.client import Alarm, PatientSummary, TimelineEntry

HOUR = dt.timedelta(hours=1)
ACTIVE_STATES = ("open", "acknowledged", "snoozed")
# Laboratory values, everything else measured is a vital sign (PhysioNet 2019 grouping).
VITALS = ("HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2")


@dataclass(frozen=True)
class WardRow:
    patient_id: str
    risk: float | None
    last_observation: dt.datetime | None
    hours_since: float | None      # from the last observation to the ward clock
    n_observations: int
    alarm_id: int | None
    alarm_state: str | None        # open / acknowledged / snoozed, None without an active alarm
    alarm_risk: float | None
    alarm_raised_at: dt.datetime | None
    snoozed_until: dt.datetime | None
    status: str = "monitoring"     # the service's patient status: monitoring / in_treatment


def ward_clock(patients: list[PatientSummary], now: dt.datetime) -> dt.datetime:
    """The ward's "now": the wall clock, or the newest observation when the feed runs ahead of it
    (a replay at 3600x stamps observations hours into the future)."""
    latest = [p.last_observation for p in patients if p.last_observation is not None]
    return max([now, *latest])


def monitored(patients: list[PatientSummary]) -> list[PatientSummary]:
    """Patients still on the ward: everyone not discharged; a confirmed-sepsis patient stays, in treatment."""
    return [p for p in patients if p.status != "discharged"]


def ward_rows(patients: list[PatientSummary], active_alarms: list[Alarm], clock: dt.datetime) -> list[WardRow]:
    """One row per monitored patient, highest risk first (patients not yet scored last)."""
    by_patient: dict[str, Alarm] = {}
    for a in active_alarms:
        if a.state in ACTIVE_STATES and (a.patient_id not in by_patient or a.id > by_patient[a.patient_id].id):
            by_patient[a.patient_id] = a
    rows = []
    for p in monitored(patients):
        a = by_patient.get(p.patient_id)
        since = None if p.last_observation is None else max(0.0, (clock - p.last_observation) / HOUR)
        rows.append(WardRow(patient_id=p.patient_id, risk=p.last_risk, last_observation=p.last_observation,
                            hours_since=since, n_observations=p.n_observations,
                            alarm_id=a.id if a else p.active_alarm_id, alarm_state=a.state if a else None,
                            alarm_risk=a.risk if a else None, alarm_raised_at=a.raised_at if a else None,
                            snoozed_until=a.snoozed_until if a else None, status=p.status))
    rows.sort(key=lambda r: (r.risk is None, -(r.risk or 0.0), r.patient_id))
    return rows


def alarm_is_loud(row: WardRow, now: dt.datetime) -> bool:
    """An alarm nobody has dealt with: open, or snoozed and the snooze is over."""
    if row.alarm_state == "open":
        return True
    return row.alarm_state == "snoozed" and row.snoozed_until is not None and row.snoozed_until <= now


def trend(timeline: list[TimelineEntry], end: dt.datetime | None = None, hours: float = 24.0) -> list[tuple[dt.datetime, float]]:
    """(timestamp, risk) over the `hours` before `end` (default: the last observation)."""
    if not timeline:
        return []
    end = end or timeline[-1].timestamp
    start = end - dt.timedelta(hours=hours)
    return [(t.timestamp, t.risk) for t in timeline if start <= t.timestamp <= end]


def risk_frame(timeline: list[TimelineEntry]) -> pd.DataFrame:
    return pd.DataFrame({"time": [t.timestamp for t in timeline], "risk": [t.risk for t in timeline],
                         "alarm_id": [t.alarm_id for t in timeline]})


def risk_axis_top(risks, threshold: float | None) -> float:
    """Upper end of the risk axis: room above the highest risk and the threshold. A calibrated
    risk of sepsis is mostly a few percent, so a fixed 0-1 axis would flatten it to a line."""
    highest = max([r for r in risks if r is not None] + ([threshold] if threshold is not None else []), default=0.0)
    return float(min(1.0, max(0.05, 1.25 * highest)))


def measured_variables(timeline: list[TimelineEntry]) -> list[str]:
    """Variables measured at least once, vitals first, then labs by first appearance."""
    seen: dict[str, None] = {}
    for t in timeline:
        for name in t.vitals:
            seen.setdefault(name, None)
    vitals = [v for v in VITALS if v in seen]
    return vitals + [v for v in seen if v not in VITALS]


def vitals_frame(timeline: list[TimelineEntry]) -> pd.DataFrame:
    """Long form (time, variable, value, segment). A variable's line is cut wherever it was not
    measured at an observation, so missing hours show as gaps instead of being drawn over."""
    rows = []
    for name in measured_variables(timeline):
        segment, previous_measured = 0, False
        for t in timeline:
            value = t.vitals.get(name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                previous_measured = False
                continue
            if not previous_measured:
                segment += 1
            rows.append({"time": t.timestamp, "variable": name, "value": float(value),
                         "segment": f"{name}#{segment}", "kind": "vital" if name in VITALS else "lab"})
            previous_measured = True
    return pd.DataFrame(rows, columns=["time", "variable", "value", "segment", "kind"])


def coverage_frame(timeline: list[TimelineEntry]) -> pd.DataFrame:
    """(time, hour, variable, measured) for every observation x measured variable: the missingness
    map. `hour` counts from the first observation, one cell per observed hour."""
    names = measured_variables(timeline)
    if not timeline:
        return pd.DataFrame(columns=["time", "hour", "variable", "measured"])
    t0 = timeline[0].timestamp
    return pd.DataFrame([{"time": t.timestamp, "hour": int((t.timestamp - t0) // HOUR), "variable": n,
                          "measured": n in t.vitals} for t in timeline for n in names],
                        columns=["time", "hour", "variable", "measured"])


def alarm_queue(alarms: list[Alarm], states: tuple[str, ...] = ("open", "snoozed")) -> list[Alarm]:
    """Alarms in `states`, oldest first (the service lists newest first)."""
    return sorted((a for a in alarms if a.state in states), key=lambda a: (a.raised_at, a.id))


def lead_times(alarms: list[Alarm], patients: list[PatientSummary]) -> pd.DataFrame:
    """Hours from each septic patient's first true alarm to onset (the service's definition of
    lead time: a true alarm falls 12 h before to 3 h after onset)."""
    onset = {p.patient_id: p.onset_time for p in patients if p.outcome == "sepsis" and p.onset_time is not None}
    first: dict[str, dt.datetime] = {}
    for a in alarms:
        if a.verdict == "true" and a.patient_id in onset:
            first[a.patient_id] = min(first.get(a.patient_id, a.raised_at), a.raised_at)
    rows = [{"patient_id": pid, "lead_time_hours": (onset[pid] - t) / HOUR} for pid, t in sorted(first.items())]
    return pd.DataFrame(rows, columns=["patient_id", "lead_time_hours"])


def verdict_counts(alarms: list[Alarm]) -> dict[str, int]:
    c = Counter(a.verdict for a in alarms)
    return {k: c.get(k, 0) for k in ("true", "false", "unknown")}


def bucket_for(span: dt.timedelta) -> tuple[str, dt.timedelta]:
    """About 12 to 90 buckets whatever the span: hours for a replay, days for weeks, weeks beyond."""
    if span <= dt.timedelta(days=3):
        return "hour", HOUR
    if span <= dt.timedelta(days=14):
        return "6 h", 6 * HOUR
    if span <= dt.timedelta(days=90):
        return "day", dt.timedelta(days=1)
    return "week", dt.timedelta(days=7)


def _floor(t: dt.datetime, step: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return epoch + step * math.floor((t - epoch) / step)


def alarm_burden(alarms: list[Alarm], patients: list[PatientSummary]) -> tuple[str, pd.DataFrame]:
    """Per time bucket: alarms raised, patient-days monitored (each patient's first to last
    observation plus one hour, as the service's /stats counts them) and alarms per patient-day."""
    spans = [(p.first_observation, p.last_observation + HOUR) for p in patients
             if p.first_observation is not None and p.last_observation is not None]
    times = [a.raised_at for a in alarms] + [s for s, _ in spans] + [e for _, e in spans]
    cols = ["start", "alarms", "patient_days", "alarms_per_patient_day"]
    if not times:
        return "hour", pd.DataFrame(columns=cols)
    name, step = bucket_for(max(times) - min(times))
    first, last = _floor(min(times), step), max(times)
    n = int(math.floor((last - first) / step)) + 1
    starts = [first + i * step for i in range(n)]
    raised = [0] * n
    for a in alarms:
        raised[int((a.raised_at - first) // step)] += 1
    days = [0.0] * n
    for s, e in spans:
        i = int((s - first) // step)
        while i < n and starts[i] < e:
            overlap = min(e, starts[i] + step) - max(s, starts[i])
            days[i] += max(0.0, overlap / dt.timedelta(days=1))
            i += 1
    while n > 1 and raised[-1] == 0 and days[-1] == 0:  # a span ending exactly on a boundary
        n -= 1
        starts, raised, days = starts[:n], raised[:n], days[:n]
    rate = [r / d if d > 0 else None for r, d in zip(raised, days)]
    return name, pd.DataFrame({"start": starts, "alarms": raised, "patient_days": days, "alarms_per_patient_day": rate},
                              columns=cols)


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
