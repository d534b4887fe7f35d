"""Alarms first: every patient with an unacknowledged alarm leads the listing at any
page size, then acknowledged or snoozed ones, then the rest by risk; the ward's counts agree with the
alarm queue; `last_measured` counts only observations that carried a value."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, text

from service.storage.db import make_engine, migrate
from service.storage.tables import Patient
from tests.service.conftest import T0, client_for, hdr, iso

UTC = dt.timezone.utc
GROUP = {"open": 0, "acknowledged": 1, "snoozed": 1}


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def when(value):
    return None if value is None else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def c(db_url, models_root):
    with client_for(db_url, models_root, model="always") as client:
        yield client


def post(c, patient, hours, **vitals):
    r = c.post("/predict", json={"patient_id": patient, "timestamp": iso(at(hours)), "vitals": vitals},
               headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    return r.json()


def listing(c, **params):
    r = c.get("/patients", params=params, headers=hdr("viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def ward_of_twelve(c) -> dict[str, str]:
    """12 patients with an alarm each, the open ones those of LOWEST risk (risk alone would put them
    last), 3 acknowledged, 2 snoozed, 2 resolved; 2 discharged without sepsis and 1 admitted
    without observations. Returns patient -> expected state of its active alarm ("none")."""
    risks = {}
    for i in range(12):
        pid = f"w{i:02d}"
        risks[pid] = post(c, pid, 0, HR=60.0 + 7 * i, MAP=95.0 - 3 * i, Temp=36.0 + 0.3 * i)["risk"]
    assert len(set(risks.values())) == 12, "the fixture model should give distinct risks"
    by_risk = sorted(risks, key=risks.get)  # lowest first
    plan = dict(zip(by_risk, ["open"] * 3 + ["acknowledged"] * 3 + ["snoozed"] * 2 + ["none"] * 2 + ["gone"] * 2))
    for pid, state in plan.items():
        alarm = c.get("/alarms", params={"patient_id": pid}, headers=hdr("viewer")).json()[0]["id"]
        if state == "acknowledged":
            r = c.post(f"/alarms/{alarm}/ack", json={"by": "rn", "reason": "false_alarm"}, headers=hdr("clinician"))
        elif state == "snoozed":
            r = c.post(f"/alarms/{alarm}/snooze", json={"by": "rn", "minutes": 30}, headers=hdr("clinician"))
        elif state == "none":
            r = c.post(f"/alarms/{alarm}/resolve", json={"by": "rn"}, headers=hdr("clinician"))
        elif state == "gone":
            r = c.post(f"/patients/{pid}/outcome", json={"outcome": "no_sepsis"}, headers=hdr("clinician"))
        else:
            continue
        assert r.status_code == 200, r.text
    r = c.post("/patients", json={"patient_id": "w99", "icu_admit_time": iso(T0)}, headers=hdr("ingest"))
    assert r.status_code == 201, r.text
    plan["w99"] = "none"
    return plan


def test_alarms_first_puts_every_open_alarm_on_the_first_page_at_any_size(c):
    plan = ward_of_twelve(c)
    everyone = listing(c, order="alarms_first")
    order = [p["patient_id"] for p in everyone]
    risk = {p["patient_id"]: p["last_risk"] for p in everyone}
    expected = sorted(plan, key=lambda pid: (GROUP.get(plan[pid], 2), -(risk[pid] if risk[pid] is not None else -1), pid))
    assert order == expected
    assert [plan[pid] for pid in order[:3]] == ["open"] * 3
    assert {plan[pid] for pid in order[3:8]} == {"acknowledged", "snoozed"}
    assert order[-1] == "w99"  # no risk yet: last
    for p in everyone:  # each summary names its active alarm, or none
        assert (p["active_alarm_id"] is not None) == (plan[p["patient_id"]] in GROUP)
    for size in range(1, len(order) + 2):
        pages, offset = [], 0
        while offset < len(order):
            pages.append([p["patient_id"] for p in listing(c, order="alarms_first", limit=size, offset=offset)])
            offset += size
        assert [pid for page in pages for pid in page] == order, size
        first = pages[0]
        assert first == order[:size] and all(plan[pid] == "open" for pid in first[:3])


def test_the_default_order_is_unchanged_and_filters_combine(c):
    plan = ward_of_twelve(c)
    assert [p["patient_id"] for p in listing(c)] == sorted(plan)
    assert [p["patient_id"] for p in listing(c, order="id", limit=4, offset=2)] == sorted(plan)[2:6]
    without = [p["patient_id"] for p in listing(c, order="alarms_first", with_outcome=False)]
    assert set(without) == {pid for pid, s in plan.items() if s != "gone"} and plan[without[0]] == "open"
    bad = c.get("/patients", params={"order": "risk"}, headers=hdr("viewer"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "order"


def test_ward_counts_agree_with_the_alarm_queue(c):
    plan = ward_of_twelve(c)
    r = c.post("/patients/w99/outcome", json={"outcome": "sepsis", "onset_time": iso(T0)}, headers=hdr("clinician"))
    assert r.status_code == 200, r.text
    ward = c.get("/ward", headers=hdr("viewer"))
    assert ward.status_code == 200, ward.text
    ward = ward.json()
    for state in ("open", "acknowledged", "snoozed"):
        queue = c.get("/alarms", params={"state": state}, headers=hdr("viewer")).json()
        assert ward["alarms"][state] == len(queue) == sum(s == state for s in plan.values()), state
    assert ward["alarms"]["active"] == len(c.get("/alarms", params={"state": "active"}, headers=hdr("viewer")).json())
    assert ward["alarms"]["patients_with_open_alarm"] == 3
    assert ward["patients"] == {"monitoring": 10, "in_treatment": 1, "discharged": 2, "on_ward": 11}
    listed = listing(c)
    assert sum(p["status"] != "discharged" for p in listed) == ward["patients"]["on_ward"]
    assert ward["clock"]["mode"] == "wall"
    assert c.get("/ward", headers=hdr("ingest")).status_code == 403


def test_ward_counts_only_patients_on_the_ward(c):
    """An active alarm of a patient who left (a row from before alarms were resolved on discharge)
    is not one the ward must act on."""
    post(c, "left", 0, HR=90.0)
    post(c, "here", 0, HR=90.0)
    with c.app.state.services.engine.begin() as conn:  # the state an older version left behind
        conn.execute(text("UPDATE patients SET outcome = 'no_sepsis' WHERE id = 'left'"))
    ward = c.get("/ward", headers=hdr("viewer")).json()
    assert ward["alarms"]["open"] == 1 and ward["patients"]["discharged"] == 1


def test_last_measured_ignores_posts_without_values(c):
    post(c, "m1", 0, HR=88.0)
    post(c, "m1", 1)  # nothing measured
    post(c, "m1", 2, Age=61.0)  # demographics only
    r = c.post("/predict/batch", json={"observations": [
        {"patient_id": "m1", "timestamp": iso(at(3)), "vitals": {}},
        {"patient_id": "m1", "timestamp": iso(at(4)), "vitals": {"Lactate": 2.1}},
        {"patient_id": "m1", "timestamp": iso(at(5)), "vitals": {"Gender": 1.0}},
        {"patient_id": "m2", "timestamp": iso(at(5)), "vitals": {}}]}, headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    summary = {p["patient_id"]: p for p in listing(c)}
    assert when(summary["m1"]["last_measured"]) == at(4) and when(summary["m1"]["last_observation"]) == at(5)
    assert summary["m2"]["last_measured"] is None and when(summary["m2"]["last_observation"]) == at(5)
    assert when(c.get("/patients/m1", headers=hdr("viewer")).json()["last_measured"]) == at(4)
    # an admin's correction removes the hour with the lactate: the latest measured is hour 0 again
    r = c.delete("/patients/m1/observations", params={"after": iso(at(3)), "by": "admin", "reason": "wrong patient"},
                 headers=hdr("admin"))
    assert r.status_code == 200, r.text
    assert when(listing(c)[0]["last_measured"]) == at(0)


def test_migration_fills_last_measured_for_stored_stays(db_url):
    engine = make_engine(db_url)
    try:
        migrate(engine, "0003")
        rows = [("a", 0, '{"HR": 80.0}'), ("a", 1, '{"Age": 60.0}'), ("a", 2, '{}'), ("b", 0, '{}')]
        # raw SQL, as the columns store times: naive UTC on SQLite, with a zone on PostgreSQL
        stored = (lambda t: t) if engine.dialect.name == "postgresql" else (lambda t: t.replace(tzinfo=None))
        with engine.begin() as conn:
            for pid in ("a", "b"):
                conn.execute(text("INSERT INTO patients (id, created_at, admitted_by, n_observations, version) "
                                  "VALUES (:id, :t, 'admission', 0, 0)"), {"id": pid, "t": stored(T0)})
            for pid, hour, vitals in rows:
                conn.execute(text("INSERT INTO observations (patient_id, ts, vitals, elapsed_hours, iculos, risk, "
                                  "threshold, model_name, model_version, received_at) VALUES (:p, :ts, :v, 0, 1, 0.1, "
                                  "0.5, 'm', '1', :ts)"), {"p": pid, "ts": stored(at(hour)), "v": vitals})
        migrate(engine)
        with engine.connect() as conn:
            got = dict(conn.execute(select(Patient.id, Patient.last_measured)).all())
        assert got == {"a": at(0), "b": None}
    finally:
        engine.dispose()
