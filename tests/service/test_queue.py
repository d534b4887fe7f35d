"""The alarm queue a nurse works from: GET /alarms/queue orders the active alarms of
patients still on the ward by urgency and gives each card what is needed to act on it; the
reason of an acknowledgement must be chosen; a refusal is one clear message."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event

from models.operating_points import load_operating_points, risk_in_words
from service.patients.bedside import bedside_context
from tests.service.conftest import T0, client_for, hdr, iso, obs

ADMIT = {"age": 64.0, "gender": 1, "icu_admit_time": iso(T0)}


def t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


@pytest.fixture
def qclient(db_url, models_root):
    """Threshold 0 (every first observation raises) and the simulated clock (now = the latest
    observation stored), so time open and every age are exact."""
    with client_for(db_url, models_root, model="always", clock="simulated") as c:
        yield c


def post(c, patient, hour, **vitals):
    r = c.post("/predict", json=obs(patient, hour, **vitals), headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    return r.json()


def queue(c, role="viewer"):
    r = c.get("/alarms/queue", headers=hdr(role))
    assert r.status_code == 200, r.text
    return r.json()


def test_queue_order_open_then_acknowledged_then_snoozed_then_risk_then_time_open(qclient):
    c = qclient
    first = {}
    for i, (pid, hr) in enumerate([("o1", 60.0), ("o2", 95.0), ("o3", 130.0), ("o4", 75.0), ("o5", 110.0)]):
        first[pid] = post(c, pid, i * 0.5, HR=hr, MAP=70.0 + 3 * i)
    # two stays alike but for their start: equal risks, so the one open longer comes first
    post(c, "tie_early", 0.0, HR=100.0)
    post(c, "tie_late", 1.0, HR=100.0)
    # the two highest risks are acted on: state comes before risk
    by_risk = sorted(first, key=lambda p: -first[p]["risk"])
    acked, snoozed = by_risk[0], by_risk[1]
    assert c.post(f"/alarms/{first[acked]['alarm_id']}/ack", json={"by": "rn", "reason": "already_treated"},
                  headers=hdr("clinician")).status_code == 200
    assert c.post(f"/alarms/{first[snoozed]['alarm_id']}/snooze", json={"by": "rn", "minutes": 30},
                  headers=hdr("clinician")).status_code == 200
    # not in the queue: a resolved alarm, a patient in treatment, a discharged one
    gone = {"r1": post(c, "r1", 0, HR=90.0), "sep": post(c, "sep", 0, HR=90.0), "dis": post(c, "dis", 0, HR=90.0)}
    c.post(f"/alarms/{gone['r1']['alarm_id']}/resolve", json={"by": "dr"}, headers=hdr("clinician"))
    c.post("/patients/sep/outcome", json={"outcome": "sepsis", "onset_time": iso(T0)}, headers=hdr("clinician"))
    c.post("/patients/dis/outcome", json={"outcome": "no_sepsis", "discharged_at": iso(T0 + dt.timedelta(hours=1))},
           headers=hdr("clinician"))

    q = queue(c)
    cards = q["cards"]
    assert q["count"] == len(cards) == 7
    assert {card["patient_id"] for card in cards}.isdisjoint(gone)
    states = [card["state"] for card in cards]
    assert states == ["open"] * 5 + ["acknowledged", "snoozed"]
    assert [card["patient_id"] for card in cards[5:]] == [acked, snoozed]
    open_cards = cards[:5]
    risks = [card["risk"] for card in open_cards]
    assert risks == sorted(risks, reverse=True)
    ties = [card["patient_id"] for card in open_cards if card["patient_id"].startswith("tie")]
    assert ties == ["tie_early", "tie_late"]
    tie = {card["patient_id"]: card for card in open_cards if card["patient_id"].startswith("tie")}
    assert tie["tie_early"]["risk"] == tie["tie_late"]["risk"]


def test_card_contents(qclient, models_root):
    c = qclient
    c.post("/patients", json={"patient_id": "k1", "unit": "MICU", "bed": "B12", **ADMIT}, headers=hdr("ingest"))
    rows = [(float(h), {"HR": 90.0 + 3 * h, "MAP": 75.0 - h}) for h in range(14)]
    rows[3][1]["Lactate"] = 4.8
    rows[5][1]["Temp"] = 39.4
    results = [post(c, "k1", h, **v) for h, v in rows]
    post(c, "k2", 0.5, HR=100.0)  # another patient's card, the unit not recorded
    q = queue(c)
    card = next(card for card in q["cards"] if card["patient_id"] == "k1")
    now = t(q["now"])
    assert now == T0 + dt.timedelta(hours=13) and q["clock"] == "simulated"  # the latest observation stored
    alarm = c.get("/alarms", params={"patient_id": "k1"}, headers=hdr("viewer")).json()[0]
    detail = c.get("/patients/k1", headers=hdr("viewer")).json()
    # nobody answered the alarm of hour 0: 12 h later (the lockout) it was sent again, superseding it
    resent = results[12]
    assert card["alarm_id"] == alarm["id"] == resent["alarm_id"] and card["state"] == "open"
    assert (card["kind"], card["previous_alarm_id"]) == ("re-alert: lockout ended", results[0]["alarm_id"])
    assert (card["unit"], card["bed"], card["status"]) == ("MICU", "B12", "monitoring")
    assert t(card["raised_at"]) == T0 + dt.timedelta(hours=12) and card["open_minutes"] == pytest.approx(60)
    assert card["risk_at_raise"] == resent["risk"]
    assert card["risk"] == results[-1]["risk"] and t(card["risk_at"]) == T0 + dt.timedelta(hours=13)
    assert [(t(p["timestamp"]), p["risk"]) for p in card["trend"]] == \
        [(t(e["timestamp"]), e["risk"]) for e in detail["timeline"][-12:]]
    assert card["threshold"] == 0.0 and card["operating_point"] is None
    points = load_operating_points(models_root / "always" / "1")
    assert card["risk_in_words"] == risk_in_words(points, card["risk"], 0.0)
    # the contributions behind the alarm (its raising observation's) and behind the latest risk
    assert card["contributions"] and card["contributions"] == alarm["contributions"] == resent["contributions"]
    assert card["latest_contributions"] == results[-1]["contributions"]
    # latest values with their age, and the bedside scores, from the same observations at now
    want = bedside_context([(T0 + dt.timedelta(hours=h), v) for h, v in rows], now)
    latest = {v["feature"]: v for v in card["latest"]}
    assert latest["Lactate"]["value"] == 4.8 and latest["Lactate"]["age_hours"] == pytest.approx(10.0)
    assert latest["HR"]["value"] == rows[-1][1]["HR"] and latest["HR"]["age_hours"] == pytest.approx(0.0)
    assert sorted(latest) == sorted(v["feature"] for v in want["latest"])
    assert card["bedside"]["qsofa"]["score"] == want["qsofa"]["score"]
    assert card["bedside"]["sirs"]["score"] == want["sirs"]["score"]
    assert card["bedside"]["lactate"]["value"] == want["lactate"]["value"]
    other = next(card for card in q["cards"] if card["patient_id"] == "k2")
    assert other["unit"] is None and other["bed"] is None and len(other["trend"]) == 1


def test_queue_reads_a_fixed_number_of_queries_whatever_its_length(qclient):
    c = qclient
    engine = c.app.state.services.engine
    statements = []

    def count(conn, cursor, statement, *rest):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        counts = []
        for start, n in ((0, 2), (2, 7)):
            for i in range(start, n):
                for h in range(3):
                    post(c, f"n{i}", h, HR=80.0 + i)
            statements.clear()
            assert queue(c)["count"] == n
            counts.append(len(statements))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert counts[0] == counts[1], counts


def test_viewer_reads_the_queue_and_is_refused_actions_with_one_clear_message(qclient):
    c = qclient
    alarm_id = post(c, "v1", 0, HR=120.0)["alarm_id"]
    assert queue(c, "viewer")["count"] == 1
    for action, body in (("ack", {"by": "v", "reason": "confirmed"}), ("snooze", {"by": "v", "minutes": 10}),
                         ("resolve", {"by": "v"})):
        r = c.post(f"/alarms/{alarm_id}/{action}", json=body, headers=hdr("viewer"))
        assert r.status_code == 403
        assert r.json() == {"detail": "role 'viewer' may not do this; it needs a key with the 'clinician' permission"}
    assert queue(c)["cards"][0]["state"] == "open"  # nothing changed
    assert c.post(f"/alarms/{alarm_id}/ack", json={"by": "rn", "reason": "confirmed"},
                  headers=hdr("clinician")).status_code == 200
    stale = c.post(f"/alarms/{alarm_id}/ack", json={"by": "rn2", "reason": "false_alarm"}, headers=hdr("clinician"))
    assert stale.status_code == 409
    assert stale.json() == {"detail": f"alarm {alarm_id} is acknowledged; it can be acknowledged only when open or snoozed"}


def test_the_acknowledgement_reason_must_be_chosen(qclient):
    c = qclient
    alarm_id = post(c, "c1", 0, HR=120.0)["alarm_id"]
    r = c.post(f"/alarms/{alarm_id}/ack", json={"by": "rn"}, headers=hdr("clinician"))
    assert r.status_code == 422
    assert [(e["field"], e["reason"]) for e in r.json()["errors"]] == [("reason", "Field required")]
    assert queue(c)["cards"][0]["state"] == "open"
    spec = c.get("/openapi.json").json()["components"]["schemas"]["AckIn"]
    assert "reason" in spec["required"] and "default" not in spec["properties"]["reason"]
