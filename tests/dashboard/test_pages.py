"""Each page driven by Streamlit's AppTest against the real service of conftest.py."""
from __future__ import annotations

import base64
import json
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


def test_ward_tiles_alarms_first_with_alarm_states(monkeypatch, stack):
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
    # unacknowledged alarms first, then alarms in hand, then the rest; by risk within each
    order = re.findall(r'data-alarm="([a-z]+)" data-colour="[a-z-]+"[^>]*>.*?<div class="risk">([\d.]+)%</div>', html)
    rank = [0 if state == "open" else 1 if state != "none" else 2 for state, _ in order]
    assert rank == sorted(rank) and len(order) >= len(ward)
    for group in (0, 1, 2):
        risks = [float(r) for (_, r), g in zip(order, rank) if g == group]
        assert risks == sorted(risks, reverse=True)
    assert "since last observation" in html
    sparks = dict(re.findall(r'data-patient="([^"]+)".*?src="data:image/svg\+xml;base64,([^"]+)"', html))
    assert len(sparks) == len(order)
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
    md = texts(at)
    assert "Outcome: sepsis, onset 2024-03-01 18:00 UTC" in md
    assert "**Age** 61 years" in md and "**Sex** male" in md and "**Unit** SICU" in md and "**Bed** not recorded" in md
    assert "**Risk now:**" in md
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1  # risk, vitals and the measurement strip: one chart, one time axis
    spec = json.loads(charts[0].proto.spec)
    assert len(spec["vconcat"]) == 1 + 3 + 1 and spec["resolve"]["scale"]["x"] == "shared"
    text = charts[0].proto.spec
    assert "triangle-up" in text and "strokeDash" in text and ",.4~f" in text and "~g" not in text
    assert at.multiselect(key=f"patient_vars_{stack.septic}").value == ["HR", "Temp", "MAP"]
    frames = [df.value for df in at.dataframe]
    latest = next(f for f in frames if list(f.columns[:2]) == ["variable", "kind"])
    assert list(latest["variable"]) == ["HR", "Temp", "MAP"] and latest["measured"].str.endswith("ago").all()
    audit = next(f for f in frames if "who" in f.columns)
    assert "outcome" in set(audit["action"])  # who recorded the outcome is on the page


def test_patient_page_unknown_id_is_a_warning(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/patient.py", patient_id="nobody")
    assert not at.exception
    assert "No patient 'nobody'" in texts(at)


HEAD = re.compile(r"· \*\*(?P<pid>[^*]+)\*\* · .* · alarm #(?P<aid>\d+) · open")


def _cards(at: AppTest) -> list[tuple[str, int]]:
    return [(m["pid"], int(m["aid"])) for m in (HEAD.search(x.value) for x in at.markdown) if m]


def test_alarm_queue_in_the_services_order_of_urgency(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/alarms.py")
    assert not at.exception
    served = httpx.get(f"{stack.url}/alarms/queue", headers={"X-API-Key": stack.keys["viewer"]}).json()["cards"]
    assert [pid for pid, _ in _cards(at)] == [k["patient_id"] for k in served][:15]
    shown = {pid for pid, _ in _cards(at)}
    assert {stack.snoozed, stack.acked} <= shown and stack.calm not in shown
    assert "since raised" in "".join(m.delta or "" for m in at.metric)  # risk now against risk at raise
    log = at.dataframe[-1].value
    assert {"nurse kim", "dr lee"} <= set(log["who"].dropna())
    at.toggle(key="queue_ack").set_value(False).run()
    assert stack.acked not in {pid for pid, _ in _cards(at)}


def test_ward_and_queue_counts_agree(monkeypatch, stack):
    ward = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/ward.py")
    queue = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/alarms.py")
    counts = httpx.get(f"{stack.url}/ward", headers={"X-API-Key": stack.keys["viewer"]}).json()
    for label, value in (("Open alarms", counts["alarms"]["open"]), ("Acknowledged", counts["alarms"]["acknowledged"]),
                         ("Snoozed", counts["alarms"]["snoozed"]), ("Monitored patients", counts["patients"]["on_ward"])):
        assert metric(ward, label) == metric(queue, label) == str(value)


def _alarm_id(at: AppTest, pid: str) -> int:
    return next(aid for p, aid in _cards(at) if p == pid)


@pytest.mark.parametrize("action", ["ack", "snooze", "resolve"])
def test_clinician_acts_on_alarm(monkeypatch, stack, action):
    pid = {"ack": "act-ack", "snooze": "act-snooze", "resolve": "act-resolve"}[action]
    at = page(app(monkeypatch, stack.url, stack.keys["clinician"]), "views/alarms.py")
    at.sidebar.text_input(key="user_name").set_value("nurse ana")
    aid = _alarm_id(at, pid)
    if action == "ack":
        at.button(key=f"do_ack_{aid}").click().run()  # no reason chosen: refused on the page, nothing sent
        assert any("Choose a reason" in e.value for e in at.error)
        got = httpx.get(f"{stack.url}/alarms", params={"patient_id": pid}, headers={"X-API-Key": stack.keys["viewer"]})
        assert got.json()[0]["state"] == "open"
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


def test_the_reason_has_no_default(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["clinician"]), "views/alarms.py")
    aid = _alarm_id(at, stack.open_ids[0])
    assert at.selectbox(key=f"reason_{aid}").value is None


def test_viewer_sees_no_actions_and_is_told_why(monkeypatch, stack):
    for path, query in (("views/alarms.py", {}), ("views/patient.py", {"patient_id": stack.open_ids[0]})):
        at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), path, **query)
        assert not at.exception
        assert not [b for b in at.button if (b.key or "").startswith("do_")]
        assert sum("can read but not act on alarms" in i.value for i in at.info) == 1  # one message, no 403 twice
        clinician = page(app(monkeypatch, stack.url, stack.keys["clinician"]), path, **query)
        assert [b for b in clinician.button if (b.key or "").startswith("do_")]  # the same page has them for a clinician


def test_action_needs_a_name(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["clinician"]), "views/alarms.py")
    aid = _alarm_id(at, stack.open_ids[1])
    at.button(key=f"do_snooze_{aid}").click().run()
    assert any("Enter your name" in e.value for e in at.error)


def test_patient_page_acts_on_its_alarm(monkeypatch, stack):
    pid = stack.open_ids[1]
    at = page(app(monkeypatch, stack.url, stack.keys["clinician"]), "views/patient.py", patient_id=pid)
    at.sidebar.text_input(key="user_name").set_value("dr rui")
    aid = next(int(h.value.split("#")[1].split(":")[0]) for h in at.subheader if h.value.startswith("Alarm #"))
    at.button(key=f"do_snooze_p{aid}").click().run()
    assert not at.exception and "snoozed for 60 min by dr rui" in texts(at)
    got = httpx.get(f"{stack.url}/alarms", params={"patient_id": pid}, headers={"X-API-Key": stack.keys["viewer"]}).json()[0]
    assert (got["id"], got["state"], got["snoozed_by"]) == (aid, "snoozed", "dr rui")
    audit = next(df.value for df in at.dataframe if "who" in df.value.columns)
    assert "dr rui" in set(audit["who"])  # the snooze is in the patient's audit trail at once


def test_performance_page_numbers_and_charts(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/performance.py")
    assert not at.exception
    # two alarms with an outcome: the septic patient's (true, 10 h before onset) and the discharged one's (false)
    assert metric(at, "PPV") == "50.0%"
    assert metric(at, "False alarms") == "1"
    assert metric(at, "False-positive rate") == "100.0%"
    assert metric(at, "Median lead time") == "10.0 h"
    md = texts(at)
    assert "`sepsis-cfc` version `1`" in md and "`CPUExecutionProvider`" in md and "threshold** 0.0%" in md
    assert len(at.get("vega_lite_chart")) >= 3  # verdicts, lead time, burden (and the trade-off when measured)


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


def test_performance_page_shows_operating_points_and_an_admin_changes_one(monkeypatch, stack):
    viewer = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/performance.py")
    frames = [df.value for df in viewer.dataframe]
    units = next(f for f in frames if "unit" in f.columns)
    assert list(units["unit"]) == ["MICU", "SICU", "other"]
    table = next(f for f in frames if "operating point" in f.columns and "id" in f.columns)
    assert list(table["id"]) == ["utility_optimum", "alarms_per_day_0.2", "sensitivity_0.8"]
    assert (table["validation: PPV"] == "not measured").all()  # the fixture was never measured: said so
    assert "Only an admin key can change" in texts(viewer) and not [b for b in viewer.button if b.key == "op_submit"]

    at = page(app(monkeypatch, stack.url, stack.keys["admin"]), "views/performance.py")
    at.sidebar.text_input(key="user_name").set_value("dr admin")
    at.selectbox(key="op_unit").set_value("SICU")
    at.selectbox(key="op_point").set_value("sensitivity_0.8")  # threshold 0, as the card: other tests unaffected
    at.button(key="op_submit").click().run()
    assert any("give a reason" in e.value for e in at.error)  # a reason is required; nothing sent
    at.text_input(key="op_note").set_value("trial of a more sensitive point")
    at.button(key="op_submit").click().run()
    assert not at.exception and "SICU now alarms at fixture: a lower threshold" in texts(at)
    served = httpx.get(f"{stack.url}/operating-points", headers={"X-API-Key": stack.keys["viewer"]}).json()
    sicu = next(u for u in served["units"] if u["unit"] == "SICU")
    assert (sicu["point_id"], sicu["chosen_by"], sicu["note"]) == ("sensitivity_0.8", "dr admin",
                                                                   "trial of a more sensitive point")


def test_a_clinician_records_an_outcome_from_the_patient_page(monkeypatch, stack):
    pid = stack.quiet[0]
    at = page(app(monkeypatch, stack.url, stack.keys["clinician"]), "views/patient.py", patient_id=pid)
    at.sidebar.text_input(key="user_name").set_value("dr rui")
    at.button(key=f"do_outcome_{pid}").click().run()
    assert any("choose the outcome" in e.value for e in at.error)  # no default outcome
    at.selectbox(key=f"outcome_{pid}").set_value("no_sepsis")
    at.button(key=f"do_outcome_{pid}").click().run()
    assert not at.exception and f"Outcome recorded for {pid} by dr rui" in texts(at)
    got = httpx.get(f"{stack.url}/patients/{pid}", headers={"X-API-Key": stack.keys["viewer"]}).json()
    assert got["outcome"] == "no_sepsis" and got["status"] == "discharged" and got["discharged_at"]
    assert any(e["action"] == "outcome" and e["actor"]["person"] == "dr rui" for e in got["audit"])
