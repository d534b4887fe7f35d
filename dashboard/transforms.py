"""Pure functions from the service's answers to what the pages draw. No I/O, no Streamlit."""
from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from dashboard.client import Alarm, PatientSummary, PeriodFigures, TimelineEntry
from dashboard.config import ALARM_OLD_HOURS, NO_DATA_HOURS
from dashboard.critical import critical_rule

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
    unit: str | None = None
    alarm_age_hours: float | None = None  # from the alarm's raise to the ward clock
    bed: str | None = None
    no_data: bool = False          # nothing measured for longer than the unit's limit (config.NO_DATA_HOURS)
    alarm_old: bool = False        # the active alarm was raised longer ago than config.ALARM_OLD_HOURS
    alarm_kind: str = "raised"     # "raised", or a re-alert / escalation of an earlier alarm


def ward_clock(patients: list[PatientSummary], now: dt.datetime) -> dt.datetime:
    """The ward's "now": the wall clock, or the newest observation when the feed runs ahead of it
    (a replay at 3600x stamps observations hours into the future)."""
    latest = [p.last_observation for p in patients if p.last_observation is not None]
    return max([now, *latest])


def monitored(patients: list[PatientSummary]) -> list[PatientSummary]:
    """Patients still on the ward: everyone not discharged; a confirmed-sepsis patient stays, in treatment."""
    return [p for p in patients if p.status != "discharged"]


def ward_rows(patients: list[PatientSummary], active_alarms: list[Alarm], clock: dt.datetime,
              no_data_after: Callable[[str | None], float] = lambda unit: NO_DATA_HOURS,
              alarm_old_hours: float = ALARM_OLD_HOURS) -> list[WardRow]:
    """One row per monitored patient in ward order (`ward_order`). "Since last observation" counts
    from the last observation that measured something (`last_measured`), not from a post that
    carried no values; from the last observation where the service does not say. A patient with
    nothing measured for longer than `no_data_after(unit)` hours (from the ICU admission when
    nothing was ever measured) is flagged `no_data`."""
    by_patient: dict[str, Alarm] = {}
    for a in active_alarms:
        if a.state in ACTIVE_STATES and (a.patient_id not in by_patient or a.id > by_patient[a.patient_id].id):
            by_patient[a.patient_id] = a
    rows = []
    for p in monitored(patients):
        a = by_patient.get(p.patient_id)
        seen = p.last_measured or p.last_observation
        since = None if seen is None else max(0.0, (clock - seen) / HOUR)
        quiet = since if since is not None else (
            None if p.icu_admit_time is None else max(0.0, (clock - p.icu_admit_time) / HOUR))
        age = max(0.0, (clock - a.raised_at) / HOUR) if a else None
        rows.append(WardRow(patient_id=p.patient_id, risk=p.last_risk, last_observation=p.last_observation,
                            hours_since=since, n_observations=p.n_observations,
                            alarm_id=a.id if a else p.active_alarm_id, alarm_state=a.state if a else None,
                            alarm_risk=a.risk if a else None, alarm_raised_at=a.raised_at if a else None,
                            snoozed_until=a.snoozed_until if a else None, status=p.status, unit=p.unit,
                            alarm_age_hours=age, bed=p.bed,
                            no_data=quiet is not None and quiet > no_data_after(p.unit),
                            alarm_old=age is not None and age > alarm_old_hours,
                            alarm_kind=a.kind if a else "raised"))
    return ward_order(rows, clock)


def ward_rank(r: WardRow, clock: dt.datetime) -> int:
    """0 an alarm nobody has dealt with; 1 a patient in treatment with no recent data (nobody is
    watching a septic patient); 2 an alarm in hand; 3 any other patient with no recent data; 4 the rest."""
    if alarm_is_loud(r, clock):
        return 0
    if r.no_data and r.status == "in_treatment":
        return 1
    if r.alarm_state is not None:
        return 2
    return 3 if r.no_data else 4


def ward_order(rows: list[WardRow], clock: dt.datetime) -> list[WardRow]:
    """Alarms first: every unacknowledged alarm (open, or a snooze that has run out), then patients
    in treatment without recent data, alarms in hand (acknowledged, snoozing), other patients
    without recent data, then everyone else (`ward_rank`); highest risk first within each, patients
    not yet scored last. The service orders /patients?order=alarms_first by the alarms the same way;
    the dashboard re-applies it because a snooze may have run out since the service answered and the
    service does not flag missing data."""
    return sorted(rows, key=lambda r: (ward_rank(r, clock), r.risk is None, -(r.risk or 0.0), r.patient_id))


def pagination_note(loud: list[bool], page_no: int, per_page: int, what: str = "open alarms") -> str | None:
    """What the page shows of the rows that matter (`loud`, in page order) and where the rest are:
    '6 of 15 open alarms shown; 9 more on pages 2-3'. None when there are none."""
    total = sum(loud)
    if total == 0:
        return None
    pages: dict[int, int] = {}
    for i, flag in enumerate(loud):
        if flag:
            pages[i // per_page + 1] = pages.get(i // per_page + 1, 0) + 1
    here = pages.pop(page_no, 0)
    if not pages:
        return f"all {total} {what} shown"
    numbers = sorted(pages)
    spans, start = [], numbers[0]
    for a, b in zip(numbers, numbers[1:] + [None]):
        if b != a + 1:
            spans.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    where = ("page " if len(numbers) == 1 else "pages ") + ", ".join(spans)
    return f"{here} of {total} {what} shown; {total - here} more on {where}"


@dataclass(frozen=True)
class TileLook:
    css: str        # the tile's CSS class (tiles.CSS)
    words: str      # what the colour means, for the tile's tooltip and the legend


# One rule for the ward's colours, in this order (the legend on the ward page says the same).
COLOUR_RULE = [
    ("alarm-open", "Red, pulsing: a fresh alarm nobody has acknowledged (open, or its snooze has run out)."),
    ("alarm-old", "Red stripes, still: an alarm nobody has acknowledged, raised hours ago (the tile says how long "
                  "and the risk now against the threshold)."),
    ("alarm-held", "Amber: an alarm someone has in hand (acknowledged, or snoozed and the snooze is running)."),
    ("no-data", "Dashed dark border: no active alarm and nothing measured for hours; the model cannot alarm "
                "on values nobody posts."),
    ("risk-high", "No active alarm, risk at or above the alarm threshold: red edge."),
    ("risk-mid", "No active alarm, risk at or above half the threshold: yellow edge."),
    ("risk-low", "No active alarm, risk below half the threshold: plain."),
    ("risk-none", "Not scored yet: grey."),
]


def tile_look(row: WardRow, threshold: float | None, clock: dt.datetime) -> TileLook:
    """Alarm state first (an old unacknowledged alarm apart from a fresh one); without an active
    alarm, missing data, then risk relative to the operating threshold."""
    words = dict(COLOUR_RULE)
    if alarm_is_loud(row, clock):
        css = "alarm-old" if row.alarm_old else "alarm-open"
    elif row.alarm_state is not None:
        css = "alarm-held"
    elif row.no_data:
        css = "no-data"
    elif row.risk is None:
        css = "risk-none"
    elif threshold is None:
        css = "risk-low"
    elif row.risk >= threshold:
        css = "risk-high"
    elif row.risk >= threshold / 2:
        css = "risk-mid"
    else:
        css = "risk-low"
    return TileLook(css, words[css])


def against_threshold(risk: float | None, threshold: float | None) -> str:
    """'0.4%, below the 5.1% threshold': the risk now as the colour rule compares it."""
    if risk is None:
        return "not scored"
    if threshold is None:
        return f"{risk:.1%}"
    return f"{risk:.1%}, {'at or above' if risk >= threshold else 'below'} the {threshold:.1%} threshold"


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


def doubtful_values(timeline: list[TimelineEntry], most: int = 5) -> list[str]:
    """The latest values charted outside their plausible range, newest first, as lines to read
    ("Temp 98.6 at 2024-03-01 08:00 UTC: ..."): the service scored them as charted, so a clinician
    should see them, and whoever runs the interface should check the sender's unit."""
    out = []
    for t in reversed(timeline):
        for name, why in t.warnings.items():
            out.append(f"{name} at {t.timestamp:%Y-%m-%d %H:%M} UTC: {why}")
    return out[:most]


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
    """Per time bucket [start, end): alarms raised, patient-days monitored (each patient's first
    measured hour to the last observation plus one hour, as the service's /stats counts them: a
    patient is monitored from the first vital sign or lab) and alarms per patient-day."""
    spans = [(p.first_measured, p.last_observation + HOUR) for p in patients
             if p.first_measured is not None and p.last_observation is not None]
    times = [a.raised_at for a in alarms] + [s for s, _ in spans] + [e for _, e in spans]
    cols = ["start", "end", "alarms", "patient_days", "alarms_per_patient_day"]
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
    return name, pd.DataFrame({"start": starts, "end": [t + step for t in starts], "alarms": raised,
                               "patient_days": days, "alarms_per_patient_day": rate}, columns=cols)


# -- words and numbers for the screen ------------------------------------------------------------

def fmt_number(value) -> str:
    """A measured value as a person writes it: no exponent, no trailing zeros (98.6, 0.8, 1200)."""
    if value is None:
        return "not recorded"
    if isinstance(value, str):
        return value
    v = float(value)
    if not math.isfinite(v):
        return "not recorded"
    if v == 0:
        return "0"
    digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2 if abs(v) >= 0.1 else 3
    text = f"{v:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_age(hours: float | None) -> str:
    """How old a value is: '20 min ago', '3.5 h ago', '2.1 days ago'."""
    if hours is None:
        return "time unknown"
    if hours < 1:
        return f"{max(0.0, hours) * 60:.0f} min ago"
    if hours < 48:
        return f"{hours:.1f} h ago"
    return f"{hours / 24:.1f} days ago"


def fmt_duration(minutes: float) -> str:
    if minutes < 60:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} days"


def _points(delta: float) -> str:
    points = abs(delta) * 100
    return f"{points:.2g}" if points < 0.1 else f"{points:.1f}"


def contribution_text(c) -> str:
    """'Lactate 4.8 (measured 3.0 h before; normal 1) raised the risk by 3.1 points' (a point is one
    percentage point of risk); the age and the normal value are said when the service gives them,
    with the unit when it gives one ('Lactate 4.8 mmol/L (...; normal 1 mmol/L) ...').
    Not measured for long (basis "not measured"): 'Lactate not measured for 31.0 h (last 2.1; normal 1):
    a normal value now would lower the risk by 1.2 points', or 'Lactate never measured (normal 1): ...'."""
    size = _points(c.delta)

    def number(x) -> str:
        return fmt_number(x) + (f" {c.unit}" if c.unit and x is not None else "")

    if c.basis == "not measured":
        normal = f"normal {number(c.reference)}" if c.reference is not None else None
        if c.hours_since is None:
            gap, said = "never measured", [normal]
        else:
            gap = f"not measured for {fmt_age(c.hours_since).removesuffix(' ago')}"
            said = [f"last {number(c.value)}" if c.value is not None else None, normal]
        context = "; ".join(x for x in said if x)
        return (f"{c.feature} {gap}" + (f" ({context})" if context else "")
                + f": a normal value now would lower the risk by {size} points")
    way = "raised" if c.delta > 0 else "lowered"
    said = [f"measured {fmt_age(c.hours_since).removesuffix(' ago')} before" if c.hours_since else None,
            f"normal {number(c.reference)}" if c.reference is not None else None]
    context = "; ".join(x for x in said if x)
    value = f"{number(c.value)} ({context})" if context else number(c.value)
    return f"{c.feature} {value} {way} the risk by {size} points"


# The SOFA components (service/patients/bedside.py) by the organ system their variable belongs to
# (models/reference_values.csv: MAP cardiovascular, platelets coagulation, bilirubin hepatic, ...).
SOFA_SYSTEM = {"Respiration": "respiratory", "Coagulation": "coagulation", "Liver": "hepatic",
               "Cardiovascular": "cardiovascular", "Renal": "renal"}


def _sofa_words(component: dict) -> str:
    if component.get("score") is None:
        return f"SOFA {component['name'].lower()} not assessable"
    points = "point" if component["score"] == 1 else "points"
    value = f", {component.get('feature')} {fmt_number(component['value'])}" if component.get("value") is not None else ""
    return f"SOFA {component['name'].lower()} {component['score']} {points}{value}"


def reasons_by_system(contributions, bedside: dict | None = None) -> list[str]:
    """The contributions grouped by organ system, as markdown lines: each system a heading with its
    SOFA component beside it (from the bedside scores, when that system has one), its reasons under
    it. Systems in the order of their largest value reason; administrative fields and reasons without a
    system last, whatever their size. Reasons "not measured" (a gap of more than 24 h) come under their
    system after its value reasons, and rank a system only where no value reason is listed at all (a
    gap does not put a system above real abnormal values)."""
    groups: dict[str, list] = {}
    for c in contributions:
        groups.setdefault(c.system or "other", []).append(c)
    components = {SOFA_SYSTEM.get(c.get("name")): c for c in ((bedside or {}).get("sofa") or {}).get("components") or []}

    def gap(c) -> bool:
        return c.basis == "not measured"

    any_value = any(not gap(c) for c in contributions)

    def rank(item):
        system, items = item
        ranked = [abs(c.delta) for c in items if not (any_value and gap(c))]
        return (system in ("administrative", "other"), not ranked, -max(ranked, default=0.0))

    lines = []
    for system, items in sorted(groups.items(), key=rank):
        sofa = components.get(system)
        lines.append(f"- **{system[0].upper() + system[1:]}**" + (f" ({_sofa_words(sofa)})" if sofa else ""))
        lines += [f"    - {contribution_text(c)}" for c in sorted(items, key=gap)]
    return lines


def value_age(v) -> str:
    """How old a latest value is, and whether it is past the window the bedside scores count it for:
    '37.0 h ago, older than the 24 h window'."""
    age = fmt_age(v.age_hours)
    if v.window_hours is not None and v.age_hours is not None and v.age_hours > v.window_hours:
        return f"{age}, older than the {v.window_hours:g} h window"
    return age


def latest_frame(latest) -> pd.DataFrame:
    """The latest value of every measured variable (bedside `latest`), vitals first, with its age,
    whether it is past its window, and the critical range it falls in (dashboard/critical.py)."""
    def order(v):
        return (0, VITALS.index(v.feature)) if v.feature in VITALS else (1, v.feature)

    rows = [{"variable": v.feature, "kind": "vital" if v.feature in VITALS else "lab",
             "value": fmt_number(v.value) + (f" {v.unit}" if v.unit and v.value is not None else ""),
             "measured": value_age(v), "critical": critical_rule(v.feature, v.value) or ""}
            for v in sorted(latest, key=order)]
    return pd.DataFrame(rows, columns=["variable", "kind", "value", "measured", "critical"])


CRITICAL_STYLE = "background-color: #ffcdd2; color: #7f0000; font-weight: 700"


def critical_styles(frame: pd.DataFrame) -> pd.DataFrame:
    """CSS per cell of a `latest_frame`: the value and its rule of a critical value in red."""
    styles = pd.DataFrame("", index=frame.index, columns=frame.columns)
    hot = frame["critical"] != ""
    styles.loc[hot, ["value", "critical"]] = CRITICAL_STYLE
    return styles


def latest_lines(latest) -> list[str]:
    """The latest values in two short lines for a card, vitals then labs, the values measured
    together grouped under their age: 'HR 144 beats/min · Resp 31 breaths/min (10 min ago); ...'.
    A critical value is in bold red (dashboard/critical.py)."""
    def one(v):
        unit = f" {v.unit}" if v.unit and v.value is not None else ""
        text = f"{v.feature} {fmt_number(v.value)}{unit}"
        return f":red-background[:red[**{text}**]]" if critical_rule(v.feature, v.value) else text

    def grouped(values) -> str:
        groups: dict[str, list[str]] = {}
        for v in sorted(values, key=lambda v: (v.age_hours is None, v.age_hours or 0.0)):
            groups.setdefault(value_age(v), []).append(one(v))
        return "; ".join(f"{' · '.join(items)} ({age})" for age, items in groups.items())

    vitals = sorted((v for v in latest if v.feature in VITALS), key=lambda v: VITALS.index(v.feature))
    labs = sorted((v for v in latest if v.feature not in VITALS), key=lambda v: v.feature)
    return [f"**Vitals** {grouped(vitals)}" if vitals else "**Vitals** none measured",
            f"**Labs** {grouped(labs)}" if labs else "**Labs** none measured"]


def hours_since_measured(latest) -> float | None:
    """Hours since the newest measured value among `latest` (None: nothing measured)."""
    ages = [v.age_hours for v in latest if v.age_hours is not None]
    return min(ages) if ages else None


def latest_from_timeline(timeline: list[TimelineEntry], clock: dt.datetime) -> list:
    """Each variable's latest value from the timeline, for a service that does not send `bedside`."""
    from dashboard.client import LatestValue

    seen: dict[str, tuple[dt.datetime, float]] = {}
    for t in timeline:
        for name, value in t.vitals.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                seen[name] = (t.timestamp, value)
    return [LatestValue(feature=n, value=v, unit=None, measured_at=at, age_hours=max(0.0, (clock - at) / HOUR))
            for n, (at, v) in seen.items()]


def _score_words(block: dict | None, total_key: str = "score") -> str:
    if not block:
        return "not served"
    score = block.get(total_key)
    if score is None:
        return "not assessable"
    if block.get("evaluated") is not None and block.get("of") is not None:
        return f"{score} ({block['evaluated']} of {block['of']} criteria assessable)"
    return str(score)


def bedside_summary(bedside: dict | None) -> str:
    """One line for a card: 'qSOFA 2 (2 of 3 ...) · SIRS 4 (...) · SOFA 3 · lactate 4.8 mmol/L, 2.0 h ago'.
    Lactate is the same value the latest-values table shows: when the service scores none (past
    its window) the latest one is given with its age and 'older than the N h window'."""
    if not bedside:
        return ""
    parts = [f"qSOFA {_score_words(bedside.get('qsofa'))}", f"SIRS {_score_words(bedside.get('sirs'))}",
             f"SOFA (components with inputs) {_score_words(bedside.get('sofa'), 'total_available')}"]
    lac = bedside.get("lactate")
    if not (lac and lac.get("value") is not None):
        lac = next((v for v in bedside.get("latest") or [] if v.get("feature") == "Lactate"
                    and v.get("value") is not None), None)
    if lac:
        text = f"lactate {fmt_number(lac['value'])} {lac.get('unit') or ''}".rstrip()
        if critical_rule("Lactate", lac["value"]):
            text = f":red-background[:red[**{text}**]]"
        age = fmt_age(lac.get("age_hours"))
        window = lac.get("window_hours")
        if window is not None and lac.get("age_hours") is not None and lac["age_hours"] > window:
            age += f" (older than the {window:g} h window)"
        parts.append(f"{text}, {age}")
    else:
        parts.append("lactate never measured")
    return " · ".join(parts)


def bedside_frame(bedside: dict | None) -> pd.DataFrame:
    """Every qSOFA / SIRS criterion and SOFA component with its value, result and age; the reason
    where it cannot be assessed (never a made-up normal)."""
    cols = ["score", "item", "value", "result", "measured", "note"]
    if not bedside:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, title, items, flag in (("qsofa", "qSOFA", "criteria", "met"), ("sirs", "SIRS", "criteria", "met"),
                                    ("sofa", "SOFA", "components", "score")):
        for c in (bedside.get(key) or {}).get(items) or []:
            measured = c.get("value") is not None
            if flag == "met":
                result = {True: "met", False: "not met"}.get(c.get("met"), "not assessable")
            else:
                result = "not assessable" if c.get("score") is None else f"{c['score']} points"
            rows.append({"score": title, "item": c.get("name"),
                         "value": (fmt_number(c["value"]) + (f" {c['unit']}" if c.get("unit") else "")) if measured
                         else "not measured",
                         "result": result, "measured": fmt_age(c.get("age_hours")) if measured else "",
                         "note": c.get("note") or c.get("rule") or ""})
    return pd.DataFrame(rows, columns=cols)


def demographics(d) -> list[str]:
    """Age, sex, unit, bed, ICU admission and status, each said in full ('not recorded' if absent)."""
    sex = {0: "female", 1: "male"}.get(None if d.gender is None else int(d.gender), "not recorded")
    p = d.summary
    admitted = p.icu_admit_time.strftime("%Y-%m-%d %H:%M UTC") if p.icu_admit_time else "not recorded"
    status = {"monitoring": "monitoring", "in_treatment": "in treatment (sepsis recorded)",
              "discharged": "discharged"}.get(p.status, p.status)
    return [f"**Age** {'not recorded' if d.age is None else f'{d.age:.0f} years'}", f"**Sex** {sex}",
            f"**Unit** {d.unit or p.unit or 'not recorded'}", f"**Bed** {p.bed or 'not recorded'}",
            f"**ICU admission** {admitted}", f"**Status** {status}", f"**Observations** {p.n_observations}"]


def risk_words(risk: float | None, threshold: float | None) -> str:
    """The risk against the threshold, for a service that does not say it in words itself."""
    if risk is None:
        return "not yet scored"
    if threshold is None:
        return f"{risk:.1%}"
    side = "at or above" if risk >= threshold else "below half of" if risk < threshold / 2 else "below"
    return f"{risk:.1%}, {side} the alarm threshold ({threshold:.1%})"


def latest_of(d, clock: dt.datetime) -> list:
    """The service's latest values (bedside `latest`), else each variable's latest from the timeline."""
    from dashboard.client import latest_values

    if d.bedside and d.bedside.get("latest"):
        return latest_values(d.bedside["latest"])
    return latest_from_timeline(d.timeline, clock)


def alarms_frame(alarms: list[Alarm]) -> pd.DataFrame:
    def ts(t):
        return "" if t is None else t.strftime("%Y-%m-%d %H:%M UTC")

    rows = [{"alarm": a.id, "raised": ts(a.raised_at), "risk": f"{a.risk:.1%}", "state": a.state,
             "verdict": a.verdict, "acknowledged": f"{a.acknowledged_by}, {ts(a.acknowledged_at)}: {a.ack_reason}"
             + (f" ({a.ack_note})" if a.ack_note else "") if a.acknowledged_at else "",
             "resolution": f"{a.resolved_by or 'the service'}, {ts(a.resolved_at)}"
             + (f": {a.resolve_note}" if a.resolve_note else "") if a.resolved_at else ""}
            for a in sorted(alarms, key=lambda a: -a.id)]
    return pd.DataFrame(rows, columns=["alarm", "raised", "risk", "state", "verdict", "acknowledged", "resolution"])


# -- the audit trail ------------------------------------------------------------------------------

_LONG_FLOAT = re.compile(r"-?\d+\.\d{4,}")


def fmt_detail(key: str, value) -> str:
    """One audit detail for a person: a risk or threshold (0-1) as a percentage with one decimal,
    other numbers as `fmt_number` writes them ('risk 6.2%', not 'risk 0.061674147844314575')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return round_numbers(str(value))
    if ("risk" in key or "threshold" in key) and 0 <= value <= 1:
        return f"{value:.1%}"
    return fmt_number(value)


def round_numbers(text: str) -> str:
    """Numbers with four or more decimals in a free text, to four significant digits."""
    return _LONG_FLOAT.sub(lambda m: f"{float(m.group()):.4g}", text)


def details_text(details: dict | None) -> str | None:
    if not details:
        return None
    return ", ".join(f"{k.replace('_', ' ')} {fmt_detail(k, v)}" for k, v in details.items() if v is not None) or None


def alarm_kind_words(kind: str | None) -> str | None:
    """What sets a re-alert apart from a first alarm, in the ward's words ('RE-ALERT: lockout
    ended'); None for a first alarm. The kinds are models/alarm_policy.py's."""
    if not kind or kind == "raised":
        return None
    head, _, why = kind.partition(":")
    return f"{head.strip().upper()}: {why.strip()}" if why else head.strip().upper()


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _span(p: PeriodFigures) -> str:
    start = "start" if p.start is None else p.start.strftime("%m-%d %H:%M")
    end = "now" if p.end is None else p.end.strftime("%m-%d %H:%M")
    return f"{start} to {end}"


def periods_frame(periods: list[PeriodFigures]) -> pd.DataFrame:
    """One row per unit and operating-point period (GET /stats/periods): each period's own figures,
    never added across a threshold change. Caught in the window first, before onset second. Short
    headers and values: the table fits a 1440-px page without scrolling sideways."""
    return pd.DataFrame([{
        "unit": p.unit, "point (threshold)": f"{p.point_id or 'model card'} ({p.threshold:.1%})",
        "in force (UTC)": _span(p), "pt-days": f"{p.patient_days:.1f}",
        "alarms/pt-day": "n/a" if p.alarms_per_patient_day is None else f"{p.alarms_per_patient_day:.2f}",
        "caught in window": "n/a" if not p.septic_patients else
        f"{_pct(p.caught_in_window)} ({p.septic_patients_alarmed_in_time}/{p.septic_patients})",
        "lead (h)": "n/a" if p.median_lead_time_hours is None else f"{p.median_lead_time_hours:.1f}",
        "before onset": _pct(p.alarmed_before_onset), "PPV/stay": _pct(p.ppv_per_stay),
        "red": _pct(p.red_share)} for p in periods],
        columns=["unit", "point (threshold)", "in force (UTC)", "pt-days", "alarms/pt-day", "caught in window",
                 "lead (h)", "before onset", "PPV/stay", "red"])


def mixed_thresholds(periods: list[PeriodFigures]) -> int:
    """How many thresholds the ward-wide figures add together: those of periods with patient-hours."""
    return len({p.threshold for p in periods if p.patient_days > 0})


def _opened(p: PeriodFigures) -> str:
    return f"{p.unit} {p.point_id or 'model card'} ({p.threshold:.1%})"


def period_changes(periods: list[PeriodFigures], lo: dt.datetime, hi: dt.datetime) -> pd.DataFrame:
    """One row per time in [lo, hi] at which a period started (a unit's point or threshold
    changed), for a rule on the burden chart: its label names each unit's new point and threshold,
    and the model a switch brought in. Units changed at one time (a model switch changes every
    unit at its default point) share a row, so their labels do not print over each other. A unit's
    first period starts with the record and marks nothing."""
    at: dict[dt.datetime, list[PeriodFigures]] = {}
    for p in periods:
        if p.start is not None and lo <= p.start <= hi:
            at.setdefault(p.start, []).append(p)
    rows = []
    for t, opened in sorted(at.items()):
        switch = next((p for p in opened if p.cause == "model_switch"), None)
        label = ", ".join(_opened(p) for p in opened)
        if switch is not None and switch.model:
            label = f"{switch.model} {switch.model_version}: {label}"
        rows.append({"time": t, "label": label})
    return pd.DataFrame(rows, columns=["time", "label"])
