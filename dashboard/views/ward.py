"""Ward: one tile per monitored patient, highest risk first, refreshing by itself."""
from __future__ import annotations

import math

import streamlit as st

from dashboard import tiles, transforms, ui

st.title("Ward")
s = ui.settings()
UNITS = ["All units", "MICU", "SICU", "other", "not recorded"]
c1, c3 = st.columns([3, 1])
unit = c1.selectbox("Unit", UNITS, key="ward_unit")
per_page = int(c3.number_input("Tiles per page", min_value=6, max_value=200, value=s.tiles_per_page, step=6,
                               key="ward_per_page"))


@st.fragment(run_every=s.refresh_s)
def ward() -> None:
    c = ui.client()
    with ui.guarded():
        ready = c.ready()
        patients = c.patients()
        active = c.alarms(state="active")
        clock = transforms.ward_clock(patients, ui.now())
        rows = transforms.ward_rows(patients, active, clock)
        cache = ui.detail_cache()
        units = {p.patient_id: p.unit for p in patients}  # the patient list carries each unit
        if unit != "All units":
            wanted = None if unit == "not recorded" else unit
            rows = [r for r in rows if units.get(r.patient_id) == wanted]
        loud = sum(transforms.alarm_is_loud(r, ui.now()) for r in rows)
        pages = max(1, math.ceil(len(rows) / per_page))
        page_no = int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="ward_page")) \
            if pages > 1 else 1
        shown = rows[(page_no - 1) * per_page: page_no * per_page]
        details = cache.get_many(c, {r.patient_id: r.n_observations for r in shown})

    m1, m2, m3 = st.columns(3)
    m1.metric("Monitored patients", len(rows))
    m2.metric("Open alarms", loud)
    m3.metric("Alarms in hand", sum(r.alarm_state is not None for r in rows) - loud,
              help="acknowledged, or snoozed and the snooze is still running")
    threshold = "?" if ready.threshold is None else f"{ready.threshold:.3f}"
    st.caption(f"Model {ready.model} v{ready.model_version}, alarm threshold {threshold}, "
               f"{ready.provider}")
    if not rows:
        st.info("No monitored patients" + ("" if unit == "All units" else f" in {unit}") + ".")
        return
    html = []
    for r in shown:
        d = details.get(r.patient_id)
        trend = transforms.trend(d.timeline) if d else []
        html.append(tiles.tile_html(r, trend, ready.threshold, transforms.alarm_is_loud(r, ui.now()),
                                    d.unit if d else units.get(r.patient_id)))
    st.html(tiles.ward_html(html))
    st.caption(f"Ward clock {ui.fmt_time(clock)} (the newest observation when the feed runs ahead of real time); "
               f"refreshes every {s.refresh_s:g} s. Tiles {(page_no - 1) * per_page + 1}-"
               f"{(page_no - 1) * per_page + len(shown)} of {len(rows)}.")


ward()
