"""States kept on the execution device between steps give exactly the host round-trip's numbers."""
import numpy as np
import pytest

from models.runtime import ModelInputError, StepRuntime
from models.testing import write_fixture_model


@pytest.fixture
def runtime(tmp_path):
    return StepRuntime.open(write_fixture_model(tmp_path / "m", state_size=6), device="cpu")


def random_stays(n=12, seed=0):
    rng = np.random.default_rng(seed)
    stays = []
    for _ in range(n):
        t = int(rng.integers(1, 30))
        obs = rng.normal(60, 20, (t, 40)).astype(np.float32)
        obs[rng.random((t, 40)) < 0.8] = np.nan
        gaps = rng.uniform(0, 3, t).astype(np.float32)
        gaps[0] = 0
        stays.append((obs, gaps))
    return stays


def test_resident_lockstep_equals_host_state_round_trip(runtime):
    stays = random_stays()
    host = runtime.run_sequences(stays, resident=False)
    resident = runtime.run_sequences(stays, resident=True)
    for a, b in zip(host, resident):
        np.testing.assert_array_equal(a, b)


def test_resident_states_follow_the_step_function(runtime):
    obs, gaps = random_stays(n=1, seed=3)[0]
    states = runtime.resident_states(3)
    host_state = runtime.new_state(3)
    for t in range(len(obs)):
        o = np.repeat(obs[t:t + 1], 3, axis=0)
        g = np.full((3, 1), gaps[t], np.float32)
        expected = runtime.step(o, g, host_state)
        host_state = expected.next_state
        np.testing.assert_allclose(states.step(o, g), expected.risk, rtol=0, atol=0)
    np.testing.assert_array_equal(states.states(), host_state)


def test_resident_states_reject_more_patients_than_they_hold(runtime):
    states = runtime.resident_states(2)
    with pytest.raises(ModelInputError, match="n <= 2"):
        states.step(np.full((3, 40), np.nan, np.float32), np.zeros(3, np.float32))
