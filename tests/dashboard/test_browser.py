"""A real browser (headless Chromium) opens the ward page of a running stack: the service of
conftest.py and the dashboard served by Streamlit, and we check what it drew."""
from __future__ import annotations

import pytest

import httpx

from dashboard.browser import Browser, find_chromium
from devtools.processes import free_port, start_dashboard, stop

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="chromium is not installed (Debian: apt-get install -y chromium)")


@pytest.fixture(scope="module")
def dashboard_url(stack, tmp_path_factory):
    port = free_port()
    proc = start_dashboard(port, stack.url, stack.keys["viewer"], env={"SEPSIS_DASHBOARD_REFRESH_S": "1"},
                           log_path=tmp_path_factory.mktemp("dash-ui") / "streamlit.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_ward_page_in_a_real_browser(stack, dashboard_url, tmp_path):
    with Browser(width=1300, height=1000) as b:
        b.open(f"{dashboard_url}/", until="document.querySelector('[data-patient]')", timeout_s=45, settle_s=0.5)
        tiles = b.evaluate("[...document.querySelectorAll('[data-patient]')].map(t => "
                           "[t.dataset.patient, t.dataset.alarm, getComputedStyle(t).backgroundColor, "
                           "t.querySelector('img.spark').naturalWidth])")
        text = b.text()
        b.screenshot(tmp_path / "ward.png")
    shown = {pid: (state, colour) for pid, state, colour, _ in tiles}
    assert all(spark_width == 180 for *_, spark_width in tiles)  # every tile drew its 24 h sparkline
    assert stack.septic in shown and stack.discharged not in shown  # in treatment stays; discharged leaves
    assert shown[stack.open_ids[0]] == ("open", "rgb(213, 0, 0)")          # the unmissable red
    assert shown[stack.acked][0] == "acknowledged" and shown[stack.acked][1] != "rgb(213, 0, 0)"
    assert shown[stack.calm][0] == "none"
    assert "Page not found" not in text
    assert "ALARM · OPEN" in text and "h since last observation" in text
    assert "Traceback" not in text
    # the connection settings are on the page too, so a wrong key can be fixed where it is noticed
    assert "API key" in text and "Monitored patients" in text



def test_ward_refreshes_by_itself(stack, dashboard_url):
    late = "document.querySelector('[data-patient=\"bed-late\"]')"
    with Browser(width=1300, height=1000) as b:
        b.open(f"{dashboard_url}/", until="document.querySelector('[data-patient]')", timeout_s=45, settle_s=0)
        assert not b.evaluate(f"Boolean({late})")
        # a patient arrives while the page is open; nobody touches the browser
        r = httpx.post(f"{stack.url}/predict", headers={"X-API-Key": stack.keys["ingest"]},
                       json={"patient_id": "bed-late", "timestamp": "2024-03-01T09:00:00Z", "vitals": {"HR": 120.0}})
        assert r.status_code == 200
        b.wait_for(late, timeout_s=20)
        assert b.evaluate(f"{late}.dataset.alarm") == "open"
