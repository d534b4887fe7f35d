"""Dropping the per-hour model states of ended stays (service/lifecycle/retention.py): only those
stays lose them, nothing a user reads changes, and a late value dated before the discharge still
files with the risks it would have had (the rewind replays where no state is stored)."""
import datetime as dt

import pytest
from sqlalchemy import select

from service.__main__ import main as service_main
from service.lifecycle.retention import prune_states
from service.storage.db import make_engine
from service.storage.tables import Observation, Patient, ShadowScore
from tests.service.conftest import T0, client_for, hdr, iso, obs, reference_hourly, vitals_stream
from tests.service.test_predict import post_stream

ROWS = vitals_stream(6)
LATE = (1.5, {"HR": 150.0})  # measured in hour 2, sent after the discharge


def discharge(c, pid, hours):
    r = c.post(f"/patients/{pid}/outcome", json={"outcome": "no_sepsis", "discharged_at": iso(T0 + dt.timedelta(hours=hours))},
               headers=hdr("clinician"))
    assert r.status_code == 200, r.text


def states(engine, pid):
    with engine.connect() as conn:
        live = conn.execute(select(Observation.state).where(Observation.patient_id == pid)).scalars().all()
        shadow = conn.execute(select(ShadowScore.state).where(ShadowScore.patient_id == pid)).scalars().all()
        latest = conn.execute(select(Patient.state).where(Patient.id == pid)).scalar_one()
    return live, shadow, latest


def seen(c, pid):
    """What the ward and an audit read of a stay: its timeline and its messages."""
    return (c.get(f"/patients/{pid}", headers=hdr("viewer")).json()["timeline"],
            c.get(f"/patients/{pid}/messages", headers=hdr("viewer")).json())


def test_ended_stays_lose_their_hourly_states_and_a_late_value_files_as_before(db_url, models_root):
    with client_for(db_url, models_root, shadow_models="sepsis-cfc:2") as c:
        for pid in ("old", "twin", "ward"):
            post_stream(c, pid, ROWS)
        discharge(c, "old", 6)     # ended before the cut-off
        discharge(c, "twin", 30)   # the same stay, ended after it
        before = {pid: seen(c, pid) for pid in ("old", "twin", "ward")}
        engine = make_engine(db_url)
        try:
            pruned = prune_states(engine, T0 + dt.timedelta(hours=12))
            assert (pruned.stays, pruned.hourly_states, pruned.shadow_states) == (1, 6, 6)
            live, shadow, latest = states(engine, "old")
            assert live == [None] * 6 and shadow == [None] * 6 and latest is not None  # the latest state stays
            for pid in ("twin", "ward"):
                live, shadow, _ = states(engine, pid)
                assert len(live) == 6 and all(live) and len(shadow) == 6 and all(shadow)
            assert {pid: seen(c, pid) for pid in ("old", "twin", "ward")} == before
            again = prune_states(engine, T0 + dt.timedelta(hours=12))
            assert (again.stays, again.hourly_states, again.shadow_states) == (0, 0, 0)

            answers = {pid: c.post("/predict", json=obs(pid, LATE[0], **LATE[1]), headers=hdr("ingest")).json()
                       for pid in ("old", "twin")}
            assert answers["old"]["revised_hours"] == answers["twin"]["revised_hours"] == [2, 3, 4, 5, 6]
            want = reference_hourly(ROWS + [LATE])
            for pid in ("old", "twin"):
                timeline = c.get(f"/patients/{pid}", headers=hdr("viewer")).json()["timeline"]
                assert [e["risk"] for e in timeline] == pytest.approx([want[h] for h in range(1, 7)], rel=1e-5, abs=1e-6)
            shadow_old, shadow_twin = states(engine, "old")[1], states(engine, "twin")[1]
            assert shadow_old[1:] == shadow_twin[1:]  # the shadow re-stepped the same hours to the same states
        finally:
            engine.dispose()


def test_the_cli_prunes_by_days_since_the_stay_ended_and_names_a_bad_value(sqlite_url, models_root, monkeypatch,
                                                                            capsys):
    with client_for(sqlite_url, models_root) as c:
        post_stream(c, "gone", ROWS)
        post_stream(c, "here", ROWS)
        discharge(c, "gone", 6)
    monkeypatch.setenv("SEPSIS_DB_URL", sqlite_url)
    monkeypatch.setenv("SEPSIS_MODELS_DIR", str(models_root))
    ended_days = (dt.datetime.now(dt.timezone.utc) - T0).total_seconds() / 86400 - 1  # the discharge is older
    assert service_main(["prune-states", "--ended-days", f"{ended_days:.3f}"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert (report["stays"], report["hourly_states"]) == (1, 6)
    assert (report["before"]["hourly_states"], report["after"]["hourly_states"]) == (12, 6)
    assert report["after"]["hourly_state_bytes"] * 2 == report["before"]["hourly_state_bytes"]
    assert service_main(["prune-states", "--ended-days", "36500"]) == 0  # nothing ended that long ago
    assert json.loads(capsys.readouterr().out)["stays"] == 0
    for bad in ("-2", "1e9", "nan", "week"):
        with pytest.raises(SystemExit) as exit_:
            service_main(["prune-states", "--ended-days", bad])
        assert exit_.value.code == 2 and "--ended-days" in (err := capsys.readouterr().err) and repr(bad) in err


def test_a_cut_off_without_a_time_zone_is_refused(sqlite_url):
    engine = make_engine(sqlite_url)
    with pytest.raises(ValueError, match="time zone"):
        prune_states(engine, dt.datetime(2024, 3, 1))
    engine.dispose()


def test_a_no_sepsis_outcome_without_a_discharge_time_ends_the_stay_when_recorded(sqlite_url, models_root):
    with client_for(sqlite_url, models_root) as c:
        post_stream(c, "ns", ROWS)
        r = c.post("/patients/ns/outcome", json={"outcome": "no_sepsis"}, headers=hdr("clinician"))
        assert r.status_code == 200 and r.json()["status"] == "discharged", r.text
    engine = make_engine(sqlite_url)
    try:
        recorded = dt.datetime.now(dt.timezone.utc)
        assert prune_states(engine, recorded - dt.timedelta(hours=1)).stays == 0  # recorded after that cut-off
        assert prune_states(engine, recorded + dt.timedelta(hours=1)).hourly_states == 6
    finally:
        engine.dispose()
