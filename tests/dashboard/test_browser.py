"""A real browser (headless Chromium) opens the pages of a running stack: the service of
conftest.py and the dashboard served by Streamlit, and we check what it drew: what the ward must
never get wrong."""
from __future__ import annotations

import json

import httpx
import pytest

from devtools.browser import Browser, find_chromium
from devtools.processes import free_port, start_dashboard, stop
from tests.dashboard.conftest import NO_DATA_H

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="chromium is not installed (Debian: apt-get install -y chromium)")
WIDTH, HEIGHT = 1300, 1000
SCREENS = [(1440, 1000), (1024, 768)]  # a desktop, and a tablet held landscape
TILES = "[...document.querySelectorAll('[data-patient]')]"
NAME_INPUT = "input[aria-label='Your name (recorded with actions)']"


def _dashboard(stack, role, tmp_path_factory, **env):
    port = free_port()
    proc = start_dashboard(port, stack.url, stack.keys[role],
                           env={"SEPSIS_DASHBOARD_REFRESH_S": "1", "SEPSIS_DASHBOARD_NO_DATA_H": NO_DATA_H, **env},
                           log_path=tmp_path_factory.mktemp(f"dash-ui-{role}") / "streamlit.log")
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def dashboard_url(stack, tmp_path_factory):
    proc, url = _dashboard(stack, "viewer", tmp_path_factory)
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def clinician_url(stack, tmp_path_factory):
    # every open alarm of the fixture was raised 6 h ago: old after 5 h, so this dashboard shows them old
    proc, url = _dashboard(stack, "clinician", tmp_path_factory, SEPSIS_DASHBOARD_ALARM_OLD_H="5")
    try:
        yield url
    finally:
        stop(proc)


def _loud(stack) -> set[str]:
    """Patients whose alarm nobody has acknowledged, as the service has them right now."""
    active = httpx.get(f"{stack.url}/alarms", params={"state": "open"}, headers={"X-API-Key": stack.keys["viewer"]})
    return {a["patient_id"] for a in active.json()}


def test_ward_page_in_a_real_browser(stack, dashboard_url, tmp_path):
    with Browser(width=WIDTH, height=HEIGHT) as b:
        b.open(f"{dashboard_url}/", until="document.querySelector('[data-patient]')", timeout_s=45, settle_s=0.5)
        tiles = b.evaluate(f"{TILES}.map(t => [t.dataset.patient, t.dataset.alarm, getComputedStyle(t).backgroundColor, "
                           "t.querySelector('img.spark').naturalWidth])")
        text = b.text()
        url = b.evaluate("location.pathname")
        b.screenshot(tmp_path / "ward.png")
    shown = {pid: (state, colour) for pid, state, colour, _ in tiles}
    assert url == "/ward"  # "/" forwards to the ward's own address
    assert all(spark_width == 180 for *_, spark_width in tiles)  # every tile drew its 24 h sparkline
    assert stack.septic in shown and stack.discharged not in shown  # in treatment stays; discharged leaves
    assert shown[stack.open_ids[0]] == ("open", "rgb(213, 0, 0)")          # the unmissable red
    assert shown[stack.acked][0] == "acknowledged" and shown[stack.acked][1] != "rgb(213, 0, 0)"
    assert shown[stack.calm][0] == "none"
    assert "Page not found" not in text and "Traceback" not in text
    assert "ALARM · OPEN" in text and "since last observation" in text and "in treatment" in text
    assert "Red, pulsing: a fresh alarm nobody has acknowledged" in text  # the colour rule is on the page
    # the connection settings are on the page too, so a wrong key can be fixed where it is noticed
    assert "API key" in text and "open alarms" in text


def test_ward_is_reachable_at_its_own_address(dashboard_url):
    with Browser(width=WIDTH, height=HEIGHT) as b:
        b.open(f"{dashboard_url}/ward", until="document.querySelector('[data-patient]')", timeout_s=45, settle_s=0)
        assert "Page not found" not in b.text()


@pytest.mark.parametrize("per_page", [1, 3, 24])
def test_every_unacknowledged_alarm_is_on_the_first_screen(stack, dashboard_url, per_page):
    """Whatever the page size: the first tiles are the unacknowledged alarms, all of them when the
    page holds them, and they are drawn inside the window without scrolling."""
    loud = _loud(stack)
    risks = {p["patient_id"]: p["last_risk"] for p in httpx.get(f"{stack.url}/patients", headers={
        "X-API-Key": stack.keys["viewer"]}).json() if p["status"] != "discharged"}
    # the case that matters: patients without an alarm rank above some alarms by risk alone
    assert len(loud) >= 3 and max(r for p, r in risks.items() if p not in loud) > min(risks[p] for p in loud)
    with Browser(width=WIDTH, height=HEIGHT) as b:
        b.open(f"{dashboard_url}/ward?per_page={per_page}", until="document.querySelector('[data-patient]')",
               timeout_s=45, settle_s=0.5)
        tiles = b.evaluate(f"{TILES}.map(t => [t.dataset.patient, t.getBoundingClientRect().bottom])")
    first = [pid for pid, _ in tiles]
    assert len(first) == min(per_page, len(risks))
    assert set(first[:min(per_page, len(loud))]) <= loud
    if per_page >= len(loud):
        assert loud <= set(first)
    assert all(bottom <= HEIGHT for pid, bottom in tiles if pid in loud)  # no scrolling needed


def test_a_viewer_key_gets_no_action_buttons(stack, dashboard_url, clinician_url):
    pid = stack.open_ids[1]
    seen = {}
    for role, url in (("viewer", dashboard_url), ("clinician", clinician_url)):
        with Browser(width=WIDTH, height=HEIGHT) as b:
            b.open(f"{url}/alarms", until="document.body.innerText.includes('alarm #')", timeout_s=45, settle_s=1)
            queue = b.evaluate("[...document.querySelectorAll('button')].map(e => e.innerText.trim())")
            queue_text = b.text()
            b.open(f"{url}/patient?patient_id={pid}", until="document.body.innerText.includes('Alarm #')",
                   timeout_s=45, settle_s=1)
            patient = b.evaluate("[...document.querySelectorAll('button')].map(e => e.innerText.trim())")
        seen[role] = (queue, patient, queue_text)
    for buttons in seen["clinician"][:2]:  # the same pages do have them for a clinician
        assert {"Acknowledge", "Snooze", "Resolve"} <= set(buttons)
    for buttons in seen["viewer"][:2]:
        assert not {"Acknowledge", "Snooze", "Resolve"} & set(buttons)
    assert "can read but not act on alarms" in seen["viewer"][2] and "403" not in seen["viewer"][2]


def test_the_users_name_is_kept_across_a_tile_click(stack, dashboard_url):
    pid = stack.open_ids[0]
    with Browser(width=WIDTH, height=HEIGHT) as b:
        b.open(f"{dashboard_url}/ward", until="document.querySelector('[data-patient]')", timeout_s=45, settle_s=0.5)
        b.type_into(NAME_INPUT, "Nurse Ana Lima")
        b.wait_for("location.search.includes('user=')", timeout_s=10)
        b.evaluate("window.__same_document = true")  # gone if the click reloads the page
        b.click(f"a[href*='patient_id={pid}']")
        b.wait_for(f"location.pathname == '/patient' && document.body.innerText.includes({json.dumps(pid)})",
                   timeout_s=30, settle_s=1)
        assert b.evaluate("window.__same_document === true")  # no full page reload: the session lives on
        assert b.evaluate(f"document.querySelector({json.dumps(NAME_INPUT)}).value") == "Nurse Ana Lima"
        # a reload, or the address pasted elsewhere, keeps it through the URL
        b.open(b.evaluate("location.href"), until=f"document.querySelector({json.dumps(NAME_INPUT)})",
               timeout_s=30, settle_s=1)
        assert b.evaluate(f"document.querySelector({json.dumps(NAME_INPUT)}).value") == "Nurse Ana Lima"


def test_ward_refreshes_by_itself(stack, dashboard_url):
    late = "document.querySelector('[data-patient=\"bed-late\"]')"
    with Browser(width=WIDTH, height=HEIGHT) as b:
        b.open(f"{dashboard_url}/", until="document.querySelector('[data-patient]')", timeout_s=45, settle_s=0)
        assert not b.evaluate(f"Boolean({late})")
        # a patient arrives while the page is open; nobody touches the browser
        r = httpx.post(f"{stack.url}/predict", headers={"X-API-Key": stack.keys["ingest"]},
                       json={"patient_id": "bed-late", "timestamp": "2024-03-01T09:00:00Z", "vitals": {"HR": 120.0}})
        assert r.status_code == 200
        b.wait_for(late, timeout_s=20)
        assert b.evaluate(f"{late}.dataset.alarm") == "open"


PROBE = """(() => {
  const box = e => e ? e.getBoundingClientRect() : null;
  const sidebar = box(document.querySelector('[data-testid="stSidebar"]'));
  return {
    overflow: document.documentElement.scrollWidth - innerWidth,
    sidebar: sidebar ? Math.round(sidebar.width) : 0,
    counts: (() => { const c = document.querySelector('.counts'); return c ? [c.dataset.open, box(c).bottom] : null; })(),
    charts: [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map(c =>
        [box(document.querySelector('[data-testid="stMainBlockContainer"]')).right, box(c.querySelector('canvas, svg')).right]),
    truncated: [...document.querySelectorAll('[data-testid="stMetricValue"], [data-testid="stMetricValue"] *')]
        .filter(m => m.scrollWidth > m.clientWidth + 1).map(m => m.innerText),
    sideways: [...document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')].map(s => s.scrollWidth - s.clientWidth),
  };
})()"""


def _open_count(stack) -> str:
    return str(httpx.get(f"{stack.url}/ward", headers={"X-API-Key": stack.keys["viewer"]}).json()["alarms"]["open"])


@pytest.mark.parametrize("width, height", SCREENS)
def test_the_first_screen_holds_an_unacknowledged_alarm_and_says_where_the_rest_are(stack, dashboard_url, width, height):
    with Browser(width=width, height=height) as b:
        b.open(f"{dashboard_url}/ward?per_page=3", until="document.querySelector('[data-alarm=\"open\"]')",
               timeout_s=45, settle_s=1)
        ward = b.evaluate(PROBE)
        first = b.evaluate("document.querySelector('[data-alarm=\"open\"]').getBoundingClientRect().bottom")
        text = b.text()
        b.open(f"{dashboard_url}/alarms", until="document.body.innerText.includes('alarm #')", timeout_s=45, settle_s=1)
        card = b.evaluate("(() => { const e = [...document.querySelectorAll('[data-testid=\"stMarkdownContainer\"]')]"
                          ".find(e => /OPEN.*alarm #/.test(e.innerText)); return e ? e.getBoundingClientRect().bottom : null; })()")
    assert first <= height and card is not None and card <= height  # no scrolling to see an open alarm
    loud = len(_loud(stack))
    assert f"3 of {loud} open alarms shown; {loud - 3} more on page 2" in text
    assert ward["counts"][0] == _open_count(stack) and ward["counts"][1] <= height
    assert ward["overflow"] <= 0
    # a tablet gets the whole width: the sidebar collapses (its arrow opens it again)
    assert (ward["sidebar"] == 0) == (width < 1100)


@pytest.mark.parametrize("width, height", SCREENS)
def test_every_page_fits_the_width_and_shows_the_alarm_count(stack, dashboard_url, width, height):
    pages = [("patient?patient_id=bed-02", "document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= 5"),
             ("performance", "document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= 3"),
             ("alarms", "document.body.innerText.includes('Who did what')")]
    seen = {}
    with Browser(width=width, height=height) as b:
        for path, until in pages:
            b.open(f"{dashboard_url}/{path}", until=until, timeout_s=45, settle_s=2)
            seen[path.split("?")[0]] = b.evaluate(PROBE)
    for name, probe in seen.items():
        assert probe["overflow"] <= 0, name
        assert probe["counts"][0] == _open_count(stack) and probe["counts"][1] <= height, name
        # every chart drawn inside the page's column: the newest hours on the right are on screen
        assert all(drawn <= right + 1 for right, drawn in probe["charts"]), (name, probe["charts"])
        assert probe["truncated"] == [], name  # values whole, never "42.…"
    assert len(seen["patient"]["charts"]) == 5
    rights = {round(drawn) for _, drawn in seen["patient"]["charts"]}
    assert len(rights) == 1  # the stay's rows end together: one time axis
    assert seen["patient"]["sideways"][0] <= 0  # the latest values, their age and critical range: whole
    if width >= 1440:
        assert max(seen["performance"]["sideways"]) <= 0  # the operating points table does not scroll sideways


def test_an_old_open_alarm_is_not_the_pulsing_red_of_a_fresh_one(stack, dashboard_url, clinician_url):
    looks = {}
    for name, url in (("fresh", dashboard_url), ("old", clinician_url)):  # old after 6 h, old after 5 h
        with Browser(width=WIDTH, height=HEIGHT) as b:
            b.open(f"{url}/ward", until="document.querySelector('[data-alarm=\"open\"]')", timeout_s=45, settle_s=0.5)
            looks[name] = b.evaluate("(() => { const t = document.querySelector('[data-patient=\"bed-01\"]'); "
                                     "const s = getComputedStyle(t); return [t.dataset.colour, s.animationName, "
                                     "s.backgroundColor, t.innerText]; })()")
    assert looks["fresh"][:3] == ["alarm-open", "pulse", "rgb(213, 0, 0)"]
    colour, animation, background, text = looks["old"]
    assert colour == "alarm-old" and animation == "none" and background != "rgb(213, 0, 0)"
    assert "OLD ALARM" in text and "risk now" in text and "threshold" in text


def test_the_alarm_queue_refreshes_by_itself(stack, dashboard_url):
    late = "document.body.innerText.includes('bed-late-q')"
    with Browser(width=WIDTH, height=HEIGHT) as b:
        b.open(f"{dashboard_url}/alarms", until="document.body.innerText.includes('alarm #')", timeout_s=45, settle_s=0)
        assert not b.evaluate(late)
        # an alarm is raised while the queue is open; nobody touches the browser
        r = httpx.post(f"{stack.url}/predict", headers={"X-API-Key": stack.keys["ingest"]},
                       json={"patient_id": "bed-late-q", "timestamp": "2024-03-01T10:00:00Z", "vitals": {"HR": 125.0}})
        assert r.status_code == 200 and r.json()["alarm_id"] is not None
        b.wait_for(late, timeout_s=20)
