"""Patient: risk over the stay against the threshold with alarm markers, the measured vitals and
labs (gaps where nothing was measured), and the outcome once known."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import transforms, ui

st.title("Patient")
c = ui.client()
with ui.guarded():
    summaries = c.patients()
if not summaries:
    st.info("No patients yet.")
    st.stop()

ids = [p.patient_id for p in sorted(summaries, key=lambda p: (p.last_risk is None, -(p.last_risk or 0), p.patient_id))]
wanted = st.query_params.get("patient_id")
if wanted and wanted not in ids:
    st.warning(f"No patient {wanted!r} on the service; showing the highest-risk patient instead.")
    wanted = None
pid = st.selectbox("Patient (highest risk first)", ids, index=ids.index(wanted) if wanted else 0, key="patient_pick")
st.query_params["patient_id"] = pid
with ui.guarded():
    d = c.patient(pid)
    ready = c.ready()
p = d.summary
threshold = d.alarms[-1].threshold if d.alarms else ready.threshold

cols = st.columns(5)
cols[0].metric("Current risk", "–" if p.last_risk is None else f"{p.last_risk:.0%}",
               help=f"alarm threshold {threshold:.0%}" if threshold is not None else None)
cols[1].metric("Observations", p.n_observations)
cols[2].metric("Alarms", len(d.alarms))
cols[3].metric("Unit", d.unit or "not recorded")
if p.outcome == "sepsis":
    cols[4].metric("Outcome", "Sepsis", help=f"onset {ui.fmt_time(p.onset_time)}")
    st.error(f"Outcome: sepsis, onset {ui.fmt_time(p.onset_time)}.")
elif p.outcome == "no_sepsis":
    cols[4].metric("Outcome", "No sepsis")
    st.success(f"Outcome: discharged without sepsis{', ' + ui.fmt_time(d.discharged_at) if d.discharged_at else ''}.")
else:
    cols[4].metric("Outcome", "not yet known")

if not d.timeline:
    st.info("No observations for this patient yet.")
    st.stop()

st.subheader("Risk over the stay")
risk = transforms.risk_frame(d.timeline)
layers = [alt.Chart(risk).mark_line(point=True).encode(
    x=alt.X("time:T", title="time (UTC)"),
    y=alt.Y("risk:Q", scale=alt.Scale(domain=[0, transforms.risk_axis_top(risk["risk"], threshold)]), title="risk"),
    tooltip=["time:T", alt.Tooltip("risk:Q", format=".3f")])]
if threshold is not None:
    layers.append(alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(color="#d50000", strokeDash=[6, 4])
                  .encode(y="threshold:Q"))
if d.alarms:
    marks = pd.DataFrame([{"time": a.raised_at, "risk": a.risk, "alarm": f"#{a.id} {a.state} ({a.verdict})"}
                          for a in d.alarms])
    layers.append(alt.Chart(marks).mark_point(shape="triangle-up", size=220, filled=True, color="#d50000")
                  .encode(x="time:T", y="risk:Q", tooltip=["alarm:N", "time:T", alt.Tooltip("risk:Q", format=".3f")]))
if p.onset_time is not None:
    layers.append(alt.Chart(pd.DataFrame({"onset": [p.onset_time]})).mark_rule(color="black", strokeWidth=2)
                  .encode(x="onset:T"))
st.altair_chart(alt.layer(*layers).properties(height=260), width="stretch")
st.caption("Dashed red line: alarm threshold. Red triangles: alarms raised. Black line: sepsis onset (once known).")

st.subheader("Measured vitals and labs")
vit = transforms.vitals_frame(d.timeline)
measured = transforms.measured_variables(d.timeline)
default = [v for v in measured if v in transforms.VITALS][:4] or measured[:4]
chosen = st.multiselect("Variables", measured, default=default, key="patient_vars")
if chosen:
    sub = vit[vit["variable"].isin(chosen)]
    chart = alt.Chart(sub).mark_line(point=True).encode(
        x=alt.X("time:T", title="time (UTC)"),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(format="~g")),
        detail="segment:N", tooltip=["variable:N", "time:T", "value:Q"],
    ).properties(height=110, width=780).facet(row=alt.Row("variable:N", title=None)).resolve_scale(y="independent")
    st.altair_chart(chart)
cov = transforms.coverage_frame(d.timeline)
st.caption("When each variable was measured (grey = not measured at that observation). Lines above break where a "
           "value is missing; nothing is filled in.")
st.altair_chart(alt.Chart(cov).mark_rect().encode(
    x=alt.X("hour:O", title="hours since the first observation", axis=alt.Axis(labelOverlap=True)),
    y=alt.Y("variable:N", sort=measured, title=None), tooltip=["variable:N", "time:T", "measured:N"],
    color=alt.Color("measured:N", scale=alt.Scale(domain=[True, False], range=["#1f77b4", "#e3e6ea"]),
                    legend=alt.Legend(title="measured"))).properties(height=14 * max(1, len(measured))), width="stretch")

if d.alarms:
    st.subheader("Alarms")
    st.dataframe(pd.DataFrame([{"id": a.id, "raised": ui.fmt_time(a.raised_at), "risk": round(a.risk, 3),
                                "state": a.state, "verdict": a.verdict, "acknowledged by": a.acknowledged_by,
                                "reason": a.ack_reason, "resolved by": a.resolved_by} for a in d.alarms]),
                 hide_index=True, width="stretch")
