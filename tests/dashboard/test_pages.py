"""Each page driven by Streamlit's AppTest against the real service of conftest.py."""
from __future__ import annotations

import base64
import json
import re

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from devtools.processes import APP, free_port
from tests.dashboard.conftest import NO_DATA_H

TIMEOUT = 30


def app(monkeypatch, url: str, key: str) -> AppTest:
    monkeypatch.setenv("SEPSIS_DASHBOARD_API_URL", url)
    monkeypatch.setenv("SEPSIS_DASHBOARD_API_KEY", key)
    monkeypatch.setenv("SEPSIS_DASHBOARD_NO_DATA_H", NO_DATA_H)
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


def counts_line(at: AppTest) -> dict[str, str]:
    """The alarm counts every page shows at its top (data-* of ui.counts_html)."""
    return dict(re.findall(r'data-([a-z-]+)="(\d+)"', next(h for h in (el.proto.body for el in at.get("html"))
                                                          if 'class="counts' in h)))


def test_ward_tiles_alarms_first_with_alarm_states(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/ward.py")
    assert not at.exception
    html = html_of(at)
    # on the ward = not discharged; the confirmed-sepsis patient stays, in treatment
    ward = [stack.acked, stack.snoozed, stack.calm, stack.septic, stack.gone, *stack.open_ids]
    for pid in ward:
        assert f'data-patient="{pid}"' in html
    assert stack.discharged not in html and "in treatment" in html
    assert f'data-patient="{stack.calm}" data-alarm="none"' in html
    assert f'data-patient="{stack.acked}" data-alarm="acknowledged"' in html
    assert f'data-patient="{stack.open_ids[0]}" data-alarm="open"' in html
    assert html.count("alarm-open") >= 1 + len(stack.open_ids)  # the CSS rule plus each open tile
    # unacknowledged alarms first; then the patient in treatment nobody sees (no data for 6 h); alarms
    # in hand; the other patients without recent data; the rest; by risk within each
    order = re.findall(r'data-patient="([^"]+)" data-alarm="([a-z]+)" data-colour="[a-z-]+" data-nodata="([a-z]+)"'
                       r'[^>]*>.*?<div class="risk">([\d.]+)%</div>', html)
    rank = [0 if state == "open" else 1 if pid == stack.gone else 2 if state != "none" else 3 if nodata == "true" else 4
            for pid, state, nodata, _ in order]
    assert rank == sorted(rank) and len(order) >= len(ward) and 1 in rank and 3 in rank
    for group in (0, 2, 3, 4):
        risks = [float(r) for (*_, r), g in zip(order, rank) if g == group]
        assert risks == sorted(risks, reverse=True)
    gone = next(t for t in re.findall(r'<div class="tile [^"]+"[^>]*>.*?</div></div>', html) if stack.gone in t)
    assert 'data-nodata="true"' in gone and "NO RECENT DATA" in gone and "in treatment" in gone
    assert "since last observation" in html
    sparks = dict(re.findall(r'data-patient="([^"]+)".*?src="data:image/svg\+xml;base64,([^"]+)"', html))
    assert len(sparks) == len(order)
    assert 'aria-label="risk trend, 7 points"><line' in base64.b64decode(sparks["bed-02"]).decode()
    assert "<polyline" in base64.b64decode(sparks["bed-02"]).decode()  # seven hourly risks, threshold line
    on_ward = [p for p in httpx.get(f"{stack.url}/patients", headers={"X-API-Key": stack.keys["viewer"]}).json()
               if p["status"] != "discharged"]  # the browser test may have admitted one more
    assert counts_line(at)["on-ward"] == str(len(on_ward)) and len(on_ward) >= len(ward) + len(stack.action_ids)


def test_ward_filters_by_unit(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/ward.py")
    at.selectbox(key="ward_unit").set_value("SICU").run()
    html = html_of(at)
    assert f'data-patient="{stack.acked}"' in html and "SICU" in html
    assert f'data-patient="{stack.open_ids[0]}"' not in html  # MICU
    assert "SICU: 5 patients" in texts(at)  # with the two SICU patients in treatment for sepsis


def test_patient_page_shows_risk_vitals_and_outcome(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/patient.py", patient_id=stack.septic)
    assert not at.exception
    assert at.selectbox(key="patient_pick").value == stack.septic
    md = texts(at)
    assert "Outcome: sepsis, onset 2024-03-01 18:00 UTC" in md
    assert "**Age** 61 years" in md and "**Sex** male" in md and "**Unit** SICU" in md and "**Bed** not recorded" in md
    assert "**Risk now:**" in md
    # the reasons by organ system, its SOFA component beside it; administrative fields after the clinical ones
    assert "- **Cardiovascular** (SOFA cardiovascular 1 point, MAP 67)\n    - MAP 67 mmHg (normal 85 mmHg) raised the risk" in md
    assert md.index("- **Cardiovascular**") < md.index("- **Administrative**")
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    # risk, vitals and the measurement strip: one row each, all on the same time domain, with the
    # same room for the y axis (the plots line up), each as wide as the page (a tablet sees it all)
    assert len(charts) == 1 + 3 + 1
    def x_of(spec):
        return [enc["x"] for layer in spec.get("layer", [spec]) for enc in [layer.get("encoding", {})] if "x" in enc]
    domains = {json.dumps(x["scale"]["domain"]) for spec in charts for x in x_of(spec)}
    assert len(domains) == 1
    extents = {(layer.get("encoding", {}).get("y", {}).get("axis") or {}).get("minExtent")
               for spec in charts for layer in spec.get("layer", [spec]) if "axis" in layer.get("encoding", {}).get("y", {})}
    assert extents == {120}
    text = "".join(json.dumps(c) for c in charts)
    assert "triangle-up" in text and "strokeDash" in text and ",.4~f" in text and "~g" not in text
    assert at.multiselect(key=f"patient_vars_{stack.septic}").value == ["HR", "Temp", "MAP"]
    frames = [df.value for df in at.dataframe]
    latest = next(f for f in frames if list(f.columns[:2]) == ["variable", "kind"])
    assert list(latest["variable"]) == ["HR", "Temp", "MAP"] and latest["measured"].str.endswith("ago").all()
    assert list(latest["value"]) == ["89 beats/min", "37.3 deg C", "67 mm Hg"]  # each value with its unit
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
    # each card's reasons by organ system, the SOFA component beside them for the latest risk
    behind = [x.value for x in at.markdown if x.value.startswith("**Behind the latest risk**")]
    assert behind and all("\n- **" in b and "\n    - " in b for b in behind)
    assert any("(SOFA cardiovascular" in b for b in behind)
    log = at.dataframe[-1].value
    assert {"nurse kim", "dr lee"} <= set(log["who"].dropna())
    at.toggle(key="queue_ack").set_value(False).run()
    assert stack.acked not in {pid for pid, _ in _cards(at)}


@pytest.mark.parametrize("path", ["views/ward.py", "views/alarms.py", "views/patient.py", "views/performance.py"])
def test_every_page_shows_the_alarm_counts(monkeypatch, stack, path):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), path)
    counts = httpx.get(f"{stack.url}/ward", headers={"X-API-Key": stack.keys["viewer"]}).json()
    shown = counts_line(at)
    assert (shown["open"], shown["acknowledged"], shown["snoozed"], shown["on-ward"]) == tuple(
        str(v) for v in (counts["alarms"]["open"], counts["alarms"]["acknowledged"], counts["alarms"]["snoozed"],
                         counts["patients"]["on_ward"]))


def test_queue_flags_patients_without_recent_data(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/alarms.py")
    heads = {m["pid"]: x.value for x in at.markdown for m in [HEAD.search(x.value)] if m}
    assert "NO RECENT DATA**: nothing measured for 5.0 h" in heads["act-ack"]  # last measured T0 + 1 h
    assert "NO RECENT DATA" not in heads[stack.open_ids[1]]                   # measured at T0 + 6 h
    unseen = next(e for e in at.expander if "without recent data" in e.label)
    assert "(1 in treatment)" in unseen.label
    table = next(df.value for df in at.dataframe if "last measured" in df.value.columns)
    assert table.iloc[0]["patient"] == stack.gone and table.iloc[0]["last measured"] == "6.0 h ago"
    assert "all" in texts(at) and "unacknowledged alarms shown" in texts(at)


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
    # three alarms with an outcome: the septic patient's (true, 10 h before onset), the discharged one's (false)
    # and the patient in treatment's alarm (true, 3 h before its onset)
    assert metric(at, "PPV") == "66.7%"
    assert metric(at, "False alarms") == "1"
    assert metric(at, "False-positive rate") == "100.0%"
    assert metric(at, "Median lead time") == "6.5 h"
    md = texts(at)
    assert "`sepsis-cfc` version `1`" in md and "`CPUExecutionProvider`" in md and "threshold** 0.0%" in md
    assert len(at.get("vega_lite_chart")) >= 3  # verdicts, lead time, burden (and the trade-off when measured)


def test_performance_page_shows_each_operating_point_period(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/performance.py")
    assert not at.exception
    served = httpx.get(f"{stack.url}/stats/periods", headers={"X-API-Key": stack.keys["viewer"]}).json()["periods"]
    table = next(df.value for df in at.dataframe if "in force (UTC)" in df.value.columns)
    assert list(table["unit"]) == [p["unit"] for p in served] and len(table) >= 3
    assert list(table["point (threshold)"]) == [f"{p['point_id'] or 'model card'} ({p['threshold']:.1%})" for p in served]
    assert list(table["alarms/pt-day"]) == ["n/a" if p["alarms_per_patient_day"] is None
                                            else f"{p['alarms_per_patient_day']:.2f}" for p in served]
    assert "Figures per operating-point period" in [h.value for h in at.subheader]
    # the fixture alarms at one threshold everywhere (its chosen point is the card's too): no mixing to warn of
    assert "add 2 thresholds" not in texts(at)
    # nor a period start to mark on the burden chart (tests/dashboard/test_transforms.py has the marks of changes)
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    burden = next(s for s in specs if "starting (UTC)" in json.dumps(s.get("layer", [{}])[0].get("encoding", {})))
    assert [layer["mark"]["type"] for layer in burden["layer"]] == ["bar", "line"]
    assert any("No unit's operating point or threshold changed" in c.value for c in at.caption)


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
    table = next(f for f in frames if "operating point" in f.columns and "split" in f.columns)
    # one row per point and split: few enough columns to fit the page without scrolling sideways
    assert len(table) == 6 and table["operating point"].iloc[0] == table["operating point"].iloc[1]
    assert list(table["split"]) == ["validation", "test"] * 3 and len(table.columns) == 7
    assert (table["PPV"] == "not measured").all()  # the fixture was never measured: said so
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
    import datetime as dt

    pid = stack.quiet[0]
    at = page(app(monkeypatch, stack.url, stack.keys["clinician"]), "views/patient.py", patient_id=pid)
    at.sidebar.text_input(key="user_name").set_value("dr rui")
    # no default outcome and no default time: a guessed onset would become the record
    assert at.date_input(key=f"outcome_day_{pid}").value is None and at.time_input(key=f"outcome_time_{pid}").value is None
    at.button(key=f"do_outcome_{pid}").click().run()
    assert any("choose the outcome" in e.value for e in at.error)
    at.selectbox(key=f"outcome_{pid}").set_value("sepsis")
    at.button(key=f"do_outcome_{pid}").click().run()
    assert any("give the onset" in e.value for e in at.error)  # sepsis without its onset: refused, nothing sent
    assert httpx.get(f"{stack.url}/patients/{pid}", headers={"X-API-Key": stack.keys["viewer"]}).json()["outcome"] is None
    at.selectbox(key=f"outcome_{pid}").set_value("no_sepsis")
    at.date_input(key=f"outcome_day_{pid}").set_value(dt.date(2024, 3, 1))
    at.time_input(key=f"outcome_time_{pid}").set_value(dt.time(13, 0))
    at.button(key=f"do_outcome_{pid}").click().run()
    assert not at.exception and f"Outcome recorded for {pid} by dr rui" in texts(at)
    got = httpx.get(f"{stack.url}/patients/{pid}", headers={"X-API-Key": stack.keys["viewer"]}).json()
    assert got["outcome"] == "no_sepsis" and got["status"] == "discharged"
    assert got["discharged_at"].startswith("2024-03-01T13:00")
    assert any(e["action"] == "outcome" and e["actor"]["person"] == "dr rui" for e in got["audit"])


def test_patient_page_highlights_critical_values_and_rounds_audit_notes(monkeypatch, stack):
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/patient.py", patient_id=stack.open_ids[1])
    latest = next(df.value for df in at.dataframe if "critical" in df.value.columns)
    # bed-02's MAP reached 64 mm Hg at hour 6: below the 65 of the Surviving Sepsis Campaign
    assert latest.set_index("variable").loc["MAP", "critical"] == "< 65 mm Hg (SSC 2021)"
    assert latest.set_index("variable").loc["HR", "critical"] == ""
    audit = next(df.value for df in at.dataframe if "who" in df.value.columns)
    notes = " ".join(str(n) for n in audit["note"].dropna())
    assert notes and not re.search(r"\d\.\d{5,}", notes)  # no raw floats such as 0.061674147844314575


def test_patient_page_shows_values_charted_outside_their_plausible_range(monkeypatch, stack):
    """bed-calm's Temp of 98.6 at hour 2 (Fahrenheit sent as Celsius) was scored as charted: the
    page says so, with the time and the range; a patient without such values shows no warning."""
    at = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/patient.py", patient_id=stack.calm)
    assert not at.exception
    [warning] = [w.value for w in at.warning if "plausible range" in w.value]
    assert "Temp at 2024-03-01 10:00 UTC: 98.6 is outside the plausible range 20 to 45 deg C" in warning
    other = page(app(monkeypatch, stack.url, stack.keys["viewer"]), "views/patient.py", patient_id=stack.acked)
    assert not [w for w in other.warning if "plausible range" in w.value]
