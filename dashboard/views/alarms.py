"""Alarm queue: open and snoozed alarms, oldest first; acknowledge with a reason, snooze, resolve;
and the log of who did what and when."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import transforms, ui

REASONS = {"confirmed": "Confirmed: sepsis suspected, acting on it", "false_alarm": "False alarm",
           "already_treated": "Already being treated"}

st.title("Alarm queue")
c = ui.client()
include_ack = st.toggle("Also show acknowledged alarms (awaiting resolution)", key="queue_ack")
states = ("open", "snoozed", "acknowledged") if include_ack else ("open", "snoozed")
with ui.guarded():
    alarms = c.alarms(state="active")
queue = transforms.alarm_queue(alarms, states)
now = ui.now()
PER_PAGE = 20  # each alarm carries three forms; a long queue is worked through in pages
pages = max(1, -(-len(queue) // PER_PAGE))
page_no = int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="queue_page")) \
    if pages > 1 else 1
st.caption(f"{len(queue)} alarm(s), oldest first" + (f"; showing {(page_no - 1) * PER_PAGE + 1}-"
           f"{min(len(queue), page_no * PER_PAGE)}." if pages > 1 else "."))
if flash := st.session_state.pop("queue_flash", None):
    st.success(flash)

user = (st.session_state.get("user_name") or "").strip()
for a in queue[(page_no - 1) * PER_PAGE: page_no * PER_PAGE]:
    expired = a.state == "snoozed" and a.snoozed_until is not None and a.snoozed_until <= now
    label = {"open": ":red-background[:red[**OPEN**]]",
             "snoozed": ":red[**snooze over**]" if expired else ":orange[**snoozed**]",
             "acknowledged": ":orange[**acknowledged**]"}[a.state]
    with st.container(border=True):
        head, link = st.columns([5, 1])
        head.markdown(f"{label} · alarm #{a.id} · patient **{a.patient_id}** · risk {a.risk:.0%} "
                      f"(threshold {a.threshold:.0%}) · raised {ui.fmt_time(a.raised_at)}")
        link.page_link("views/patient.py", label="patient", query_params={"patient_id": a.patient_id})
        if a.state == "snoozed" and a.snoozed_until:
            st.caption(f"snoozed until {ui.fmt_time(a.snoozed_until)}")
        if a.state == "acknowledged":
            st.caption(f"acknowledged by {a.acknowledged_by} at {ui.fmt_time(a.acknowledged_at)}: {a.ack_reason}"
                       + (f" ({a.ack_note})" if a.ack_note else ""))
        ack, snooze, resolve = st.columns(3)
        with ack.form(f"ack_{a.id}", border=False):
            reason = st.selectbox("Reason", list(REASONS), format_func=REASONS.get, key=f"reason_{a.id}",
                                  disabled=a.state == "acknowledged")
            note = st.text_input("Note (optional)", key=f"note_{a.id}", disabled=a.state == "acknowledged")
            do_ack = st.form_submit_button("Acknowledge", key=f"do_ack_{a.id}", disabled=a.state == "acknowledged")
        with snooze.form(f"snooze_{a.id}", border=False):
            minutes = st.number_input("Snooze minutes", min_value=5, max_value=7 * 24 * 60, value=60, step=15,
                                      key=f"minutes_{a.id}")
            do_snooze = st.form_submit_button("Snooze", key=f"do_snooze_{a.id}")
        with resolve.form(f"resolve_{a.id}", border=False):
            rnote = st.text_input("Resolution note (optional)", key=f"rnote_{a.id}")
            do_resolve = st.form_submit_button("Resolve", key=f"do_resolve_{a.id}")
        if do_ack or do_snooze or do_resolve:
            if not user:
                st.error("Enter your name in the sidebar first: every action records who did it.")
            else:
                with ui.guarded():
                    if do_ack:
                        c.acknowledge(a.id, user, reason, note or None)
                        done = f"Alarm #{a.id} acknowledged ({reason}) by {user}."
                    elif do_snooze:
                        c.snooze(a.id, user, float(minutes))
                        done = f"Alarm #{a.id} snoozed for {minutes:g} min by {user}."
                    else:
                        c.resolve(a.id, user, rnote or None)
                        done = f"Alarm #{a.id} resolved by {user}."
                st.session_state["queue_flash"] = done
                st.rerun()

st.subheader("Who did what")
with ui.guarded():
    history = [a for a in c.alarms(limit=500) if a.acknowledged_at or a.resolved_at or a.state == "snoozed"]
events = []
for a in history:
    if a.acknowledged_at:
        events.append({"when": a.acknowledged_at, "alarm": a.id, "patient": a.patient_id, "action": f"acknowledged: {a.ack_reason}",
                       "by": a.acknowledged_by, "note": a.ack_note})
    if a.state == "snoozed" and a.snoozed_until:
        events.append({"when": None, "alarm": a.id, "patient": a.patient_id,
                       "action": f"snoozed until {ui.fmt_time(a.snoozed_until)}", "by": None, "note": None})
    if a.resolved_at:
        events.append({"when": a.resolved_at, "alarm": a.id, "patient": a.patient_id, "action": "resolved",
                       "by": a.resolved_by, "note": None})
if events:
    df = pd.DataFrame(events).sort_values("when", ascending=False, na_position="first")
    df["when"] = df["when"].map(lambda t: ui.fmt_time(t) if pd.notna(t) else "")
    st.dataframe(df, hide_index=True, width="stretch")
else:
    st.caption("No alarm has been acted on yet.")
