"""The micro-batcher gathers concurrent steps into one model run and hands each caller its rows."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.scoring.batcher import MicroBatcher
from tests.service.conftest import client_for, hdr, obs, reference_risks


def test_gathers_concurrent_submissions_and_splits_results():
    runs = []

    def step(o, e, s):
        runs.append(len(o))
        return o[:, 0] * 2, s + e

    b = MicroBatcher(step, max_size=64, max_wait_s=0.2)
    barrier = threading.Barrier(8)

    def call(i):
        barrier.wait()
        return b.step(np.full((1, 40), i, np.float32), np.array([[i]], np.float32), np.zeros((1, 3), np.float32))

    with ThreadPoolExecutor(8) as pool:
        out = list(pool.map(call, range(8)))
    b.close()
    assert sum(runs) == 8 and len(runs) < 8  # fewer runs than requests
    for i, (risk, state) in enumerate(out):
        assert risk.tolist() == [2 * i] and state.tolist() == [[i, i, i]]


def test_size_bound_and_errors_reach_every_caller():
    runs = []

    def step(o, e, s):
        runs.append(len(o))
        if (o == -1).any():
            raise ValueError("bad row")
        return o[:, 0], s

    b = MicroBatcher(step, max_size=4, max_wait_s=0.2)
    futures = [b.submit(np.zeros((1, 40), np.float32), np.zeros((1, 1), np.float32), np.zeros((1, 2), np.float32))
               for _ in range(10)]
    [f.result() for f in futures]
    assert max(runs) <= 4 and sum(runs) == 10
    bad = b.submit(np.full((1, 40), -1, np.float32), np.zeros((1, 1), np.float32), np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="bad row"):
        bad.result(timeout=5)
    b.close()


def test_service_with_microbatching_on_cpu_matches_reference(sqlite_url, models_root):
    streams = {f"m{i}": [(float(h), {"HR": 70.0 + i + h}) for h in range(4)] for i in range(6)}
    with client_for(sqlite_url, models_root, microbatch="on", microbatch_max_wait_ms=20) as c:
        assert c.get("/ready").json()["microbatch"] is True

        def run(pid):
            return [c.post("/predict", json=obs(pid, h, **v), headers=hdr("ingest")).json()["risk"]
                    for h, v in streams[pid]]

        with ThreadPoolExecutor(6) as pool:
            got = dict(zip(streams, pool.map(run, streams)))
        metrics = c.get("/metrics", headers=hdr("monitor")).text
    for pid, rows in streams.items():
        assert got[pid] == pytest.approx(reference_risks(rows), rel=1e-5, abs=1e-6)
    count = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith("sepsis_model_batch_rows_count")))
    total = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith("sepsis_model_batch_rows_sum")))
    assert total == 24 and count < 24  # every row ran once, and some runs carried several patients
