"""GET /stats/periods: the figures of GET /stats per unit and operating-point period, the periods
read from the audit of point changes, so figures of two thresholds are never added together."""
from __future__ import annotations

import datetime as dt

import pytest

from models.testing import write_fixture_model
from service.ward.periods import Change, Period, unit_periods
from tests.service.conftest import T0, client_for, hdr, iso, obs

CARD = 0.15  # the fixture's points: 0.15 (the card's), 0.575 ("alarms_per_day_0.2"), 0.075
HIGH = "alarms_per_day_0.2"
VITALS = {"HR": 80.0}  # the fixture's risk with these is about 0.22: alarms at 0.15, none at 0.575


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("period_models")
    write_fixture_model(r / "sepsis-cfc" / "1", state_size=8, threshold=CARD)
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
                   Period("SICU", "b", 0.5, t[1], t[2], "y"),
                   Period("SICU", "c", 0.7, t[2], None, "z")]
