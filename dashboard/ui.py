"""Streamlit glue shared by the pages: the connection sidebar, the client, error display and the
per-patient detail cache. Kept thin; the logic lives in client.py and transforms.py."""
from __future__ import annotations

import contextlib
import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import streamlit as st

from dashboard.client import ApiError, PatientDetail, ServiceClient
from dashboard.config import DashboardSettings

UTC = dt.timezone.utc


def settings() -> DashboardSettings:
    if "_settings" not in st.session_state:
        st.session_state["_settings"] = DashboardSettings.from_env()
    return st.session_state["_settings"]


def sidebar() -> None:
    """Connection and identity, on every page (the entry script draws it before the page)."""
    s = settings()
    with st.sidebar:
        st.text_input("Service address", value=s.api_url, key="api_url")
        st.text_input("API key", value=s.api_key, key="api_key", type="password",
                      help="A viewer key shows everything; acting on alarms needs a clinician key.")
        st.text_input("Your name (recorded with actions)", key="user_name")


def client() -> ServiceClient:
    s = settings()
    url = st.session_state.get("api_url") or s.api_url
    key = st.session_state.get("api_key") if "api_key" in st.session_state else s.api_key
    return ServiceClient(url, key, timeout_s=s.timeout_s)


@contextlib.contextmanager
def guarded():
    """Show an ApiError as a message and stop the page (never a stack trace)."""
    try:
        yield
    except ApiError as err:
        if err.kind in ("auth", "forbidden"):
            st.error(err.message, icon=":material/key_off:")
        elif err.kind in ("unreachable", "timeout"):
            st.error(err.message, icon=":material/cloud_off:")
        else:
            st.error(err.message)
        st.stop()


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


class DetailCache:
    """Patient details keyed by (service, patient), reused while the observation count is
    unchanged: the ward redraws every few seconds and most patients have nothing new."""

    def __init__(self, max_entries: int = 4000):
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], tuple[int, PatientDetail]] = {}
        self.max_entries = max_entries

    def get_many(self, c: ServiceClient, wanted: dict[str, int], workers: int = 8) -> dict[str, PatientDetail]:
        """wanted: patient_id -> current n_observations. Fetches what is missing or stale."""
        out, stale = {}, []
        with self._lock:
            for pid, n in wanted.items():
                hit = self._items.get((c.base_url, pid))
                if hit is not None and hit[0] == n:
                    out[pid] = hit[1]
                else:
                    stale.append(pid)
        if stale:
            with ThreadPoolExecutor(min(workers, len(stale))) as pool:
                fetched = list(pool.map(c.patient, stale))
            with self._lock:
                if len(self._items) + len(fetched) > self.max_entries:
                    self._items.clear()
                for d in fetched:
                    self._items[(c.base_url, d.summary.patient_id)] = (d.summary.n_observations, d)
                    out[d.summary.patient_id] = d
        return out


@st.cache_resource
def detail_cache() -> DetailCache:
    return DetailCache()


def fmt_time(t: dt.datetime | None) -> str:
    return "" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
