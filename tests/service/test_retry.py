"""A write that loses to another writer is retried from a fresh read; when the patient's state read
again is what the first attempt stepped from, the computed step is reused: the model runs once per
observation."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from service.scoring.ingest import Ingestor
from tests.service.conftest import client_for, hdr, obs, reference_risks


@pytest.fixture
def counted(db_url, models_root, monkeypatch):
    """A client whose model counts its rows, and whose first write of each request loses a race:
    another writer bumps the patients' version between the read and the write."""
    with client_for(db_url, models_root) as c:
        services = c.app.state.services
        rows, stores = [], []
        real_run = services.model.run

        def run(o, e, s):
            rows.append(len(o))
            return real_run(o, e, s)

        real_store = Ingestor._store

        def store(self, plans, results, *admissions):
            stores.append(len(plans))
            if len(stores) == 1:  # the competing writer commits in between
                with self.engine.begin() as conn:
                    conn.execute(text("UPDATE patients SET version = version + 1"))
            return real_store(self, plans, results, *admissions)

        monkeypatch.setattr(services.model, "run", run)
        monkeypatch.setattr(Ingestor, "_store", store)
        yield c, rows, stores


def test_a_retried_single_observation_runs_the_model_once(counted):
    c, rows, stores = counted
    first = [(0.0, {"HR": 80.0, "Age": 60.0})]
    assert c.post("/predict", json=obs("rt1", 0, HR=80.0, Age=60.0), headers=hdr("ingest")).status_code == 200
    rows.clear(), stores.clear()
    r = c.post("/predict", json=obs("rt1", 1, HR=95.0), headers=hdr("ingest"))
    assert r.status_code == 200 and stores == [1, 1]  # the first write lost and was retried
    assert rows == [1]  # ... with the step computed once
    assert r.json()["risk"] == pytest.approx(reference_risks(first + [(1.0, {"HR": 95.0})])[1], rel=1e-5, abs=1e-6)
    assert c.get("/patients/rt1", headers=hdr("viewer")).json()["n_observations"] == 2


def test_a_retried_batch_runs_each_step_once(counted):
    c, rows, stores = counted
    for pid in ("rb1", "rb2", "rb3"):
        assert c.post("/predict", json=obs(pid, 0, HR=70.0), headers=hdr("ingest")).status_code == 200
    rows.clear(), stores.clear()
    batch = [obs(pid, h, HR=70.0 + h) for pid in ("rb1", "rb2", "rb3") for h in (1, 2)]
    r = c.post("/predict/batch", json={"observations": batch}, headers=hdr("ingest"))
    assert r.status_code == 200 and len(stores) == 2
    assert rows == [3, 3] and r.json()["model_runs"] == 2  # two steps across the three patients, once each
    expected = reference_risks([(0.0, {"HR": 70.0}), (1.0, {"HR": 71.0}), (2.0, {"HR": 72.0})])[1:]
    for pid in ("rb1", "rb2", "rb3"):
        got = [x["risk"] for x in r.json()["results"] if x["patient_id"] == pid]
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
