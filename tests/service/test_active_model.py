"""A model switch outlives the process that made it: a restart serves the switched
model, not the configured one, and every other process on the database follows the switch."""
from __future__ import annotations

import datetime as dt
import threading
import time

from sqlalchemy import create_engine

from service.lifecycle import active as active_model
from tests.service.conftest import client_for, hdr, obs

SWITCH = {"name": "sepsis-cfc", "version": "2", "by": "dr admin", "note": "upgrade"}


def _active(client) -> str:
    r = client.get("/models", headers=hdr("viewer"))
    assert r.status_code == 200, r.text
    return r.json()["active"]["version"]


def test_a_restart_serves_the_switched_model(db_url, models_root):
    with client_for(db_url, models_root, model_follow_s=0) as c:  # configured: version 1
        assert c.post("/predict", json=obs("r1", 0, HR=80.0), headers=hdr("ingest")).json()["model_version"] == "1"
        assert c.post("/models/active", json=SWITCH, headers=hdr("admin")).status_code == 200
    with client_for(db_url, models_root, model_follow_s=0) as c:  # the same configuration, restarted
        assert _active(c) == "2"
        assert c.get("/ready").json()["model_version"] == "2"
        r = c.post("/predict", json=obs("r1", 1, HR=85.0), headers=hdr("ingest")).json()
        assert r["model_version"] == "2"


def test_another_process_follows_a_switch(db_url, models_root):
    with client_for(db_url, models_root, model_follow_s=0.1) as a, \
            client_for(db_url, models_root, model_follow_s=0.1) as b:
        assert _active(a) == _active(b) == "1"
        assert b.post("/predict", json=obs("f1", 0, HR=80.0), headers=hdr("ingest")).status_code == 200
        assert a.post("/models/active", json=SWITCH, headers=hdr("admin")).status_code == 200
        deadline = time.monotonic() + 20
        while _active(b) != "2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _active(b) == "2", "the second process did not follow the switch"
        assert b.post("/predict", json=obs("f1", 1, HR=82.0), headers=hdr("ingest")).json()["model_version"] == "2"


def test_a_recorded_model_missing_here_falls_back_to_the_configured_one(sqlite_url, models_root):
    with client_for(sqlite_url, models_root, model_follow_s=0):
        pass  # migrated
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        active_model.record(conn, "sepsis-cfc", "99", dt.datetime.now(dt.timezone.utc), "someone")
    engine.dispose()
    with client_for(sqlite_url, models_root, model_follow_s=0) as c:
        assert _active(c) == "1"
        assert c.post("/predict", json=obs("m1", 0, HR=80.0), headers=hdr("ingest")).json()["model_version"] == "1"


def _switches(client) -> list[dict]:
    """The model_switch audit rows, oldest first."""
    rows = client.get("/audit", params={"action": "model_switch"}, headers=hdr("admin")).json()
    return sorted(rows, key=lambda r: r["id"])


def _assert_chain(client, first: str) -> None:
    """Each switch's `from` is the previous one's `to`, and the record names the last `to`."""
    switches = _switches(client)
    froms = [s["details"]["from"] for s in switches]
    tos = [s["details"]["to"] for s in switches]
    assert froms == [first] + tos[:-1], list(zip(froms, tos))
    if tos:
        engine = create_engine(client.app.state.services.settings.db_url)
        with engine.connect() as conn:
            assert ":".join(active_model.recorded(conn)) == tos[-1]
        engine.dispose()


def test_a_second_switch_on_the_database_is_refused_while_one_runs(db_url, models_root, monkeypatch):
    """Two processes (two apps on one database, sharing no locks) switch to different models: the
    one asked while the other rebuilds is a 409 naming the running switch, and nothing changes for
    it; asked afterwards, it runs from the model the first switched to."""
    with client_for(db_url, models_root, model_follow_s=0) as a, client_for(db_url, models_root, model_follow_s=0) as b:
        assert a.post("/predict", json=obs("s1", 0, HR=80.0), headers=hdr("ingest")).status_code == 200
        other = {"name": "always", "version": "1", "by": "dr b"}
        meanwhile = []
        renew = active_model.renew

        def b_switches_meanwhile(engine, token):
            renew(engine, token)
            if not meanwhile:  # A has claimed the switch and rebuilt its first chunk
                meanwhile.append(b.post("/models/active", json=other, headers=hdr("admin")))

        monkeypatch.setattr(active_model, "renew", b_switches_meanwhile)
        r = a.post("/models/active", json=SWITCH, headers=hdr("admin"))
        assert r.status_code == 200, r.text
        assert meanwhile[0].status_code == 409, meanwhile[0].text
        assert "a model switch to sepsis-cfc:2 is running" in meanwhile[0].json()["detail"]
        assert _active(b) == "1" and len(_switches(a)) == 1
        r = b.post("/models/active", json=other, headers=hdr("admin"))
        assert r.status_code == 200, r.text
        assert (r.json()["from_model"], r.json()["to_model"]) == ("sepsis-cfc:2", "always:1")
        _assert_chain(a, "sepsis-cfc:1")


def test_concurrent_switches_in_two_processes_leave_a_chain(db_url, models_root):
    """Both processes asked at the same moment, round after round, to switch to different models:
    whatever each answers (200, or 409 naming a running switch or the model already active), the
    audit's model_switch rows form a chain and the record names the last one's target."""
    targets = [{"name": "sepsis-cfc", "version": "2", "by": "a"}, {"name": "always", "version": "1", "by": "b"},
               {"name": "sepsis-cfc", "version": "1", "by": "a"}]
    with client_for(db_url, models_root, model_follow_s=0) as a, client_for(db_url, models_root, model_follow_s=0) as b:
        for pid in ("c1", "c2", "c3"):
            assert a.post("/predict", json=obs(pid, 0, HR=80.0), headers=hdr("ingest")).status_code == 200
        answers = []
        for k in range(4):
            barrier = threading.Barrier(2)

            def ask(client, body):
                barrier.wait()
                answers.append(client.post("/models/active", json=body, headers=hdr("admin")))

            threads = [threading.Thread(target=ask, args=(a, targets[k % 3])),
                       threading.Thread(target=ask, args=(b, targets[(k + 1) % 3]))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert {r.status_code for r in answers} <= {200, 409}, [r.text for r in answers]
        assert sum(r.status_code == 200 for r in answers) == len(_switches(a)) >= 1
        _assert_chain(a, "sepsis-cfc:1")
