"""Concurrent posts for one patient are serialised (no lost state update), within one app and
across two apps (two workers) sharing a database; a restart loses nothing."""
from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.service.conftest import client_for, hdr, obs, reference_risks


def _check_consistent(client, patient: str, accepted: int):
    """The stored stay must be exactly what one serial stream of its stored observations gives."""
    detail = client.get(f"/patients/{patient}", headers=hdr("viewer")).json()
    tl = detail["timeline"]
    assert detail["n_observations"] == len(tl) == accepted
    hours = [int(e["vitals"]["HR"]) - 60 for e in tl]  # HR encodes the hour in these tests
    assert hours == sorted(hours) and len(set(hours)) == len(hours)
    for prev, cur in zip(tl, tl[1:]):
        assert cur["elapsed_hours"] == pytest.approx(hours[tl.index(cur)] - hours[tl.index(prev)])
    rows = [(float(h), {"HR": float(60 + h)}) for h in hours]
    assert [e["risk"] for e in tl] == pytest.approx(reference_risks(rows, icu_admit_hour=float(hours[0])),
                                                   rel=1e-5, abs=1e-6)


def _hammer(clients, patient: str, threads: int = 8, per_thread: int = 6):
    counter = itertools.count()
    lock = threading.Lock()
    statuses = []

    def worker(i):
        c = clients[i % len(clients)]
        for _ in range(per_thread):
            with lock:
                h = next(counter)
            r = c.post("/predict", json=obs(patient, h, HR=60 + h), headers=hdr("ingest"))
            statuses.append(r.status_code)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    assert set(statuses) <= {200, 409}, statuses  # late arrivals are refused, never a 500
    return statuses.count(200)


def test_concurrent_posts_one_patient(db_url, models_root):
    with client_for(db_url, models_root) as c:
        accepted = _hammer([c], "cc1")
        assert accepted > 0
        _check_consistent(c, "cc1", accepted)


def test_two_workers_one_database(db_url, models_root):
    """Two apps do not share in-process locks: only the database's version check protects the state."""
    with client_for(db_url, models_root) as a, client_for(db_url, models_root) as b:
        accepted = _hammer([a, b], "cc2")
        _check_consistent(a, "cc2", accepted)


def test_one_admission_posted_by_two_workers_at_once_is_stored_once(db_url, models_root):
    """The same admission from two workers at the same moment: one creates the patient (201), the
    other, whose insert loses, reads the row and answers it stored already (200), never a 409."""
    with client_for(db_url, models_root) as a, client_for(db_url, models_root) as b:
        for k in range(8):
            body = {"patient_id": f"adm{k}", "age": 60, "unit": "MICU", "icu_admit_time": "2024-03-01T08:00:00Z"}
            barrier = threading.Barrier(2)

            def post(c):
                barrier.wait()
                return c.post("/patients", json=body, headers=hdr("ingest")).status_code

            with ThreadPoolExecutor(2) as pool:
                codes = sorted(pool.map(post, (a, b)))
            assert codes == [200, 201], (k, codes)


def test_concurrent_identical_repeats_store_once(db_url, models_root):
    with client_for(db_url, models_root) as c:
        c.post("/predict", json=obs("cc3", 0, HR=60), headers=hdr("ingest"))
        body = obs("cc3", 1, HR=61)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: c.post("/predict", json=body, headers=hdr("ingest")), range(16)))
        assert {r.status_code for r in results} == {200}
        assert len({r.json()["risk"] for r in results}) == 1
        assert sum(not r.json()["duplicate"] for r in results) == 1
        _check_consistent(c, "cc3", 2)


def test_restart_gives_same_risks_as_uninterrupted_stream(db_url, models_root):
    rows = [(float(h), {"HR": 60.0 + h, "Temp": 37 + h / 10}) for h in range(10)]
    post = lambda c, pid, part: [c.post("/predict", json=obs(pid, h, **v), headers=hdr("ingest")).json()["risk"]  # noqa: E731
                                 for h, v in part]
    with client_for(db_url, models_root) as c:
        before = post(c, "rs", rows[:5])
    with client_for(db_url, models_root) as c:  # a new process would see only the database
        after = post(c, "rs", rows[5:])
        uninterrupted = post(c, "un", rows)
        assert c.get("/patients/rs", headers=hdr("viewer")).json()["n_observations"] == 10
    assert before + after == uninterrupted  # bit-identical: the stored state is the float32 state
