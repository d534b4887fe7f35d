"""Entry script: `streamlit run dashboard/app.py` (or `python -m dashboard`)."""
from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts only this folder on sys.path; the pages import the package by name.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import streamlit as st  # noqa: E402

from dashboard import ui  # noqa: E402

st.set_page_config(page_title="Sepsis alarms", page_icon=":material/notifications_active:", layout="wide")
ui.sidebar()
ui.layout()
WARD = st.Page("views/ward.py", title="Ward", icon=":material/bed:", url_path="ward")


def _home() -> None:
    # Streamlit serves the default page at "/" only (its url_path is ignored), so the ward is a page
    # of its own at /ward and "/" forwards there, keeping the query parameters.
    st.switch_page(WARD, query_params=st.query_params.to_dict())


page = st.navigation([
    st.Page(_home, title="Home", url_path="home", default=True, visibility="hidden"),
    WARD,
    st.Page("views/patient.py", title="Patient", icon=":material/monitor_heart:", url_path="patient"),
    st.Page("views/alarms.py", title="Alarm queue", icon=":material/notifications_active:", url_path="alarms"),
    st.Page("views/performance.py", title="Performance", icon=":material/bar_chart:", url_path="performance"),
])
ui.alarm_counts()  # at the top of every page; after st.navigation, which its link to the queue needs
page.run()
