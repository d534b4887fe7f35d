"""Alarms follow the hourly grid: an alarm nobody answered ends when the risk falls below the
threshold (the policy's episode), a late result that lifts the latest hour over the threshold raises
an alarm that says it came from a late result, and each hour's timeline keeps its first and revised
risk with the message that revised it."""
from __future__ import annotations

import pytest

from models.testing import write_fixture_model
from tests.service.conftest import client_for, hdr, obs, reference_hourly, vitals_stream


def model_at(tmp_path, threshold: float):
    root = tmp_path / "models"
    write_fixture_model(root / "sepsis-cfc" / "1", state_size=8, threshold=threshold)
    return root


def between(high: float, low: float) -> float:
    return (high + low) / 2


def test_an_unanswered_alarm_ends_when_the_risk_falls_below_the_threshold(tmp_path, sqlite_url):
    rows = vitals_stream(12)
    risks = reference_hourly(rows)
    # the first hour whose risk is above the next one's: a threshold between them alarms, then ends
    k = next(h for h in range(1, 12) if risks[h] > risks[h + 1] + 1e-3)
    threshold = between(risks[k], max(risks[k + 1], *(risks[h] for h in range(1, k))) if k > 1 else risks[k + 1])
    if not all(risks[h] < threshold for h in range(1, k)):
        pytest.skip("the fixture's risks do not rise to a single peak here")
    with client_for(sqlite_url, model_at(tmp_path, threshold)) as c:
        answers = [c.post("/predict", json=obs("e1", h, **v), headers=hdr("ingest")).json() for h, v in rows[:k]]
        assert answers[k - 1]["alarm_id"] is not None
        alarm = answers[k - 1]["alarm_id"]
        alarms = lambda: {a["id"]: a for a in c.get("/patients/e1", headers=hdr("viewer")).json()["alarms"]}  # noqa: E731
        assert alarms()[alarm]["state"] == "open"
        c.post("/predict", json=obs("e1", rows[k][0], **rows[k][1]), headers=hdr("ingest"))
        done = alarms()[alarm]
    assert (done["state"], done["resolved_by"]) == ("resolved", "system")
    assert "fell below the threshold" in done["resolve_note"]
    assert [e["action"] for e in done["history"]][-1] == "alarm_ended"


def test_a_late_result_that_lifts_the_latest_hour_raises_an_alarm_that_says_so(tmp_path, sqlite_url):
    rows = vitals_stream(8)
    base = reference_hourly(rows)
    # the late value (drawn in hour 7, resulted after hour 8's vitals) that lifts hour 8 the most
    candidates = [(name, value) for name, values in (("Lactate", (0.5, 4.0, 12.0)), ("WBC", (1.0, 25.0, 60.0)),
                                                      ("Creatinine", (0.3, 4.0, 12.0)), ("Resp", (5.0, 45.0)),
                                                      ("MAP", (40.0, 120.0)), ("HR", (40.0, 180.0)))
                  for value in values]
    best = max(candidates, key=lambda nv: reference_hourly(rows + [(6.5, {nv[0]: nv[1]})])[8])
    late = (6.5, {best[0]: best[1]})
    lifted = reference_hourly(rows + [late])
    if lifted[8] <= base[8] + 1e-4:
        pytest.skip("no late value lifts the fixture's latest risk")
    # hour 8 below the threshold as first shown, above once revised: whatever the earlier hours
    # raised has ended by hour 8, so the revision's alarm is a new one
    threshold = between(lifted[8], base[8])
    with client_for(sqlite_url, model_at(tmp_path, threshold)) as c:
        on_time = [c.post("/predict", json=obs("l1", h, **v), headers=hdr("ingest")).json() for h, v in rows]
        assert on_time[-1]["alarm_id"] is None and on_time[-1]["risk"] < threshold
        r = c.post("/predict", json=obs("l1", late[0], **late[1]), headers=hdr("ingest")).json()
        assert r["iculos"] == 7 and r["revised_hours"] == [7, 8]
        assert r["latest_risk"] == pytest.approx(lifted[8], rel=1e-5)
        detail = c.get("/patients/l1", headers=hdr("viewer")).json()
    *earlier, alarm = detail["alarms"]
    assert alarm["late_result"] is True and alarm["risk"] == pytest.approx(lifted[8], rel=1e-5)
    assert not any(a["late_result"] for a in earlier)
    hour8 = detail["timeline"][7]
    assert hour8["first_risk"] == pytest.approx(base[8], rel=1e-5) and hour8["risk"] == pytest.approx(lifted[8], rel=1e-5)
    assert hour8["revisions"] == 1 and hour8["revised_by"] is not None and hour8["alarm_id"] == alarm["id"]
    assert [e["revisions"] for e in detail["timeline"][:6]] == [0] * 6  # before the late value's hour


def test_an_alarm_raised_and_ended_inside_one_request_is_resolved_at_its_end(tmp_path, sqlite_url):
    """A backfill (or a first request that steps the hours from the admission) can raise an alarm
    and drop below the threshold within itself: the alarm ends there, as the policy's episode does."""
    rows = vitals_stream(12)
    risks = reference_hourly(rows)
    k = next(h for h in range(1, 12) if risks[h] > risks[h + 1] + 1e-3)
    threshold = between(risks[k], risks[k + 1])
    if not all(risks[h] < threshold for h in range(1, k)):
        pytest.skip("the fixture's risks do not rise to a single peak here")
    with client_for(sqlite_url, model_at(tmp_path, threshold)) as c:
        r = c.post("/predict/batch", json={"observations": [obs("b1", h, **v) for h, v in rows[:k + 1]]},
                   headers=hdr("ingest"))
        assert r.status_code == 200, r.text
        [alarm] = c.get("/patients/b1", headers=hdr("viewer")).json()["alarms"]
    assert (alarm["state"], alarm["resolved_by"]) == ("resolved", "system")
    assert alarm["resolved_at"] == obs("b1", rows[k][0])["timestamp"].replace("+00:00", "Z")


def test_a_backfill_supersedes_each_alarm_at_the_next_ones_time(sqlite_url, models_root):
    """30 hours in one request under the threshold-0 model: raised at hour 1, re-sent every 12 h
    (the policy's lockout); each superseded alarm stopped being open when its successor was
    raised, not when the request ran, so the ward's red hours are the policy's."""
    import datetime as dt

    from tests.service.conftest import T0, iso

    with client_for(sqlite_url, models_root, model="always", clock="simulated") as c:
        r = c.post("/predict/batch", json={"observations": [obs("bf", h, HR=90.0) for h in range(30)]},
                   headers=hdr("ingest"))
        assert r.status_code == 200, r.text
        alarms = c.get("/patients/bf", headers=hdr("viewer")).json()["alarms"]
    assert [a["raised_at"] for a in alarms] == [iso(T0 + dt.timedelta(hours=h)) for h in (0, 12, 24)]
    assert [a["resolved_at"] for a in alarms[:2]] == [alarms[1]["raised_at"], alarms[2]["raised_at"]]
