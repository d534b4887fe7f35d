"""GET /stats/periods: the figures of GET /stats per unit and operating-point period, the periods
read from the audit of point changes, so figures of two thresholds are never added together."""
from __future__ import annotations

import datetime as dt

import pytest

from models.testing import fixture_operating_points, write_fixture_model
from service.ward.periods import Change, Period, unit_periods
from tests.service.conftest import T0, client_for, hdr, iso, obs

CARD = 0.15  # the fixture's points: 0.15 (the card's), 0.575 ("alarms_per_day_0.2"), 0.075
HIGH = "alarms_per_day_0.2"
VITALS = {"HR": 80.0}  # the fixture's risk with these is about 0.22: alarms at 0.15, none at 0.575
CARD2 = 0.3  # version 2's card threshold (its default); its HIGH point keeps version 1's 0.575


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("period_models")
    write_fixture_model(r / "sepsis-cfc" / "1", state_size=8, threshold=CARD)
    points = fixture_operating_points(CARD2, version="2")
    points["points"][1]["threshold"] = 0.575
    write_fixture_model(r / "sepsis-cfc" / "2", state_size=8, threshold=CARD2, version="2", seed=7,
                        operating_points=points)
    write_fixture_model(r / "sepsis-cfc" / "3", state_size=8, threshold=CARD, version="3", seed=3)  # v1's thresholds
    return r


def admit(c, pid: str, unit: str, at: dt.datetime = T0) -> None:
    r = c.post("/patients", json={"patient_id": pid, "age": 60.0, "unit": unit, "icu_admit_time": iso(at)},
               headers=hdr("ingest"))
    assert r.status_code == 201, r.text


def post(c, pid: str, hours) -> list[dict]:
    out = []
    for h in hours:
        r = c.post("/predict", json=obs(pid, h, **VITALS), headers=hdr("ingest"))
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def test_figures_are_per_period_not_added_across_a_change(db_url, root):
    with client_for(db_url, root, clock="simulated") as c:
        admit(c, "m1", "MICU")
        admit(c, "s1", "SICU")
        before = post(c, "m1", range(4)) + post(c, "s1", range(4))
        assert all(CARD <= r["risk"] < 0.575 for r in before), "the premise: risks between the two thresholds"
        # the change is stamped by the simulated clock: T0 + 3 h, the latest stored observation
        r = c.put("/units/MICU/operating-point", json={"point_id": HIGH, "by": "dr.admin", "note": "nights"},
                  headers=hdr("admin"))
        assert r.status_code == 200, r.text
        admit(c, "m2", "MICU", T0 + dt.timedelta(hours=4))  # admitted after the change (its hours start then)
        after = post(c, "m1", range(4, 8)) + post(c, "m2", range(4, 8))
        assert all(r["risk"] < 0.575 and r["alarm_id"] is None for r in after)
        whole = c.get("/stats", headers=hdr("viewer")).json()
        body = c.get("/stats/periods", headers=hdr("viewer")).json()

    assert "operating point" in body["definition"] and body["window_hours"] == [-12.0, 3.0]
    periods = [(p["unit"], p["point_id"], p["threshold"], p["start"], p["end"], p["chosen_by"]) for p in body["periods"]]
    change = iso(T0 + dt.timedelta(hours=3))
    assert periods == [("MICU", None, CARD, None, change, None),
                       ("MICU", HIGH, 0.575, change, None, "dr.admin"),
                       ("SICU", None, CARD, None, None, None),
                       ("other", None, CARD, None, None, None)]
    micu_card, micu_high, sicu, other = body["periods"]
    # MICU at the card's threshold: m1's hours 0-3 (hour 3 was scored before the change) and its one alarm
    assert (micu_card["patients"], micu_card["alarms"], micu_card["patient_days"]) == (1, 1, 4 / 24)
    assert micu_card["alarms_per_patient_day"] == pytest.approx(6.0)
    # MICU at the stricter point: m1's hours 4-7 and m2's, no alarm; not 1 alarm over 12 patient-hours
    assert (micu_high["patients"], micu_high["alarms"], micu_high["patient_days"]) == (2, 0, 8 / 24)
    assert micu_high["alarms_per_patient_day"] == 0.0
    assert (sicu["patients"], sicu["alarms"], sicu["patient_days"]) == (1, 1, 4 / 24)
    assert (other["patients"], other["alarms"], other["alarms_per_patient_day"]) == (0, 0, None)
    # the whole ward adds the periods: that is the number the page must not show alone
    assert whole["alarms"] == 2 and whole["patient_days"] == pytest.approx(16 / 24)


def test_periods_of_a_unit_follow_its_changes_in_time_order():
    t = [T0 + dt.timedelta(hours=h) for h in (0, 5, 9)]
    changes = [Change(t[2], "SICU", "b", 0.5, "c", 0.7, "z"), Change(t[1], "SICU", "a", 0.3, "b", 0.5, "y")]
    got = unit_periods(["MICU", "SICU"], changes, {"MICU": (None, 0.2), "SICU": ("c", 0.7)})
    assert got == [Period("MICU", None, 0.2, None, None),
                   Period("SICU", "a", 0.3, None, t[1]),
                   Period("SICU", "b", 0.5, t[1], t[2], "y", cause="point_change"),
                   Period("SICU", "c", 0.7, t[2], None, "z", cause="point_change")]


def switch(c, version: str) -> None:
    r = c.post("/models/active", json={"name": "sepsis-cfc", "version": version, "by": "dr upgrade", "note": "v" + version},
               headers=hdr("admin"))
    assert r.status_code == 200, r.text


def test_a_model_switch_that_changes_a_units_threshold_starts_its_period(db_url, root):
    with client_for(db_url, root, clock="simulated") as c:
        admit(c, "m1", "MICU")
        admit(c, "s1", "SICU")
        post(c, "m1", range(2)) + post(c, "s1", range(2))
        r = c.put("/units/MICU/operating-point", json={"point_id": HIGH, "by": "dr.admin", "note": "nights"},
                  headers=hdr("admin"))  # at T0 + 1 h; version 2 measures this point at the same threshold
        assert r.status_code == 200, r.text
        post(c, "m1", range(2, 4)) + post(c, "s1", range(2, 4))
        switch(c, "2")  # at T0 + 3 h: the units at the default point go from 0.15 to 0.3, MICU stays at 0.575
        post(c, "m1", range(4, 6)) + post(c, "s1", range(4, 6))
        body = c.get("/stats/periods", headers=hdr("viewer")).json()
        changes = c.get("/audit", params={"action": "threshold_change"}, headers=hdr("viewer")).json()

    got = [(p["unit"], p["point_id"], p["threshold"], p["start"], p["end"], p["chosen_by"], p["cause"], p["model"],
            p["model_version"]) for p in body["periods"]]
    chose, switched = iso(T0 + dt.timedelta(hours=1)), iso(T0 + dt.timedelta(hours=3))
    assert got == [("MICU", None, CARD, None, chose, None, None, "sepsis-cfc", "1"),
                   ("MICU", HIGH, 0.575, chose, None, "dr.admin", "point_change", "sepsis-cfc", "1"),
                   ("SICU", None, CARD, None, switched, None, None, "sepsis-cfc", "1"),
                   ("SICU", None, CARD2, switched, None, "dr upgrade", "model_switch", "sepsis-cfc", "2"),
                   ("other", None, CARD, None, switched, None, None, "sepsis-cfc", "1"),
                   ("other", None, CARD2, switched, None, "dr upgrade", "model_switch", "sepsis-cfc", "2")]
    sicu_v1, sicu_v2 = body["periods"][2:4]
    # s1's hours 0-3 were alarmed at 0.15 by version 1, hours 4-5 at 0.3 by version 2: apart, not added
    assert (sicu_v1["patients"], sicu_v1["patient_days"]) == (1, 4 / 24)
    assert (sicu_v2["patients"], sicu_v2["patient_days"]) == (1, 2 / 24)
    # the switch's changes are audited as such, by its admin, for the units it changed only
    by_switch = [(e["unit"], e["details"]["cause"], e["actor"]["person"], e["note"]) for e in changes
                 if e["details"].get("cause") == "model_switch"]
    assert sorted(by_switch) == [("SICU", "model_switch", "dr upgrade", "v2"), ("other", "model_switch", "dr upgrade", "v2")]


def test_a_model_switch_that_keeps_every_threshold_starts_no_period(db_url, root):
    with client_for(db_url, root, clock="simulated") as c:
        admit(c, "s1", "SICU")
        post(c, "s1", range(3))
        switch(c, "3")
        post(c, "s1", range(3, 5))
        body = c.get("/stats/periods", headers=hdr("viewer")).json()
        changes = c.get("/audit", params={"action": "threshold_change"}, headers=hdr("viewer")).json()

    assert changes == []
    got = [(p["unit"], p["point_id"], p["threshold"], p["start"], p["end"], p["cause"], p["model"], p["model_version"])
           for p in body["periods"]]
    # one period per unit, opened under version 1 (the first switch's `from`) and still in force
    assert got == [(u, None, CARD, None, None, None, "sepsis-cfc", "1") for u in ("MICU", "SICU", "other")]
    assert body["periods"][1]["patient_days"] == 5 / 24
