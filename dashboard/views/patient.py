"""Patient: who (age, sex, unit, bed), the risk now in words, the alarm and what to do with it, the
latest values and bedside scores with their age, what drove the risk, vitals and risk on one time
axis, and the audit trail."""
from __future__ import annotations

import streamlit as st

from dashboard import charts, transforms, ui

c = ui.client()
with ui.guarded():
    summaries = c.patients(order="alarms_first")
if not summaries:
    st.title("Patient")
    st.info("No patients yet.")
    st.stop()

ids = [p.patient_id for p in summaries]
wanted = st.query_params.get("patient_id")
if wanted and wanted not in ids:
    st.warning(f"No patient {wanted!r} on the service; showing the first patient of the ward instead.")
    wanted = None
if wanted and wanted != st.session_state.get("_patient_shown"):
    st.session_state["patient_pick"] = wanted  # arrived by a link: show its patient, not the last one picked
if st.session_state.get("patient_pick") not in ids:
    st.session_state["patient_pick"] = ids[0]
st.title(f"Patient {st.session_state['patient_pick']}")
st.selectbox("Another patient (alarms first, then by risk)", ids, key="patient_pick")
pid = st.session_state["patient_pick"]
st.session_state["_patient_shown"] = pid
st.query_params["patient_id"] = pid
with ui.guarded():
    d = c.patient(pid)
    ready = c.ready()
    can_act = ui.may(c, "clinician")
ui.flash()
p = d.summary
threshold = d.threshold if d.threshold is not None else d.alarms[-1].threshold if d.alarms else ready.threshold
clock = max([ui.now(), *([p.last_observation] if p.last_observation else [])])

st.markdown(" · ".join(transforms.demographics(d)))
since = transforms.hours_since_measured(transforms.latest_of(d, clock))
limit = ui.settings().no_data_after(d.unit or p.unit)
if p.status != "discharged" and (since is None or since > limit):
    st.warning(("Nothing measured yet" if since is None else f"No recent data: nothing measured for {since:.1f} h")
               + f" (the limit is {limit:g} h): the model cannot alarm on values nobody posts.",
               icon=":material/signal_disconnected:")
risk_words = d.risk_in_words or transforms.risk_words(p.last_risk, threshold)
st.markdown(f"**Risk now:** {risk_words}")
if p.outcome == "sepsis":
    st.error(f"Outcome: sepsis, onset {ui.fmt_time(p.onset_time)}; in treatment."
             + (f" Discharged {ui.fmt_time(d.discharged_at)}." if d.discharged_at else ""))
elif p.outcome == "no_sepsis":
    st.success(f"Outcome: discharged without sepsis{', ' + ui.fmt_time(d.discharged_at) if d.discharged_at else ''}.")
else:
    st.caption("Outcome: not yet known.")

active = next((a for a in sorted(d.alarms, key=lambda a: -a.id) if a.state in transforms.ACTIVE_STATES), None)
if active is not None:
    st.subheader(f"Alarm #{active.id}: {active.state}")
    st.markdown(f"Raised {ui.fmt_time(active.raised_at)} at risk {active.risk:.1%} (threshold {active.threshold:.1%})"
                + (f"; snoozed until {ui.fmt_time(active.snoozed_until)} by {active.snoozed_by}"
                   if active.state == "snoozed" and active.snoozed_until else "")
                + (f"; acknowledged by {active.acknowledged_by} at {ui.fmt_time(active.acknowledged_at)}: "
                   f"{ui.REASONS.get(active.ack_reason, active.ack_reason)}" if active.state == "acknowledged" else "")
                + ".")
    if can_act:
        ui.alarm_actions(c, active.id, active.state, key=f"p{active.id}")
    else:
        ui.read_only_note()

if can_act and p.outcome is None:
    with st.expander("Record the outcome (resolves the patient's alarm; a recorded outcome cannot be changed)"):
        ui.outcome_form(c, pid)

if not d.timeline:
    st.info("No observations for this patient yet.")
else:
    st.subheader("Risk and vitals over the stay (one time axis)")
    measured = transforms.measured_variables(d.timeline)
    default = [v for v in measured if v in transforms.VITALS][:4] or measured[:4]
    chosen = st.multiselect("Variables", measured, default=default, key=f"patient_vars_{pid}")
    with st.container(gap=None, key="stay_chart"):
        for chart in charts.stay_charts(d, threshold, chosen):
            st.altair_chart(chart, width="stretch")
    st.caption("Top: risk, the dashed red line the alarm threshold, red triangles alarms, the black line sepsis onset "
               "(once known). Below: each chosen variable, its line broken where it was not measured (nothing is filled "
               "in); the bottom strip marks every observation that measured each variable.")

# the whole width: each value, its age and its critical range whole, also on a tablet
st.subheader("Latest values")
latest = transforms.latest_of(d, clock)
if latest:
    frame = transforms.latest_frame(latest)
    st.dataframe(frame.style.apply(transforms.critical_styles, axis=None), hide_index=True, width="stretch",
                 height=36 * (len(latest) + 1) + 4,  # every value in view, no inner scrolling
                 column_config={"critical": st.column_config.TextColumn(
                     "critical", help="the critical range the value falls in, and its source (dashboard/critical.py)")})
else:
    st.caption("Nothing measured yet.")
if doubtful := transforms.doubtful_values(d.timeline):
    st.warning("Charted outside the plausible range and scored as charted (check the value and its unit):\n\n"
               + "\n".join(f"- {line}" for line in doubtful))
st.subheader("What drove the risk")
latest_entry = d.timeline[-1] if d.timeline else None
why = latest_entry.contributions if latest_entry else []
if why:
    st.markdown(f"At {ui.fmt_time(latest_entry.timestamp)}, the inputs that moved the risk most (the change "
                "when each one's latest value is replaced by a normal value; and a sepsis-defining vital sign or "
                "lab not measured for more than 24 h, when a normal value measured now would lower the risk), by organ system "
                "beside its SOFA component:\n" + "\n".join(transforms.reasons_by_system(why, d.bedside)))
else:
    st.caption("No contributions stored for the latest risk.")
if active is not None and active.contributions:
    st.markdown(f"When alarm #{active.id} was raised:\n"
                + "\n".join(transforms.reasons_by_system(active.contributions)))

st.subheader("Bedside scores")
if d.bedside:
    st.markdown(transforms.bedside_summary(d.bedside))
    frame = transforms.bedside_frame(d.bedside)
    st.dataframe(frame, hide_index=True, width="stretch", height=36 * (len(frame) + 1) + 4,
                 column_config={"note": st.column_config.TextColumn(width="large")})
else:
    st.caption("This service does not send bedside scores for the patient.")

st.subheader("Alarms")
if d.alarms:
    st.dataframe(transforms.alarms_frame(d.alarms), hide_index=True, width="stretch",
                 column_config={"resolution": st.column_config.TextColumn(width="large")})
else:
    st.caption("No alarm for this patient.")

st.subheader("Audit trail")
if d.audit is None:
    st.caption("This service keeps no audit trail for patients: update the service.")
elif d.audit:
    st.dataframe(ui.audit_frame(d.audit), hide_index=True, width="stretch",
                 column_config={"note": st.column_config.TextColumn(width="large")})
else:
    st.caption("Nothing recorded yet.")
