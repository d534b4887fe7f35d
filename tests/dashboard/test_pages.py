"""Each page driven by Streamlit's AppTest against the real service of conftest.py."""
from __future__ import annotations

import base64
import re

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from devtools.processes import APP, free_port

TIMEOUT = 30


def app(monkeypatch, url: str, key: str) -> AppTest:
    monkeypatch.setenv("SEPSIS_DASHBOARD_API_URL", url)
    monkeypatch.setenv("SEPSIS_DASHBOARD_API_KEY", key)
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def page(at: AppTest, path: str, **query) -> AppTest:
    at.run()
    at.switch_page(path)
    at.query_params.update(query)
    return at.run()


def html_of(at: AppTest) -> str:
    return "".join(el.proto.body for el in at.get("html"))


def texts(at: AppTest) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + [e.value for e in at.error]
    parts += [e.value for e in at.info] + [e.value for e in at.success] + [e.value for e in at.warning]
    return "\n".join(str(p) for p in parts)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_ward_tiles_sorted_by_risk_with_alarm_states(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/ward.py")
    assert not at.exception
    html = html_of(at)
    # on the ward = not discharged; the confirmed-sepsis patient stays, in treatment
    ward = [stack.acked, stack.snoozed, stack.calm, stack.septic, *stack.open_ids]
    for pid in ward:
        assert f'data-patient="{pid}"' in html
    assert stack.discharged not in html and "in treatment" in html
    assert f'data-patient="{stack.calm}" data-alarm="none"' in html
    assert f'data-patient="{stack.acked}" data-alarm="acknowledged"' in html
    assert f'data-patient="{stack.open_ids[0]}" data-alarm="open"' in html
    assert html.count("alarm-open") >= 1 + len(stack.open_ids)  # the CSS rule plus each open tile
    # tiles come highest risk first
    risks = [int(r) for r in re.findall(r'<div class="risk">(\d+)%</div>', html)]
    assert risks == sorted(risks, reverse=True) and len(risks) >= len(ward)
    assert "h since last observation" in html
    sparks = dict(re.findall(r'data-patient="([^"]+)".*?src="data:image/svg\+xml;base64,([^"]+)"', html))
    assert len(sparks) == len(risks)
    assert 'aria-label="risk trend, 7 points"><line' in base64.b64decode(sparks["bed-02"]).decode()
    assert "<polyline" in base64.b64decode(sparks["bed-02"]).decode()  # seven hourly risks, threshold line
    on_ward = [p for p in httpx.get(f"{stack.url}/patients", headers={"X-API-Key": stack.keys["viewer"]}).json()
               if p["status"] != "discharged"]  # the browser test may have admitted one more
    assert metric(at, "Monitored patients") == str(len(on_ward)) and len(on_ward) >= len(ward) + len(stack.action_ids)


def test_ward_filters_by_unit(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/ward.py")
    at.selectbox(key="ward_unit").set_value("SICU").run()
    html = html_of(at)
    assert f'data-patient="{stack.acked}"' in html and "SICU" in html
    assert f'data-patient="{stack.open_ids[0]}"' not in html  # MICU
    assert metric(at, "Monitored patients") == "4"  # with the SICU patient in treatment for sepsis


def test_patient_page_shows_risk_vitals_and_outcome(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/patient.py", patient_id=stack.septic)
    assert not at.exception
    assert at.selectbox(key="patient_pick").value == stack.septic
    assert "Outcome: sepsis, onset 2024-03-01 18:00 UTC" in texts(at)
    charts = at.get("vega_lite_chart")
    assert len(charts) == 3  # risk, vitals, coverage
    spec = "".join(c.proto.spec for c in charts)
    assert "threshold" in spec and "triangle-up" in spec and "onset" in spec
    assert at.multiselect(key="patient_vars").value == ["HR", "Temp", "MAP"]


def test_patient_page_unknown_id_is_a_warning(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/patient.py", patient_id="nobody")
    assert not at.exception
    assert "No patient 'nobody'" in texts(at)


def test_alarm_queue_oldest_first_open_and_snoozed(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/alarms.py")
    assert not at.exception
    heads = [m.value for m in at.markdown if "alarm #" in m.value]
    shown = [h.split("patient **")[1].split("**")[0] for h in heads]
    assert stack.snoozed in shown and stack.acked not in shown and stack.calm not in shown
    ids = [int(h.split("alarm #")[1].split(" ")[0]) for h in heads]
    assert ids == sorted(ids)  # raised in id order at equal times; oldest first
    log = at.dataframe[0].value
    assert {"nurse kim", "dr lee"} <= set(log["by"].dropna())
    at.toggle(key="queue_ack").set_value(True).run()
    assert any(f"patient **{stack.acked}**" in m.value for m in at.markdown)


def _alarm_id(at: AppTest, pid: str) -> int:
    head = next(m.value for m in at.markdown if f"patient **{pid}**" in m.value)
    return int(head.split("alarm #")[1].split(" ")[0])


@pytest.mark.parametrize("action", ["ack", "snooze", "resolve"])
def test_clinician_acts_on_alarm(monkeypatch, stack, action):
    pid = {"ack": "act-ack", "snooze": "act-snooze", "resolve": "act-resolve"}[action]
    at = page(app(monkeypatch, stack.url, stack.keys["clinician"]), "views/alarms.py")
    at.sidebar.text_input(key="user_name").set_value("nurse ana")
    aid = _alarm_id(at, pid)
    if action == "ack":
        at.selectbox(key=f"reason_{aid}").set_value("already_treated")
    at.button(key=f"do_{action}_{aid}").click().run()
    assert not at.exception
    assert "by nurse ana" in texts(at)
    got = httpx.get(f"{stack.url}/alarms", params={"patient_id": pid}, headers={"X-API-Key": stack.keys["viewer"]}).json()[0]
    assert got["state"] == {"ack": "acknowledged", "snooze": "snoozed", "resolve": "resolved"}[action]
    if action == "ack":
        assert (got["acknowledged_by"], got["ack_reason"]) == ("nurse ana", "already_treated")
    if action == "resolve":
        assert got["resolved_by"] == "nurse ana"


def test_viewer_cannot_act_and_is_told_why(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/alarms.py")
    at.sidebar.text_input(key="user_name").set_value("visitor")
    aid = _alarm_id(at, stack.open_ids[0])
    at.button(key=f"do_resolve_{aid}").click().run()
    assert not at.exception
    assert any("needs a clinician key" in e.value for e in at.error)


def test_action_needs_a_name(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["clinician"]), "views/alarms.py")
    aid = _alarm_id(at, stack.open_ids[1])
    at.button(key=f"do_snooze_{aid}").click().run()
    assert any("Enter your name" in e.value for e in at.error)


def test_performance_page_numbers_and_charts(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/performance.py")
    assert not at.exception
    # two alarms with an outcome: the septic patient's (true, 10 h before onset) and the discharged one's (false)
    assert metric(at, "PPV") == "50.0%"
    assert metric(at, "False alarms") == "1"
    assert metric(at, "False-positive rate") == "100.0%"
    assert metric(at, "Median lead time") == "10.0 h"
    md = texts(at)
    assert "`sepsis-cfc` version `1`" in md and "`CPUExecutionProvider`" in md and "threshold** 0.000" in md
    assert len(at.get("vega_lite_chart")) == 3  # verdicts, lead time, burden


@pytest.mark.parametrize("path", ["views/ward.py", "views/patient.py", "views/alarms.py", "views/performance.py"])
def test_unreachable_service_is_a_message(monkeypatch, path):
    at = page(app(monkeypatch, f"http://127.0.0.1:{free_port()}", "x"), path)
    assert not at.exception
    assert any("Cannot reach the sepsis service" in e.value for e in at.error)


@pytest.mark.parametrize("path", ["views/ward.py", "views/performance.py"])
def test_wrong_key_is_a_message(monkeypatch, stack, path):
    at = page(app(monkeypatch, stack.url, "sk_wrong"), path)
    assert not at.exception
    assert any("API key was not accepted" in e.value for e in at.error)
