"""Operating points: the model's measured table and each unit's choice
at GET /operating-points; an admin chooses a unit's point with PUT /units/{unit}/operating-point,
audited, and from then on that unit's observations raise alarms at its threshold."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert

from models.operating_points import load_operating_points, risk_in_words
from models.testing import write_fixture_model
from service.storage.tables import UnitOperatingPoint
from tests.service.conftest import T0, client_for, hdr, iso, obs

CARD = 0.15  # the card's threshold; the fixture's points: 0.15, (1 + 0.15) / 2 = 0.575, 0.15 / 2 = 0.075
HIGH = "alarms_per_day_0.2"
VITALS = {"HR": 80.0}  # with these demographics the fixture's risk is about 0.22: between 0.15 and 0.575


@pytest.fixture(scope="module")
def op_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("op_models")
    write_fixture_model(root / "sepsis-cfc" / "1", state_size=8, threshold=CARD)
    write_fixture_model(root / "bare" / "1", state_size=8, threshold=CARD, name="bare", operating_points=False)
    return root


@pytest.fixture
def oc(db_url, op_root):
    with client_for(db_url, op_root) as c:
        yield c


def admit_and_post(c, pid: str, unit: str | None) -> dict:
    body = {"patient_id": pid, "age": 60.0, "icu_admit_time": iso(T0)}
    if unit:
        body["unit"] = unit
    assert c.post("/patients", json=body, headers=hdr("ingest")).status_code == 201
    r = c.post("/predict", json=obs(pid, 0, **VITALS), headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    return r.json()


def choose(c, unit: str, point_id: str, role: str = "admin", **extra):
    return c.put(f"/units/{unit}/operating-point", json={"point_id": point_id, "by": "dr.admin", **extra},
                 headers=hdr(role))


def units_of(body: dict) -> dict:
    return {u["unit"]: u for u in body["units"]}


def test_table_and_default_choices(oc):
    body = oc.get("/operating-points", headers=hdr("viewer")).json()
    assert (body["model"], body["model_version"], body["card_threshold"]) == ("sepsis-cfc", "1", CARD)
    assert [(p["id"], p["threshold"]) for p in body["table"]["points"]] == \
        [("utility_optimum", CARD), (HIGH, 0.575), ("sensitivity_0.8", 0.075)]
    assert body["table"]["risk_bands"][0]["low"] == 0.0 and "validation" in body["table"]["points"][0]
    # the fixture's table names no default_point and measured no alarm policy: the card's threshold,
    # with the 12 h lockout alone
    unmeasured = {"threshold": CARD, "lockout_hours": 12.0, "rise_factor": None, "tiers": []}
    assert units_of(body) == {u: {"unit": u, "point_id": None, "threshold": CARD, "label": "the model card's threshold",
                                  "chosen_by": None, "chosen_at": None, "note": None, "chosen_on": None,
                                  "alarm_policy": {**unmeasured, "description": units_of(body)[u]["alarm_policy"]["description"]}}
                              for u in ("MICU", "SICU", "other")}
    assert body["default_point"] is None


def test_a_units_choice_is_audited_and_decides_which_observations_raise(oc, op_root):
    before = admit_and_post(oc, "m0", "MICU")
    assert CARD <= before["risk"] < 0.575, "the premise: the risk lies between the two thresholds"
    assert before["alarm"] and before["alarm_id"] is not None and before["threshold"] == CARD

    r = choose(oc, "MICU", HIGH, note="too many alarms on nights")
    assert r.status_code == 200, r.text
    micu = units_of(r.json())["MICU"]
    assert (micu["point_id"], micu["threshold"], micu["chosen_by"], micu["note"], micu["chosen_on"]) == \
        (HIGH, 0.575, "dr.admin", "too many alarms on nights", "sepsis-cfc 1")
    assert units_of(oc.get("/operating-points", headers=hdr("viewer")).json())["MICU"] == micu

    events = oc.get("/audit", params={"action": "threshold_change"}, headers=hdr("viewer")).json()
    assert len(events) == 1
    e = events[0]
    assert (e["unit"], e["note"], e["actor"]["role"], e["actor"]["person"], e["actor"]["key_name"]) == \
        ("MICU", "too many alarms on nights", "admin", "dr.admin", "bootstrap")
    assert e["details"]["from"] == {"point_id": None, "threshold": CARD}
    assert e["details"]["to"] == {"point_id": HIGH, "threshold": 0.575}

    # the same observation: the MICU patient now stays below its unit's threshold, the others not
    after = admit_and_post(oc, "m1", "MICU")
    assert after["risk"] == before["risk"]
    assert (after["alarm"], after["alarm_id"], after["threshold"]) == (False, None, 0.575)
    sicu = admit_and_post(oc, "s1", "SICU")
    assert sicu["alarm"] and sicu["alarm_id"] is not None and sicu["threshold"] == CARD
    unrecorded = admit_and_post(oc, "u1", None)  # no unit recorded: the 'other' unit's threshold
    assert unrecorded["alarm_id"] is not None and unrecorded["threshold"] == CARD
    assert choose(oc, "other", HIGH).status_code == 200
    assert admit_and_post(oc, "u2", None)["alarm_id"] is None

    # stored as scored: the earlier observation keeps its threshold and its alarm
    m0 = oc.get("/patients/m0", headers=hdr("viewer")).json()
    assert m0["timeline"][0]["alarm"] is True and m0["active_alarm_id"] == before["alarm_id"]
    m1 = oc.get("/patients/m1", headers=hdr("viewer")).json()
    assert m1["timeline"][0]["alarm"] is False
    assert (m1["threshold"], m1["operating_point"]) == (0.575, HIGH)
    points = load_operating_points(op_root / "sepsis-cfc" / "1")
    assert m1["risk_in_words"] == risk_in_words(points, m1["last_risk"], 0.575)
    assert "below the alarm threshold (57%, fixture: a higher threshold)" in m1["risk_in_words"]


def test_refusals_name_the_field_and_change_nothing(oc):
    r = choose(oc, "MICU", HIGH, role="viewer")
    assert r.status_code == 403 and r.json() == {
        "detail": "role 'viewer' may not do this; it needs a key with the 'admin' permission"}
    assert choose(oc, "MICU", HIGH, role="clinician").status_code == 403
    r = choose(oc, "MICU", "alarms_per_day_9")
    assert r.status_code == 422
    (problem,) = r.json()["errors"]
    assert problem["field"] == "point_id" and "utility_optimum" in problem["reason"]
    r = choose(oc, "CCU", HIGH)
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["unit"]
    r = oc.put("/units/SICU/operating-point", json={"point_id": HIGH}, headers=hdr("admin"))
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["by"]
    body = oc.get("/operating-points", headers=hdr("viewer")).json()
    assert all(u["point_id"] is None for u in body["units"])
    assert oc.get("/audit", params={"action": "threshold_change"}, headers=hdr("viewer")).json() == []


def test_a_model_without_operating_points(db_url, op_root):
    with client_for(db_url, op_root, model="bare") as c:
        body = c.get("/operating-points", headers=hdr("viewer")).json()
        assert body["table"] is None and all(u["threshold"] == CARD for u in body["units"])
        r = choose(c, "MICU", "utility_optimum")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "point_id"
        assert "ships no operating points" in r.json()["errors"][0]["reason"]
        # risk in words still says where the risk stands against the threshold
        admit_and_post(c, "b1", "MICU")
        assert "the alarm threshold (15%)" in c.get("/patients/b1", headers=hdr("viewer")).json()["risk_in_words"]


def test_a_choice_made_on_another_model_resolves_against_the_loaded_one(oc):
    """After a model upgrade the stored choice names the old model: the loaded model's point of the
    same id applies, or the card's threshold when the loaded model has no such point."""
    rows = [dict(unit="MICU", point_id=HIGH, threshold=0.9), dict(unit="SICU", point_id="retired_point", threshold=0.3)]
    with oc.app.state.services.engine.begin() as conn:
        conn.execute(insert(UnitOperatingPoint.__table__), [
            dict(r, model_name="sepsis-cfc", model_version="0", chosen_by="dr.old", note=None,
                 chosen_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)) for r in rows])
    units = units_of(oc.get("/operating-points", headers=hdr("viewer")).json())
    assert (units["MICU"]["point_id"], units["MICU"]["threshold"], units["MICU"]["chosen_on"]) == \
        (HIGH, 0.575, "sepsis-cfc 0")
    assert (units["SICU"]["point_id"], units["SICU"]["threshold"]) == (None, CARD)
    assert admit_and_post(oc, "m9", "MICU")["threshold"] == 0.575
