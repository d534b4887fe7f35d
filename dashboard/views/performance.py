"""Performance: the numbers that decide alarm fatigue and whether the model stays switched on."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import charts, operating, transforms, ui

st.title("Model performance and alarm burden")
c = ui.client()
with ui.guarded():
    ready = c.ready()
    stats = c.stats()
    alarms = c.alarms(limit=10000)
    patients = c.patients()
    points = c.operating_points()
    periods = c.stats_periods()


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


threshold = "n/a" if ready.threshold is None else f"{ready.threshold:.1%}"
st.markdown(f"**Model** `{ready.model}` version `{ready.model_version}` · **model card threshold** {threshold} · "
            f"**execution provider** `{ready.provider}` · database {ready.database}")
ui.flash()
operating.section(c, points)
mixed = 0 if periods is None else transforms.mixed_thresholds(periods)
if mixed > 1:
    st.warning(f"The ward-wide figures below add {mixed} thresholds together (units at different points, or a "
               "point changed); read each operating-point period's own figures further down.")
# two rows of three: six metrics side by side truncate their values ("42.…") on a tablet
m = [*st.columns(3), *st.columns(3)]
m[0].metric("Alarms/patient-day", "n/a" if stats.alarms_per_patient_day is None else f"{stats.alarms_per_patient_day:.2f}",
            help=f"{stats.alarms} alarms over {stats.patient_days:.1f} patient-days")
m[1].metric("PPV", pct(stats.positive_predictive_value),
            help=f"true alarms / alarms of patients with an outcome ({stats.true_alarms}/{stats.alarms_with_outcome})")
m[2].metric("False alarms", stats.false_alarms)
m[3].metric("False-positive rate", pct(stats.false_positive_rate),
            help="patients discharged without sepsis who had an alarm / all such patients")
m[4].metric("Septic, alarmed", f"{stats.septic_patients_alarmed_in_time}/{stats.septic_patients}",
            help="septic patients with a true alarm (12 h before to 3 h after onset) / all septic patients")
m[5].metric("Median lead time", "n/a" if stats.median_lead_time_hours is None else f"{stats.median_lead_time_hours:.1f} h")
lo, hi = stats.window_hours
st.caption(f"A true alarm is raised {-lo:g} h before to {hi:g} h after sepsis onset; alarms of patients without an "
           "outcome are 'unknown' and left out of PPV.")
if len(alarms) == 10000:
    st.warning("Charts use the newest 10,000 alarms only; the headline numbers above cover all of them.")

st.subheader("Figures per operating-point period")
if periods is None:
    st.info("This service does not give figures per operating-point period (GET /stats/periods).")
else:
    st.dataframe(transforms.periods_frame(periods), hide_index=True, width="stretch")
    st.caption("A period is the span during which one unit's operating point was in force (the audit of point "
               "changes); it counts the alarms raised and the patient-hours observed in it on that unit's patients, "
               "so a stay spanning a change counts in each period with its part. Caught in window: an alarm from "
               "12 h before to 3 h after onset (or raised before and still open then); alarmed before onset is the "
               "older, second figure. Red share: patient-hours with an open alarm.")

left, right = st.columns(2)
with left:
    st.subheader("Alarm verdicts")
    counts = transforms.verdict_counts(alarms)
    vc = pd.DataFrame({"verdict": list(counts), "alarms": list(counts.values())})
    st.altair_chart(alt.Chart(vc).mark_bar().encode(
        x=alt.X("verdict:N", sort=["true", "false", "unknown"]), y="alarms:Q",
        color=alt.Color("verdict:N", scale=alt.Scale(domain=["true", "false", "unknown"],
                                                     range=["#2e7d32", "#d50000", "#9e9e9e"]), legend=None),
        tooltip=["verdict:N", "alarms:Q"]).properties(height=240), width="stretch")
with right:
    st.subheader("Lead time before onset")
    leads = transforms.lead_times(alarms, patients)
    if leads.empty:
        st.info("No septic patient with a true alarm yet: lead times appear once outcomes are recorded.")
    else:
        st.altair_chart(alt.Chart(leads).mark_bar().encode(
            x=alt.X("lead_time_hours:Q", bin=alt.Bin(step=1), title="hours from first true alarm to onset"),
            y=alt.Y("count():Q", title="septic patients", axis=alt.Axis(tickMinStep=1))).properties(height=240), width="stretch")
        st.caption(f"{len(leads)} septic patients; median {leads['lead_time_hours'].median():.1f} h "
                   "(negative: the first true alarm came after onset).")

st.subheader("Alarm burden over time")
bucket, burden = transforms.alarm_burden(alarms, patients)
if burden.empty:
    st.info("No observations yet.")
else:
    changes = transforms.period_changes(periods or [], burden["start"].iloc[0], burden["end"].iloc[-1])
    st.altair_chart(charts.burden_chart(bucket, burden, changes), width="stretch")
    st.caption(f"Bars: alarms raised in each {bucket}. Line: the same divided by the patient-days monitored in it. "
               + ("Purple rules: a unit's operating point or threshold changed there (an admin's choice, or a model "
                  "switch, named), the start of a period in the table above." if not changes.empty else
                  "No unit's operating point or threshold changed in this span."))
