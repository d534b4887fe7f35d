"""Altair charts of a stay: risk, the chosen vitals and labs and the measurement strip stacked on
ONE shared time axis, so a rise in risk lines up with the values behind it. And the performance
page's alarm burden over time, with a rule where an operating-point period starts (`burden_chart`).

Each row is its own chart drawn at the page's width (a tablet shows the whole stay, the newest
hours included): every row has the same time domain and the same room for its y axis
(`AXIS_EXTENT`), so the plotting areas line up exactly; only the bottom row labels the time axis.
(One Vega-Lite vconcat cannot follow the container's width: "fit" sizing only works for single
and layered views.) Under "fit" a row's height is its whole height, axis and title included, and a
y-axis title would be clipped on a short row, so each row names itself in its title instead."""
from __future__ import annotations

import altair as alt
import pandas as pd

from dashboard import transforms

AXIS_EXTENT = 120  # px for every row's y ticks and labels: equal, so the time axes line up
VALUE_FORMAT = ",.4~f"   # 37.2, 120, 0.05: never "1e+2"
TIME_AXIS = alt.Axis(format="%b %d %H:%M", labelAngle=0, labelOverlap=True, title="time (UTC)")
TITLE_PX, TIME_AXIS_PX = 22, 70  # room a row's title and the bottom row's time axis take under "fit"


def _y_axis(**kw) -> alt.Axis:
    return alt.Axis(title=None, minExtent=AXIS_EXTENT, maxExtent=AXIS_EXTENT, labelLimit=AXIS_EXTENT - 10, **kw)


def _title(text: str) -> alt.TitleParams:
    return alt.TitleParams(text, anchor="start", fontSize=12, offset=4)


def stay_charts(d, threshold: float | None, chosen: list[str]) -> list[alt.LayerChart | alt.Chart]:
    """Top to bottom: risk (threshold, alarms, onset), each chosen variable, the measurement strip."""
    timeline = d.timeline
    t0, t1 = timeline[0].timestamp, timeline[-1].timestamp
    if d.summary.onset_time is not None:
        t0, t1 = min(t0, d.summary.onset_time), max(t1, d.summary.onset_time)
    domain = alt.Scale(domain=[t0.isoformat(), t1.isoformat()])
    x = alt.X("time:T", scale=domain, axis=TIME_AXIS)
    x_hidden = alt.X("time:T", scale=domain, axis=alt.Axis(labels=False, ticks=False, title=None))

    risk = transforms.risk_frame(timeline)
    top = transforms.risk_axis_top(risk["risk"], threshold)
    y = alt.Y("risk:Q", scale=alt.Scale(domain=[0, top]), axis=_y_axis(format=".0%"))
    layers = [alt.Chart(risk).mark_line(point=True).encode(
        x=x_hidden, y=y, tooltip=[alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"), alt.Tooltip("risk:Q", format=".1%")])]
    if threshold is not None:
        layers.append(alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(color="#d50000", strokeDash=[6, 4])
                      .encode(y="threshold:Q"))
    if d.alarms:
        marks = pd.DataFrame([{"time": a.raised_at, "risk": a.risk, "alarm": f"#{a.id} {a.state} ({a.verdict})"}
                              for a in d.alarms])
        layers.append(alt.Chart(marks).mark_point(shape="triangle-up", size=200, filled=True, color="#d50000")
                      .encode(x=x_hidden, y="risk:Q", tooltip=["alarm:N", alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"),
                                                               alt.Tooltip("risk:Q", format=".1%")]))
    if d.summary.onset_time is not None:
        layers.append(alt.Chart(pd.DataFrame({"time": [d.summary.onset_time]})).mark_rule(color="black", strokeWidth=2)
                      .encode(x=x_hidden))
    rows: list = [alt.layer(*layers).properties(height=200 + TITLE_PX, title=_title("risk"))]

    vit = transforms.vitals_frame(timeline)
    for name in chosen:
        sub = vit[vit["variable"] == name]
        rows.append(alt.Chart(sub).mark_line(point=True).encode(
            x=x_hidden, y=alt.Y("value:Q", scale=alt.Scale(zero=False), axis=_y_axis(format=VALUE_FORMAT)),
            detail="segment:N",
            tooltip=["variable:N", alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"), alt.Tooltip("value:Q", format=VALUE_FORMAT)],
        ).properties(height=90 + TITLE_PX, title=_title(name)))

    cov = transforms.coverage_frame(timeline)
    measured = transforms.measured_variables(timeline)
    rows.append(alt.Chart(cov[cov["measured"]]).mark_square(size=40, color="#1f77b4").encode(
        x=x, y=alt.Y("variable:N", sort=measured, axis=_y_axis(labelOverlap=False)),
        tooltip=["variable:N", alt.Tooltip("time:T", format="%Y-%m-%d %H:%M")],
    ).properties(height=20 * max(1, len(measured)) + TITLE_PX + TIME_AXIS_PX, title=_title("when each variable was measured")))
    return rows


BURDEN_AXIS = alt.Axis(format="%m-%d %H:%M", labelAngle=0, labelOverlap=True)


def burden_chart(bucket: str, burden: pd.DataFrame, changes: pd.DataFrame) -> alt.LayerChart:
    """Bars: alarms raised per bucket (transforms.alarm_burden); line: alarms per patient-day; a
    vertical rule with its label at each time a unit's operating point or threshold changed
    (transforms.period_changes), so a step in the burden can be read against the change that
    made it. A time axis, not one label per bucket: a change falls inside a bucket, not on its
    edge. UTC scale: the browser's zone would shift the hours the title promises in UTC."""
    frame = burden.assign(bucket=burden["start"].map(lambda t: t.strftime("%Y-%m-%d %H:%M")),
                          middle=burden["start"] + (burden["end"] - burden["start"]) / 2)

    def x(field: str) -> alt.X:  # one title and scale for every layer: Vega-Lite would join the fields' names
        return alt.X(f"{field}:T", title=f"{bucket} starting (UTC)", scale=alt.Scale(type="utc"), axis=BURDEN_AXIS)

    base = alt.Chart(frame)
    layers = [
        base.mark_bar(opacity=0.35, color="#d50000").encode(
            x=x("start"), x2="end:T", y=alt.Y("alarms:Q", title=f"alarms per {bucket}"),
            tooltip=[alt.Tooltip("bucket:N", title=f"{bucket} starting (UTC)"), "alarms:Q"]),
        base.mark_line(point=True, color="#1b2733").encode(
            x=x("middle"),
            y=alt.Y("alarms_per_patient_day:Q", title="alarms per patient-day"),
            tooltip=[alt.Tooltip("bucket:N", title=f"{bucket} starting (UTC)"), "alarms:Q",
                     alt.Tooltip("patient_days:Q", format=".2f"),
                     alt.Tooltip("alarms_per_patient_day:Q", format=".2f")]),
    ]
    if not changes.empty:
        marks = changes.assign(at=changes["time"].map(lambda t: t.strftime("%Y-%m-%d %H:%M")))
        at = x("time")
        tip = [alt.Tooltip("at:N", title="changed at (UTC)"), alt.Tooltip("label:N", title="now in force")]
        layers.append(alt.Chart(marks).mark_rule(color="#6a1b9a", strokeWidth=2, strokeDash=[4, 3])
                      .encode(x=at, tooltip=tip))
        # a label reads into the chart: rightwards in its first half, leftwards in its second, so
        # none runs off the page's edge
        middle = burden["start"].iloc[0] + (burden["end"].iloc[-1] - burden["start"].iloc[0]) / 2
        halves = (("left", 4, marks[marks["time"] < middle]), ("right", -4, marks[marks["time"] >= middle]))
        for align, dx, side in halves:
            if not side.empty:
                layers.append(alt.Chart(side).mark_text(align=align, baseline="top", dx=dx, dy=2, fontSize=10,
                                                        color="#6a1b9a", limit=260)
                              .encode(x=at, y=alt.value(0), text="label:N", tooltip=tip))
    return alt.layer(*layers).resolve_scale(y="independent").properties(height=260)
