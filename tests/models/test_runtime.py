import json

import numpy as np
import pytest
from onnx import TensorProto

from models.card import ModelCardError
from models.runtime import DeviceUnavailableError, ModelContractError, ModelInputError, StepRuntime
from models.testing import build_fixture_graph, fixture_weights, reference_step, write_fixture_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_fixture_model(tmp_path_factory.mktemp("models") / "sepsis-cfc" / "1", state_size=8, threshold=0.4)


@pytest.fixture(scope="module")
def runtime(model_dir):
    return StepRuntime.open(model_dir, device="cpu", intra_op_threads=1)


def hours(batch: int, seed: int = 0, missing: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    obs = (rng.normal(60, 25, size=(batch, 40))).astype(np.float32)
    obs[rng.random((batch, 40)) < missing] = np.nan
    return obs


def test_opens_on_cpu_with_card_attributes(runtime):
    assert runtime.provider == "CPUExecutionProvider"
    assert (runtime.name, runtime.version, runtime.state_size, runtime.threshold) == ("sepsis-cfc", "1", 8, 0.4)
    assert runtime.card.state_size == 8


def test_auto_device_falls_back_to_cpu_without_cuda(model_dir):
    import onnxruntime

    rt = StepRuntime.open(model_dir)
    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() \
        else "CPUExecutionProvider"
    assert rt.provider == expected


def test_cuda_request_without_gpu_is_a_clear_error(model_dir):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceUnavailableError, match="device='cuda'"):
        StepRuntime.open(model_dir, device="cuda")


def test_unknown_device_is_rejected(model_dir):
    with pytest.raises(ValueError, match="device must be one of"):
        StepRuntime.open(model_dir, device="tpu")


def test_new_state_is_zeros(runtime):
    state = runtime.new_state(3)
    assert state.shape == (3, 8) and state.dtype == np.float32 and not state.any()


def test_step_matches_the_graph_arithmetic(runtime):
    obs, state = hours(5), np.random.default_rng(1).uniform(-1, 1, (5, 8)).astype(np.float32)
    elapsed = np.array([0, 1, 2, 0.5, 12], dtype=np.float32)
    res = runtime.step(obs, elapsed, state)
    risk, next_state = reference_step(obs, elapsed, state, fixture_weights(8))
    assert res.risk.shape == (5,) and res.risk.dtype == np.float32
    assert res.next_state.shape == (5, 8) and res.next_state.dtype == np.float32
    np.testing.assert_allclose(res.risk, risk[:, 0], atol=1e-5)
    np.testing.assert_allclose(res.next_state, next_state, atol=1e-5)
    assert np.all((res.risk >= 0) & (res.risk <= 1))


def test_batch_equals_each_row_alone(runtime):
    obs, elapsed = hours(6, seed=2), np.arange(6, dtype=np.float32)
    state = np.random.default_rng(3).uniform(-1, 1, (6, 8)).astype(np.float32)
    together = runtime.step(obs, elapsed, state)
    for i in range(6):
        alone = runtime.step(obs[i:i + 1], elapsed[i:i + 1], state[i:i + 1])
        np.testing.assert_allclose(alone.risk, together.risk[i:i + 1], atol=1e-6)
        np.testing.assert_allclose(alone.next_state, together.next_state[i:i + 1], atol=1e-6)


def test_state_and_elapsed_change_the_risk(runtime):
    obs = hours(1, seed=4)
    first = runtime.step(obs, [0.0], runtime.new_state(1))
    second = runtime.step(obs, [0.0], first.next_state)
    later = runtime.step(obs, [6.0], first.next_state)
    assert first.risk[0] != second.risk[0]
    assert second.risk[0] != later.risk[0]


def test_missing_values_are_handled(runtime):
    all_missing = np.full((2, 40), np.nan, dtype=np.float32)
    res = runtime.step(all_missing, [0.0, 1.0], runtime.new_state(2))
    assert np.all(np.isfinite(res.risk)) and np.all(np.isfinite(res.next_state))


def test_elapsed_accepts_column_and_float64_is_cast(runtime):
    obs, state = hours(3, seed=5), runtime.new_state(3)
    flat = runtime.step(obs, np.array([0.0, 1.0, 2.0]), state)
    column = runtime.step(obs.astype(np.float64), np.array([[0.0], [1.0], [2.0]]), state.astype(np.float64))
    np.testing.assert_array_equal(flat.risk, column.risk)
    assert column.risk.dtype == np.float32


def test_empty_batch(runtime):
    res = runtime.step(np.zeros((0, 40), np.float32), np.zeros(0, np.float32), runtime.new_state(0))
    assert res.risk.shape == (0,) and res.next_state.shape == (0, 8)


@pytest.mark.parametrize("obs, elapsed, state, message", [
    (np.zeros((2, 39), np.float32), np.zeros(2, np.float32), np.zeros((2, 8), np.float32), r"observation: must have shape \[batch, 40\], got \[2, 39\]"),
    (np.zeros(40, np.float32), np.zeros(1, np.float32), np.zeros((1, 8), np.float32), r"observation: must have shape \[batch, 40\]"),
    (np.zeros((2, 40), np.int64), np.zeros(2, np.float32), np.zeros((2, 8), np.float32), "observation: must be a float array.*int64"),
    (np.array([["a"] * 40]), np.zeros(1, np.float32), np.zeros((1, 8), np.float32), "observation: must be a float array"),
    (np.zeros((2, 40), np.float32), np.zeros(3, np.float32), np.zeros((2, 8), np.float32), "elapsed_hours: has 3 rows but observation has 2"),
    (np.zeros((2, 40), np.float32), np.zeros((2, 2), np.float32), np.zeros((2, 8), np.float32), r"elapsed_hours: must have shape \[batch\] or \[batch, 1\]"),
    (np.zeros((2, 40), np.float32), np.array([1.0, -1.0]), np.zeros((2, 8), np.float32), "elapsed_hours: row 1 is -1.0"),
    (np.zeros((2, 40), np.float32), np.array([np.nan, 1.0]), np.zeros((2, 8), np.float32), "elapsed_hours: row 0 is nan"),
    (np.zeros((2, 40), np.float32), np.zeros(2, np.int32), np.zeros((2, 8), np.float32), "elapsed_hours: must be a float array"),
    (np.zeros((2, 40), np.float32), np.zeros(2, np.float32), np.zeros((2, 9), np.float32), r"state: must have shape \[batch, 8\], got \[2, 9\]"),
    (np.zeros((2, 40), np.float32), np.zeros(2, np.float32), np.zeros((1, 8), np.float32), "state: has 1 rows but observation has 2"),
    (np.zeros((2, 40), np.float32), np.zeros(2, np.float32), np.full((2, 8), np.nan, np.float32), "state: contains NaN"),
])
def test_bad_inputs_raise_model_input_error(runtime, obs, elapsed, state, message):
    with pytest.raises(ModelInputError, match=message):
        runtime.step(obs, elapsed, state)


def test_infinite_observation_names_the_column(runtime):
    obs = np.zeros((2, 40), np.float32)
    obs[1, 2] = np.inf
    with pytest.raises(ModelInputError, match=r"row 1, column 2 \(Temp\) is infinite"):
        runtime.step(obs, np.zeros(2, np.float32), runtime.new_state(2))


def test_run_sequence_equals_stepping_one_patient(runtime):
    obs, elapsed = hours(7, seed=6), np.array([0, 1, 1, 3, 1, 1, 0.5])
    risks = runtime.run_sequence(obs, elapsed)
    state = runtime.new_state(1)
    for t in range(7):
        res = runtime.step(obs[t:t + 1], elapsed[t:t + 1], state)
        state = res.next_state
        assert risks[t] == pytest.approx(res.risk[0], abs=1e-6)
    assert risks.shape == (7,) and risks.dtype == np.float32


def test_run_sequence_checks_lengths(runtime):
    with pytest.raises(ModelInputError, match=r"elapsed: must have shape \[T\] = \[3\]"):
        runtime.run_sequence(hours(3), np.zeros(2))


def test_run_sequences_matches_run_sequence(runtime):
    stays = [(hours(n, seed=n), np.ones(n)) for n in (4, 1, 6, 0, 3)]
    batched = runtime.run_sequences(stays)
    assert [len(r) for r in batched] == [4, 1, 6, 0, 3]
    for (obs, elapsed), risks in zip(stays, batched):
        np.testing.assert_allclose(risks, runtime.run_sequence(obs, elapsed), atol=1e-6)


def test_run_sequences_names_the_bad_stay(runtime):
    with pytest.raises(ModelInputError, match="stay 1: observations: must have shape"):
        runtime.run_sequences([(hours(2), np.ones(2)), (np.zeros((2, 41)), np.ones(2))])


# -- contract between graph and card ---------------------------------------------------------------

def test_card_state_size_disagreeing_with_graph(tmp_path):
    d = write_fixture_model(tmp_path / "m", state_size=8, card_overrides={"state_size": 9})
    with pytest.raises(ModelContractError, match=r"input 'state' has width 8, the card's state_size requires 9"):
        StepRuntime.open(d, device="cpu")


def _replace_graph(directory, model):
    import onnx

    onnx.save(model, str(directory / "model.onnx"))
    return directory


def test_graph_with_wrong_feature_width(tmp_path):
    d = _replace_graph(write_fixture_model(tmp_path / "m"), build_fixture_graph(8, n_features=41))
    with pytest.raises(ModelContractError, match=r"input 'observation' has width 41, the contract requires 40"):
        StepRuntime.open(d, device="cpu")


def test_graph_with_double_input(tmp_path):
    d = _replace_graph(write_fixture_model(tmp_path / "m"), build_fixture_graph(8, observation_dtype=TensorProto.DOUBLE))
    with pytest.raises(ModelContractError, match=r"input 'observation' is tensor\(double\), must be tensor\(float\)"):
        StepRuntime.open(d, device="cpu")


def test_graph_with_renamed_input(tmp_path):
    model = build_fixture_graph(8)
    model.graph.input[1].name = "dt"
    for node in model.graph.node:
        node.input[:] = ["dt" if x == "elapsed_hours" else x for x in node.input]
    d = _replace_graph(write_fixture_model(tmp_path / "m"), model)
    with pytest.raises(ModelContractError, match=r"inputs are \['observation', 'dt', 'state'\]"):
        StepRuntime.open(d, device="cpu")


def test_graph_with_fixed_batch(tmp_path):
    model = build_fixture_graph(8)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    d = _replace_graph(write_fixture_model(tmp_path / "m"), model)
    with pytest.raises(ModelContractError, match="fixes the batch dimension to 1"):
        StepRuntime.open(d, device="cpu")


def test_missing_onnx_file(tmp_path):
    d = write_fixture_model(tmp_path / "m")
    (d / "model.onnx").unlink()
    with pytest.raises(ModelContractError, match=r"model\.onnx: model file not found"):
        StepRuntime.open(d, device="cpu")


def test_corrupt_onnx_file(tmp_path):
    d = write_fixture_model(tmp_path / "m")
    (d / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ModelContractError, match="onnxruntime cannot load the graph"):
        StepRuntime.open(d, device="cpu")


def test_invalid_card_stops_open(tmp_path):
    d = write_fixture_model(tmp_path / "m")
    card = json.loads((d / "model_card.json").read_text())
    card["threshold"] = "high"
    (d / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="field 'threshold'"):
        StepRuntime.open(d, device="cpu")
