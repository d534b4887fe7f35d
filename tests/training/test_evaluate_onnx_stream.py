"""evaluate_onnx.stream scores stays in batches of `chunk` (longest first, so its progress bar can
move): every stay's risks must come back in the cohort's order and equal scoring it alone."""
from __future__ import annotations

import numpy as np
import pytest

from models.card import FEATURES
from models.runtime import StepRuntime
from models.testing import write_fixture_model
from training.sepsis.evaluate_onnx import stream


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "sepsis-cfc" / "1"
    write_fixture_model(path)
    return StepRuntime.open(path, device="cpu")


@pytest.mark.parametrize("chunk", [None, 1, 3, 64])
def test_chunked_stream_equals_each_stay_scored_alone(runtime, chunk):
    rng = np.random.default_rng(0)
    lengths = np.array([5, 1, 12, 3, 12, 7, 2, 9])  # unsorted, with a tie, so the batch order differs from the cohort's
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.normal(size=(offsets[-1], len(FEATURES))).astype(np.float32)
    values[rng.random(values.shape) < 0.5] = np.nan
    elapsed = rng.uniform(0.0, 3.0, size=offsets[-1]).astype(np.float32)

    risks = stream(runtime, values, elapsed, offsets, chunk=chunk)

    alone = np.concatenate([runtime.run_sequence(values[a:b], elapsed[a:b]) for a, b in zip(offsets[:-1], offsets[1:])])
    assert risks.shape == (offsets[-1],)
    np.testing.assert_allclose(risks, alone, rtol=0, atol=1e-6)


def test_no_stays_no_risks(runtime):
    assert stream(runtime, np.empty((0, len(FEATURES)), np.float32), np.empty(0, np.float32), np.array([0])).shape == (0,)
