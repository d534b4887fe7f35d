"""Alarm queue: the active alarms as cards, most urgent first (the service's order): bed and unit,
current risk and its trend, time open, latest vitals and labs with their age, what drove the risk;
acknowledge (with a chosen reason), snooze, resolve for a clinician key; who did what and when.
Refreshes by itself at the ward's interval."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import tiles, transforms, ui

PER_PAGE = 15  # each card carries three small forms; a long queue is worked through in pages
s = ui.settings()

st.title("Alarm queue")
include_ack = st.toggle("Also show acknowledged alarms (awaiting resolution)", value=True, key="queue_ack")


def unseen_section(rows: list[transforms.WardRow]) -> None:
    """Patients on the ward with nothing measured for hours: no alarm can come from them."""
    quiet = [r for r in rows if r.no_data]
    if not quiet:
        return
    treated = sum(r.status == "in_treatment" for r in quiet)
    with st.expander(f":orange[**{len(quiet)} patients on the ward without recent data ({treated} in treatment)**]"
                     f": nothing measured for over {ui.no_data_text(s)}, so the model cannot alarm for them"):
        st.dataframe(pd.DataFrame([{"patient": r.patient_id, "bed": r.bed or "", "unit": r.unit or "not recorded",
                                    "status": r.status.replace("_", " "),
                                    "last measured": transforms.fmt_age(r.hours_since) if r.hours_since is not None
                                    else "never"} for r in sorted(quiet, key=lambda r: (r.status != "in_treatment",
                                                                                           -(r.hours_since or 0)))]),
                     hide_index=True, width="stretch")


@st.fragment(run_every=s.refresh_s)
def queue_page() -> None:
    c = ui.client()
    with ui.guarded():
        queue = c.queue()
        patients = c.patients()
        can_act = ui.may(c, "clinician")
    ui.flash()
    if queue is None:
        st.warning("This service has no alarm queue (GET /alarms/queue): update the service. The cards need it.")
        return
    unseen_section(transforms.ward_rows(patients, [], queue.now, s.no_data_after, s.alarm_old_hours))
    cards = [k for k in queue.cards if include_ack or k.state != "acknowledged"]
    if not can_act:
        ui.read_only_note()
    pages = max(1, -(-len(cards) // PER_PAGE))
    if st.session_state.get("queue_page", 1) > pages:  # the queue shrank since the page was chosen
        st.session_state["queue_page"] = pages
    page_no = int(st.session_state.get("queue_page", 1))

    def loud(k) -> bool:
        return k.state == "open" or (k.state == "snoozed" and k.snoozed_until is not None
                                     and k.snoozed_until <= queue.now)

    note = transforms.pagination_note([loud(k) for k in cards], page_no, PER_PAGE, "unacknowledged alarms")
    head, pager = st.columns([5, 1], vertical_alignment="center")
    if pages > 1:
        pager.number_input(f"Page (of {pages})", min_value=1, max_value=pages, key="queue_page")
    if note:
        head.markdown(f":red[**{note}.**]" if "more on" in note else f"**{note}.**")
    over = sum(k.state == "snoozed" and loud(k) for k in cards)
    st.caption(f"{len(cards)} alarm(s), most urgent first: open, then acknowledged, then snoozed; within each the "
               f"highest current risk, then the longest open" + (f"; {over} snooze(s) run out" if over else "")
               + f". Times on the service clock ({queue.clock}), now {ui.fmt_time(queue.now)}; "
               f"refreshes every {s.refresh_s:g} s.")
    if not cards:
        st.success("No active alarms.")

    for k in cards[(page_no - 1) * PER_PAGE: page_no * PER_PAGE]:
        card(c, k, queue.now, can_act)

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


def card(c, k, now, can_act: bool) -> None:
    expired = k.state == "snoozed" and k.snoozed_until is not None and k.snoozed_until <= now
    label = {"open": ":red-background[:red[**OPEN**]]",
             "snoozed": ":red[**snooze over**]" if expired else ":orange[**snoozed**]",
             "acknowledged": ":orange[**acknowledged**]"}[k.state]
    again = transforms.alarm_kind_words(k.kind)
    if again:  # a re-alert says why it came back, and which alarm it follows
        label += f" · :violet-background[**{again}**]" + (f" (after alarm #{k.previous_alarm_id})"
                                                           if k.previous_alarm_id else "")
    where = " · ".join(x for x in (f"bed {k.bed}" if k.bed else None, k.unit or "unit not recorded") if x)
    since = transforms.hours_since_measured(k.latest)
    quiet = since is None or since > s.no_data_after(k.unit)
    with st.container(border=True):
        head, link = st.columns([5, 1])
        head.markdown(f"{label} · **{k.patient_id}** · {where} · alarm #{k.alarm_id} · open "
                      f"{transforms.fmt_duration(k.open_minutes)} (raised {ui.fmt_time(k.raised_at)})"
                      + (" · in treatment" if k.status == "in_treatment" else "")
                      + (" · :orange-background[**NO RECENT DATA**: "
                         + ("nothing measured yet" if since is None else f"nothing measured for {since:.1f} h")
                         + "]" if quiet else ""))
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
                    + f'<div style="font-size:0.8em;color:#44505c">last {len(k.trend)} risks; dashed: threshold '
                    f'{k.threshold:.1%}</div>')
        with values_col:
            if k.risk_in_words:
                st.markdown(f"**Risk in words** {k.risk_in_words}")
            st.markdown("  \n".join(transforms.latest_lines(k.latest)) if k.latest else "No measured values yet.")
            if k.bedside:
                st.caption(transforms.bedside_summary(k.bedside))
        with why_col:
            why = k.latest_contributions or k.contributions
            if why:
                # the SOFA components beside them only for the latest risk (the bedside scores are now's)
                st.markdown("**Behind the " + ("latest risk" if k.latest_contributions else "alarm") + "**\n"
                            + "\n".join(transforms.reasons_by_system(
                                why, k.bedside if k.latest_contributions else None)))
            else:
                st.caption("No contributions stored for this risk.")
        if can_act:
            ui.alarm_actions(c, k.alarm_id, k.state, key=str(k.alarm_id))


queue_page()
