"""Ward: one tile per monitored patient, unacknowledged alarms first, refreshing by itself."""
from __future__ import annotations

import math

import streamlit as st

from dashboard import tiles, transforms, ui

s = ui.settings()
UNITS = ["All units", "MICU", "SICU", "other", "not recorded"]
COLUMNS = 6
# title and filters on one row: at 1024x768 the first row of tiles must be on the first screen
title, c1, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
title.title("Ward")
unit = c1.selectbox("Unit", UNITS, key="ward_unit")
# ?per_page=N sets the page size for a wall display or a bookmark
per_page = int(c3.number_input("Tiles per page", min_value=1, max_value=200, step=6, key="ward_per_page",
                               value=ui.int_param("per_page", s.tiles_per_page, 1, 200)))


@st.fragment(run_every=s.refresh_s)
def ward() -> None:
    c = ui.client()
    with ui.guarded():
        ready = c.ready()
        patients = c.patients(order="alarms_first")
        active = c.alarms(state="active")
        counts = c.ward()
        points = c.operating_points()
        clock = counts.clock.now if counts else transforms.ward_clock(patients, ui.now())
        rows = transforms.ward_rows(patients, active, clock, s.no_data_after, s.alarm_old_hours)
        if unit != "All units":
            wanted = None if unit == "not recorded" else unit
            rows = [r for r in rows if r.unit == wanted]
        pages = max(1, math.ceil(len(rows) / per_page))
        if st.session_state.get("ward_page", 1) > pages:  # the ward shrank since the page was chosen
            st.session_state["ward_page"] = pages
        page_no = int(st.session_state.get("ward_page", 1))
        shown = rows[(page_no - 1) * per_page: page_no * per_page]
        details = ui.detail_cache().get_many(c, {r.patient_id: r.n_observations for r in shown})

    threshold = ready.threshold

    def threshold_of(r: transforms.WardRow) -> float | None:
        return points.threshold_for(r.unit) if points else threshold

    loud = [transforms.alarm_is_loud(r, clock) for r in rows]
    quiet = [r.no_data for r in rows]
    notes = [n for n in (transforms.pagination_note(loud, page_no, per_page),
                         transforms.pagination_note(quiet, page_no, per_page, "patients without recent data"))
             if n]
    where = "" if unit == "All units" else (
        f"{unit}: {len(rows)} patients, {sum(loud)} unacknowledged alarms, "
        f"{sum(r.alarm_state in ('acknowledged', 'snoozed') and not l for r, l in zip(rows, loud))} in hand. ")
    head, pager = st.columns([5, 1], vertical_alignment="center")
    if pages > 1:
        pager.number_input(f"Page (of {pages})", min_value=1, max_value=pages, key="ward_page")
    text = where + ("; ".join(notes) + "." if notes else "")
    if text:
        more = any("more on" in n for n in notes)
        head.markdown(f":red[**{text}**]" if more else text)
    st.html(tiles.CSS)  # before the tiles: style only, it takes no room
    if not rows:
        st.info("No monitored patients" + ("" if unit == "All units" else f" in {unit}") + ".")
        return
    for start in range(0, len(shown), COLUMNS):
        for col, r in zip(st.columns(COLUMNS), shown[start:start + COLUMNS]):
            d = details.get(r.patient_id)
            trend = transforms.trend(d.timeline) if d else []
            with col:
                t = threshold_of(r)
                st.html(tiles.tile_html(r, trend, t, transforms.tile_look(r, t, clock), r.unit))
                st.page_link("views/patient.py", label="Patient page", icon=":material/open_in_new:",
                             query_params=ui.link_params(patient_id=r.patient_id))
    clock_words = ("the service clock, simulated: the feed's time" if counts and counts.clock.mode == "simulated"
                   else "the service clock" if counts else
                   "the newest observation when the feed runs ahead of real time")
    st.caption(f"Ward clock {ui.fmt_time(clock)} ({clock_words}); refreshes every {s.refresh_s:g} s. "
               f"Tiles {(page_no - 1) * per_page + 1}-{(page_no - 1) * per_page + len(shown)} of {len(rows)}: "
               "unacknowledged alarms first, then patients in treatment without recent data, alarms in hand, "
               "other patients without recent data, then by risk. Model "
               f"{ready.model} v{ready.model_version}, {ready.provider}; alarm threshold "
               + ui.thresholds_text(points, threshold) + ". No recent data: nothing measured for "
               + ui.no_data_text(s) + f"; an alarm is old after {s.alarm_old_hours:g} h.")
    st.html(tiles.legend_html(transforms.COLOUR_RULE))


ward()
