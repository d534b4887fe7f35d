"""Racing alarm and outcome transitions across two real server processes on one database: of two
transitions released together exactly one wins where the state machine allows only one, the loser
is a 409 naming the current state, and no alarm ends in a state that no serial order gives."""
from __future__ import annotations

import contextlib
import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from service.storage.db import make_engine, migrate
from tests.service.conftest import PG_URL, T0, _pg_schema, hdr, iso
from tests.service.live import live_servers, service_env

PAIRS = 12  # per kind of race; each pair is released at once through a barrier


def _race(requests: list[tuple[httpx.Client, str, dict]]) -> list[httpx.Response]:
    """Fire the pairs' requests so that both of a pair leave at the same moment."""
    barriers = [threading.Barrier(2) for _ in range(len(requests) // 2)]

    def fire(i):
        client, path, body = requests[i]
        barriers[i // 2].wait()
        return client.post(path, json=body, headers=hdr("clinician"))

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(fire, range(len(requests))))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def servers(request, tmp_path_factory, models_root):
    """Two servers on one database, shared by this module's races (starting processes is the slow part)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            db_url = f"sqlite:///{tmp_path_factory.mktemp('races') / 'service.db'}"
        elif not PG_URL:
            pytest.skip("SEPSIS_TEST_PG_URL is not set")
        else:
            db_url = stack.enter_context(_pg_schema())
        engine = make_engine(db_url)
        migrate(engine)  # once, before the servers start, as `python -m service --workers N` does
        engine.dispose()
        # the "always" model (threshold 0) raises an alarm on every observation not suppressed
        urls = stack.enter_context(live_servers(2, service_env(db_url, models_root, model="always",
                                                               key_cache_seconds=0)))
        clients = [stack.enter_context(httpx.Client(base_url=u, timeout=30)) for u in urls]
        yield clients


def _alarm(client: httpx.Client, patient: str, hour: float) -> dict:
    body = {"patient_id": patient, "timestamp": iso(T0 + dt.timedelta(hours=hour)), "vitals": {"HR": 90}}
    r = client.post("/predict", json=body, headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    return r.json()


def test_racing_alarm_transitions_have_one_winner(servers):
    a, b = servers
    kinds = [("ack", "ack"), ("resolve", "resolve"), ("ack", "resolve")]
    bodies = {"ack": {"by": "dr.a", "reason": "confirmed"}, "resolve": {"by": "dr.b", "note": "done"}}
    alarms, requests = [], []
    for kind in kinds:
        for i in range(PAIRS):
            alarm_id = _alarm(a, f"race-{kind[0]}-{kind[1]}-{i}", 0)["alarm_id"]
            alarms.append((kind, alarm_id))
            requests += [(a, f"/alarms/{alarm_id}/{kind[0]}", bodies[kind[0]]),
                         (b, f"/alarms/{alarm_id}/{kind[1]}", bodies[kind[1]])]
    responses = _race(requests)
    stored = {x["id"]: x for x in b.get("/alarms", headers=hdr("viewer")).json()}
    for n, (kind, alarm_id) in enumerate(alarms):
        first, second = responses[2 * n], responses[2 * n + 1]
        codes = (first.status_code, second.status_code)
        row = stored[alarm_id]
        if kind[0] == kind[1]:
            assert sorted(codes) == [200, 409], (kind, codes)
            loser = first if first.status_code == 409 else second
            assert f"is {row['state']}" in loser.json()["detail"], loser.json()
        else:  # ack then resolve is a legal sequence; resolve then ack is not
            assert second.status_code == 200, (kind, codes, second.text)
            assert first.status_code in (200, 409), (kind, codes)
            if first.status_code == 409:
                assert "is resolved" in first.json()["detail"] and row["acknowledged_by"] is None
            else:
                assert row["acknowledged_by"] == "dr.a"
        expected = "acknowledged" if kind == ("ack", "ack") else "resolved"
        assert row["state"] == expected, (kind, codes, row)
        assert (row["resolved_at"] is not None) == (expected == "resolved"), row  # no acknowledged+resolved hybrid


def test_a_resolved_alarm_after_a_race_never_suppresses(servers):
    a, b = servers
    ids = [_alarm(a, f"supp-{i}", 0)["alarm_id"] for i in range(PAIRS)]
    requests = []
    for alarm_id in ids:
        requests += [(a, f"/alarms/{alarm_id}/ack", {"by": "x", "reason": "confirmed"}),
                     (b, f"/alarms/{alarm_id}/resolve", {"by": "y"})]
    _race(requests)
    for i, alarm_id in enumerate(ids):
        again = _alarm(b, f"supp-{i}", 1)
        assert again["alarm_id"] not in (None, alarm_id), again


def test_racing_outcomes_record_one_and_refuse_the_other(servers):
    a, b = servers
    requests = []
    for i in range(2 * PAIRS):
        pid = f"out-{i}"
        _alarm(a, pid, 0)
        requests += [(a, f"/patients/{pid}/outcome", {"outcome": "sepsis", "onset_time": iso(T0), "recorded_by": "a"}),
                     (b, f"/patients/{pid}/outcome", {"outcome": "no_sepsis", "recorded_by": "b"})]
    responses = _race(requests)
    for i in range(2 * PAIRS):
        first, second = responses[2 * i], responses[2 * i + 1]
        assert sorted((first.status_code, second.status_code)) == [200, 409], (first.text, second.text)
        winner, loser = (first, second) if first.status_code == 200 else (second, first)
        stored = a.get(f"/patients/out-{i}", headers=hdr("viewer")).json()
        assert stored["outcome"] == winner.json()["outcome"]
        assert f"already has outcome {stored['outcome']!r}" in loser.json()["detail"]
