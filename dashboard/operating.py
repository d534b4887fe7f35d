"""The performance page's operating points: the measured thresholds with their trade-off, each
unit's current choice, and the admin's form to change it (PUT /units/{unit}/operating-point)."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import transforms, ui
from dashboard.client import ApiError, OperatingPoints, ServiceClient


def points_frame(table: dict) -> pd.DataFrame:
    """One row per operating point and split (validation, then test): its threshold and figures.
    Long, not one wide row per point: eleven columns scroll sideways even at 1440 px. (The form
    below names the points by label too.)"""
    def pct(x):
        return "not measured" if x is None else f"{x:.1%}"

    def num(x, unit=""):
        return "not measured" if x is None else f"{transforms.fmt_number(x)}{unit}"

    rows = []
    for p in table.get("points", []):
        for split in ("validation", "test"):
            f = p.get(split) or {}
            rows.append({"operating point": p["label"], "threshold": f"{p['threshold']:.2%}",
                         "split": split, "sensitivity": pct(f.get("sensitivity")), "PPV": pct(f.get("ppv")),
                         "alarms/patient-day": num(f.get("alarms_per_patient_day")),
                         "median lead time": num(f.get("median_lead_time_hours"), " h")})
    return pd.DataFrame(rows, columns=["operating point", "threshold", "split", "sensitivity", "PPV",
                                       "alarms/patient-day", "median lead time"])


def tradeoff_frame(table: dict, points: OperatingPoints) -> pd.DataFrame:
    chosen = {}
    for u in points.units:
        if u.point_id:
            chosen.setdefault(u.point_id, []).append(u.unit)
    rows = []
    for p in table.get("points", []):
        for split in ("validation", "test"):
            f = p.get(split) or {}
            if f.get("alarms_per_patient_day") is None or f.get("sensitivity") is None:
                continue
            rows.append({"point": p["label"], "label": f"{p['threshold']:.1%}", "id": p["id"], "split": split,
                         "threshold": p["threshold"],
                         "alarms_per_patient_day": f["alarms_per_patient_day"], "sensitivity": f["sensitivity"],
                         "ppv": f.get("ppv"), "chosen by": ", ".join(chosen.get(p["id"], [])) or "none"})
    return pd.DataFrame(rows, columns=["point", "label", "id", "split", "threshold", "alarms_per_patient_day", "sensitivity",
                                       "ppv", "chosen by"])


def units_frame(points: OperatingPoints) -> pd.DataFrame:
    return pd.DataFrame([{"unit": u.unit, "operating point": u.label or (u.point_id or "model card threshold"),
                          "threshold": f"{u.threshold:.2%}", "chosen by": u.chosen_by or "",
                          "chosen at": ui.fmt_time(u.chosen_at), "reason": u.note or ""} for u in points.units])


def section(c: ServiceClient, points: OperatingPoints | None) -> None:
    st.subheader("Operating points")
    if points is None:
        st.info("This service does not serve operating points (GET /operating-points): update the service.")
        return
    st.markdown("**Threshold in force per unit**")
    st.dataframe(units_frame(points), hide_index=True, width="stretch")
    if not points.table:
        st.info(f"Model {points.model} v{points.model_version} ships no measured operating points; every unit alarms "
                f"at the model card's threshold ({points.card_threshold:.2%}).")
        return
    table = points.table
    st.dataframe(points_frame(table), hide_index=True, width="stretch")
    trade = tradeoff_frame(table, points)
    if not trade.empty:
        base = alt.Chart(trade).encode(
            x=alt.X("alarms_per_patient_day:Q", title="alarms per patient-day", axis=alt.Axis(format=",.2~f")),
            y=alt.Y("sensitivity:Q", title="sensitivity (septic stays alarmed in time)", axis=alt.Axis(format=".0%"),
                    scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("split:N", scale=alt.Scale(domain=["validation", "test"], range=["#1565c0", "#9e9e9e"])),
            tooltip=["point:N", "split:N", alt.Tooltip("threshold:Q", format=".2%"),
                     alt.Tooltip("alarms_per_patient_day:Q", format=",.2~f"), alt.Tooltip("sensitivity:Q", format=".1%"),
                     alt.Tooltip("ppv:Q", format=".1%"), "chosen by:N"])
        chart = alt.layer(base.mark_line(point=True).encode(detail="split:N", order="threshold:Q"),
                          base.mark_text(align="left", dx=6, dy=8, fontSize=10).encode(text="label:N")
                          .transform_filter(alt.datum.split == "validation"))
        st.altair_chart(chart.properties(height=300), width="stretch")
        st.caption("The trade-off: each point is a threshold chosen on validation (labelled with it; hover for its "
                   "name); more alarms per patient-day buy more septic stays alarmed in time. Grey: the same "
                   "thresholds on the test split.")
    if table.get("definitions"):
        with st.expander("How these figures were measured"):
            st.markdown("\n".join(f"- **{k}**: {v}" for k, v in table["definitions"].items()))
    if not ui.may(c, "admin"):
        st.caption("Only an admin key can change a unit's operating point.")
        return
    with st.form("operating_point", border=True):
        st.markdown("**Change a unit's operating point** (admin; recorded in the audit trail)")
        ids = [p["id"] for p in table.get("points", [])]
        labels = {p["id"]: f"{p['label']} (threshold {p['threshold']:.2%})" for p in table.get("points", [])}
        unit = st.selectbox("Unit", [u.unit for u in points.units], index=None, placeholder="Choose a unit",
                            key="op_unit")
        point = st.selectbox("Operating point", ids, index=None, format_func=labels.get,
                             placeholder="Choose an operating point", key="op_point")
        note = st.text_input("Reason (required)", key="op_note")
        submitted = st.form_submit_button("Change operating point", key="op_submit")
    if submitted:
        user = ui.user_name()
        missing = [what for what, v in (("your name in the sidebar", user), ("a unit", unit), ("an operating point", point),
                                        ("a reason", note.strip())) if not v]
        if missing:
            st.error("Nothing changed: give " + ", ".join(missing) + ".")
            return
        try:
            c.set_operating_point(unit, point, user, note.strip())
        except ApiError as err:
            if err.kind == "forbidden":
                ui.refused(c, "admin")
            ui.flash(err.message, "error")
            st.rerun()
        ui.flash(f"{unit} now alarms at {labels[point]}, chosen by {user}.")
        st.rerun()
