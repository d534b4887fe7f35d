"""Streamlit glue shared by the pages: the connection sidebar, the client, error display and the
per-patient detail cache. Kept thin; the logic lives in client.py and transforms.py."""
from __future__ import annotations

import contextlib
import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import streamlit as st

from dashboard import transforms
from dashboard.client import ApiError, PatientDetail, ServiceClient
from dashboard.config import DashboardSettings

UTC = dt.timezone.utc


def settings() -> DashboardSettings:
    if "_settings" not in st.session_state:
        st.session_state["_settings"] = DashboardSettings.from_env()
    return st.session_state["_settings"]


NAME_KEPT = "_user_name"   # survives pages where the widget is not drawn; the widget's own key may not
NAME_PARAM = "user"        # the query parameter that carries the name across a reload


def _keep_name() -> None:
    st.session_state[NAME_KEPT] = (st.session_state.get("user_name") or "").strip()


def sidebar() -> None:
    """Connection and identity, on every page (the entry script draws it before the page). The
    name lives in session state and, as a fallback for a reload or a shared link, in the URL."""
    s = settings()
    if NAME_KEPT not in st.session_state:
        st.session_state[NAME_KEPT] = (st.query_params.get(NAME_PARAM) or "").strip()
    if "user_name" not in st.session_state:
        st.session_state["user_name"] = st.session_state[NAME_KEPT]
    with st.sidebar:
        st.text_input("Service address", value=s.api_url, key="api_url")
        st.text_input("API key", value=s.api_key, key="api_key", type="password",
                      help="A viewer key shows everything; acting on alarms needs a clinician key.")
        st.text_input("Your name (recorded with actions)", key="user_name", on_change=_keep_name)
    _keep_name()
    name = user_name()
    if name and st.query_params.get(NAME_PARAM) != name:
        st.query_params[NAME_PARAM] = name


def int_param(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high], else `default` (a bad URL is not an error)."""
    try:
        value = int(st.query_params.get(name, default))
    except ValueError:
        return default
    return value if low <= value <= high else default


def user_name() -> str:
    return st.session_state.get(NAME_KEPT, "")


def link_params(**params) -> dict:
    """Query parameters for a page link: the target's own plus the user's name."""
    name = user_name()
    return {**params, **({NAME_PARAM: name} if name else {})}


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


# Page-wide layout. Narrower than LAYOUT_NARROW_PX (a tablet, a small laptop) the sidebar is
# collapsed once per browser tab: Streamlit collapses it itself only below 768 px, and beside the
# page it leaves too little width for the tiles and charts. The user can open it again (its arrow).
LAYOUT_NARROW_PX = 1100
LAYOUT = f"""
<style>
[data-testid="stMainBlockContainer"]{{padding-top:2.5rem;padding-bottom:2rem}}
[data-testid="stMetricValue"] div{{white-space:normal;overflow:visible;text-overflow:clip}}
.counts{{font-family:sans-serif;font-size:0.95em;padding:4px 10px;border-radius:6px;background:#eef2f5;color:#1b2733}}
.counts.loud{{background:#d50000;color:#fff}}
</style>
<script>
(function () {{
  if (window.innerWidth > {LAYOUT_NARROW_PX} || sessionStorage.getItem("sepsis-sidebar-collapsed")) return;
  sessionStorage.setItem("sepsis-sidebar-collapsed", "1");
  (function collapse(tries) {{
    const button = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (button) button.click(); else if (tries > 0) setTimeout(() => collapse(tries - 1), 200);
  }})(25);
}})();
</script>
"""


def layout() -> None:
    st.html(LAYOUT, unsafe_allow_javascript=True)


def counts_html(counts) -> str:
    """The alarm counts every page shows (GET /ward: the whole ward, on the service clock)."""
    loud = " loud" if counts.open else ""
    clock = "simulated: the feed's time" if counts.clock.mode == "simulated" else counts.clock.mode
    return (f'<div class="counts{loud}" data-open="{counts.open}" data-acknowledged="{counts.acknowledged}" '
            f'data-snoozed="{counts.snoozed}" data-on-ward="{counts.on_ward}">'
            f"<b>{counts.open} open alarm{'s' if counts.open != 1 else ''}</b> &middot; {counts.acknowledged} "
            f"acknowledged &middot; {counts.snoozed} snoozed &middot; {counts.on_ward} patients on the ward "
            f"({counts.in_treatment} in treatment) &middot; service clock {fmt_time(counts.clock.now)} ({clock})</div>")


def alarm_counts() -> None:
    """The open-alarm count at the top of every page, from one call (GET /ward), refreshing at the
    ward's interval; a failure says so in one line and leaves the page itself to report it."""
    @st.fragment(run_every=settings().refresh_s)
    def counts_line() -> None:
        try:
            counts = client().ward()
        except ApiError as err:
            st.caption(f"Alarm counts unavailable: {err.message}")
            return
        if counts is None:
            st.caption("This service has no GET /ward: the alarm counts need it.")
            return
        line, link = st.columns([6, 1], vertical_alignment="center")
        line.html(counts_html(counts))
        link.page_link("views/alarms.py", label="Alarm queue", icon=":material/notifications_active:",
                       query_params=link_params())

    counts_line()


def no_data_text(s: DashboardSettings) -> str:
    """'6 h (MICU 4 h)': the no-recent-data limit, and the units that have their own."""
    own = ", ".join(f"{unit} {hours:g} h" for unit, hours in sorted(s.no_data_hours_by_unit.items()))
    return f"{s.no_data_hours:g} h" + (f" ({own})" if own else "")


def thresholds_text(points, card_threshold: float | None) -> str:
    if points is None:
        return "?" if card_threshold is None else f"{card_threshold:.1%}"
    return ", ".join(f"{u.unit} {u.threshold:.1%}" + (f" ({u.label})" if u.label else "") for u in points.units)


def fmt_time(t: dt.datetime | None) -> str:
    return "" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- permissions and the alarm actions (the queue and the patient page) --------------------------

REASONS = {"confirmed": "Confirmed: sepsis suspected, acting on it", "false_alarm": "False alarm",
           "already_treated": "Already being treated"}
SNOOZE_MINUTES = [15, 30, 60, 120, 240, 480]


def may(c: ServiceClient, permission: str) -> bool:
    """Whether the key in use may act ("clinician") or choose operating points ("admin"); asked once
    per key and session. A 403 on an action later marks it as not allowed (`refused`)."""
    cache = st.session_state.setdefault("_may", {})
    k = (c.base_url, c.key, permission)
    if k not in cache:
        try:
            cache[k] = c.may(permission)
        except ApiError:
            cache[k] = False
    return cache[k]


def refused(c: ServiceClient, permission: str) -> None:
    st.session_state.setdefault("_may", {})[(c.base_url, c.key, permission)] = False


def read_only_note(permission: str = "clinician") -> None:
    what = "act on alarms" if permission == "clinician" else "choose a unit's operating point"
    st.info(f"This API key can read but not {what} (it is not a {permission} key), so the action buttons are "
            "hidden. Enter a key with that role in the sidebar to act.", icon=":material/lock:")


def flash(text: str | None = None, kind: str = "success") -> None:
    """Keep a message for the next run (an action reruns the page), or show the kept one."""
    if text is not None:
        st.session_state["_flash"] = (kind, text)
        return
    kept = st.session_state.pop("_flash", None)
    if kept:
        getattr(st, kept[0])(kept[1])


def alarm_actions(c: ServiceClient, alarm_id: int, state: str, key: str) -> None:
    """Acknowledge (a reason must be chosen: there is no default), snooze, resolve. Call only when
    `may(c, "clinician")`; a refusal shows one message and hides the buttons from then on."""
    ack, snooze, resolve = st.columns(3)
    with ack.form(f"ack_{key}", border=False):
        reason = st.selectbox("Reason", list(REASONS), index=None, format_func=REASONS.get, key=f"reason_{key}",
                              placeholder="Choose a reason", disabled=state == "acknowledged")
        note = st.text_input("Note (optional)", key=f"note_{key}", disabled=state == "acknowledged")
        do_ack = st.form_submit_button("Acknowledge", key=f"do_ack_{key}", disabled=state == "acknowledged")
    with snooze.form(f"snooze_{key}", border=False):
        minutes = st.selectbox("Snooze for", SNOOZE_MINUTES, index=2, key=f"minutes_{key}",
                               format_func=lambda m: f"{m} min" if m < 60 else f"{m // 60} h")
        do_snooze = st.form_submit_button("Snooze", key=f"do_snooze_{key}")
    with resolve.form(f"resolve_{key}", border=False):
        rnote = st.text_input("Resolution note (optional)", key=f"rnote_{key}")
        do_resolve = st.form_submit_button("Resolve", key=f"do_resolve_{key}")
    if not (do_ack or do_snooze or do_resolve):
        return
    user = user_name()
    if not user:
        st.error("Enter your name in the sidebar first: every action records who did it.")
        return
    if do_ack and reason is None:
        st.error("Choose a reason before acknowledging: nothing was recorded.")
        return
    try:
        if do_ack:
            c.acknowledge(alarm_id, user, reason, note or None)
            done = f"Alarm #{alarm_id} acknowledged ({REASONS[reason]}) by {user}."
        elif do_snooze:
            c.snooze(alarm_id, user, float(minutes))
            done = f"Alarm #{alarm_id} snoozed for {minutes} min by {user}."
        else:
            c.resolve(alarm_id, user, rnote or None)
            done = f"Alarm #{alarm_id} resolved by {user}."
    except ApiError as err:
        if err.kind == "forbidden":
            refused(c, "clinician")
        flash(err.message, "error")
        st.rerun()
    flash(done)
    st.rerun()


def audit_frame(events) -> "pd.DataFrame":
    """Who did what, when (the service clock), with the note; newest first."""
    import pandas as pd

    rows = [{"when": fmt_time(e.at), "action": e.action.replace("_", " "), "alarm": e.alarm_id,
             "patient": e.patient_id,
             "who": e.person or e.key_name or ("the service" if e.role == "system" else None),
             "key": (f"{e.key_name} ({e.role})" if e.key_name else e.role),
             "note": transforms.round_numbers(e.note) if e.note else transforms.details_text(e.details)}
            for e in events]
    df = pd.DataFrame(rows, columns=["when", "action", "alarm", "patient", "who", "key", "note"])
    return df.sort_values("when", ascending=False, kind="stable")


OUTCOMES = {"sepsis": "Sepsis (give the onset; the patient stays on the ward, in treatment)",
            "no_sepsis": "Discharged without sepsis"}


def outcome_form(c: ServiceClient, patient_id: str) -> None:
    """The outcome as a clinician records it: no default outcome and no default time; the onset is
    required for sepsis, the discharge time for a discharge (a guessed time would become the
    record); audited by the service with the key and the name."""
    with st.form(f"outcome_{patient_id}", border=False):
        outcome = st.selectbox("Outcome", list(OUTCOMES), index=None, format_func=OUTCOMES.get,
                               placeholder="Choose the outcome", key=f"outcome_{patient_id}")
        day, hour = st.columns(2)
        when_day = day.date_input("Onset (sepsis) or discharge: date (UTC)", value=None,
                                  key=f"outcome_day_{patient_id}")
        when_time = hour.time_input("time (UTC)", value=None, key=f"outcome_time_{patient_id}")
        discharged = st.checkbox("The stay has ended (discharged) at that time", key=f"outcome_dis_{patient_id}")
        submitted = st.form_submit_button("Record outcome", key=f"do_outcome_{patient_id}")
    if not submitted:
        return
    user = user_name()
    missing = [what for what, absent in (("enter your name in the sidebar", not user), ("choose the outcome", outcome is None),
                                         ("give the onset (sepsis) or discharge date and time",
                                          when_day is None or when_time is None)) if absent]
    if missing:
        st.error("Nothing recorded: " + "; ".join(missing) + ".")
        return
    when = dt.datetime.combine(when_day, when_time, tzinfo=UTC)
    try:
        c.record_outcome(patient_id, user, outcome, onset_time=when if outcome == "sepsis" else None,
                         discharged_at=when if discharged or outcome == "no_sepsis" else None)
    except ApiError as err:
        if err.kind == "forbidden":
            refused(c, "clinician")
        flash(err.message, "error")
        st.rerun()
    flash(f"Outcome recorded for {patient_id} by {user}: {OUTCOMES[outcome].split(' (')[0]}.")
    st.rerun()
