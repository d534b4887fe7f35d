"""Alarm queue: the active alarms as cards, most urgent first (the service's order): bed and unit,
current risk and its trend, time open, latest vitals and labs with their age, what drove the risk;
acknowledge (with a chosen reason), snooze, resolve for a clinician key; who did what and when."""
from __future__ import annotations

import streamlit as st

from dashboard import tiles, transforms, ui

PER_PAGE = 15  # each card carries three small forms; a long queue is worked through in pages

st.title("Alarm queue")
c = ui.client()
with ui.guarded():
    queue = c.queue()
    counts = c.ward()
    can_act = ui.may(c, "clinician")
ui.flash()
if queue is None:
    st.warning("This service has no alarm queue (GET /alarms/queue): update the service. The cards need it.")
    st.stop()

over = sum(k.state == "snoozed" and k.snoozed_until is not None and k.snoozed_until <= queue.now for k in queue.cards)
ui.ward_counts(counts, [], "All units", queue.now, over=over)
include_ack = st.toggle("Also show acknowledged alarms (awaiting resolution)", value=True, key="queue_ack")
cards = [k for k in queue.cards if include_ack or k.state != "acknowledged"]
if not can_act:
    ui.read_only_note()
pages = max(1, -(-len(cards) // PER_PAGE))
page_no = int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="queue_page")) \
    if pages > 1 else 1
st.caption(f"{len(cards)} alarm(s), most urgent first: open, then acknowledged, then snoozed; within each the "
           f"highest current risk, then the longest open. Times on the service clock ({queue.clock}), "
           f"now {ui.fmt_time(queue.now)}.")
if not cards:
    st.success("No active alarms.")

for k in cards[(page_no - 1) * PER_PAGE: page_no * PER_PAGE]:
    expired = k.state == "snoozed" and k.snoozed_until is not None and k.snoozed_until <= queue.now
    label = {"open": ":red-background[:red[**OPEN**]]",
             "snoozed": ":red[**snooze over**]" if expired else ":orange[**snoozed**]",
             "acknowledged": ":orange[**acknowledged**]"}[k.state]
    where = " · ".join(x for x in (f"bed {k.bed}" if k.bed else None, k.unit or "unit not recorded") if x)
    with st.container(border=True):
        head, link = st.columns([5, 1])
        head.markdown(f"{label} · **{k.patient_id}** · {where} · alarm #{k.alarm_id} · open "
                      f"{transforms.fmt_duration(k.open_minutes)} (raised {ui.fmt_time(k.raised_at)})"
                      + (" · in treatment" if k.status == "in_treatment" else ""))
        link.page_link("views/patient.py", label="Patient page", icon=":material/open_in_new:",
                       query_params=ui.link_params(patient_id=k.patient_id))
        if k.state == "snoozed" and k.snoozed_until:
            st.caption(f"snoozed until {ui.fmt_time(k.snoozed_until)}")
        if k.state == "acknowledged":
            st.caption(f"acknowledged by {k.acknowledged_by} at {ui.fmt_time(k.acknowledged_at)}: "
                       f"{ui.REASONS.get(k.ack_reason, k.ack_reason)}")
        risk_col, values_col, why_col = st.columns([1.2, 2.4, 1.8])
        with risk_col:
            st.metric("Risk now", "not scored" if k.risk is None else f"{k.risk:.1%}",
                      delta=None if k.risk is None else f"{(k.risk - k.risk_at_raise) * 100:+.1f} points since raised",
                      delta_color="inverse",
                      help=f"{k.risk_at_raise:.1%} when raised; alarm threshold {k.threshold:.1%}")
            st.html(tiles.sparkline_img(k.trend, k.threshold, "#1b2733")
                    + f'<div style="font-size:0.8em;color:#44505c">last {len(k.trend)} risks; dashed: threshold</div>')
        with values_col:
            if k.risk_in_words:
                st.markdown(f"**Risk in words** {k.risk_in_words}")
            st.markdown("  \n".join(transforms.latest_lines(k.latest)) if k.latest else "No measured values yet.")
            if k.bedside:
                st.caption(transforms.bedside_summary(k.bedside))
        with why_col:
            why = k.latest_contributions or k.contributions
            if why:
                st.markdown("**Behind the " + ("latest risk" if k.latest_contributions else "alarm") + "**\n"
                            + "\n".join(f"- {transforms.contribution_text(x)}" for x in why))
            else:
                st.caption("No contributions stored for this risk.")
        if can_act:
            ui.alarm_actions(c, k.alarm_id, k.state, key=str(k.alarm_id))

st.subheader("Who did what")
with ui.guarded():
    events = c.audit(limit=300)
if events is None:
    st.caption("This service keeps no audit trail (GET /audit): update the service.")
elif events:
    st.dataframe(ui.audit_frame(events), hide_index=True, width="stretch",
                 column_config={"note": st.column_config.TextColumn(width="large")})
else:
    st.caption("No alarm has been acted on yet.")
