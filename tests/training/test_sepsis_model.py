"""The sepsis model is one streaming step; training runs the same function over sequences."""
import numpy as np
import pytest
import torch

from training.sepsis.features import Featurizer
from training.sepsis.model import ModelConfig, SepsisModel

CORES = ["cfc", "lstm"]


def small_model(core: str, seed: int = 0) -> SepsisModel:
    torch.manual_seed(seed)
    mean = torch.linspace(-1, 60, 40)
    std = torch.linspace(0.5, 20, 40)
    return SepsisModel(ModelConfig(core=core, hidden_size=12, backbone_units=16), mean, std).eval()


def irregular_batch(b=4, t=11, seed=0, missing=0.7):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(b, t, 40, generator=g) * 10 + 50
    obs[torch.rand(b, t, 40, generator=g) < missing] = float("nan")
    dt = torch.rand(b, t, generator=g) * 4  # irregular: 0-4 h between observations
    dt[:, 0] = 0.0
    lengths = torch.tensor([t, t - 4, 3, t - 1][:b])
    mask = torch.arange(t)[None, :] < lengths[:, None]
    obs[~mask] = float("nan")
    dt[~mask] = 0.0
    return obs, dt, mask


def step_loop(model, obs, dt, mask):
    state = torch.zeros(obs.shape[0], model.state_size)
    logits = []
    for i in range(obs.shape[1]):
        logit, nxt = model.step_logit(obs[:, i], dt[:, i : i + 1], state)
        state = torch.where(mask[:, i : i + 1], nxt, state)
        logits.append(logit.squeeze(-1))
    return torch.stack(logits, 1), state


@pytest.mark.parametrize("core", CORES)
def test_sequence_forward_equals_the_streaming_step(core):
    model = small_model(core)
    obs, dt, mask = irregular_batch()
    with torch.no_grad():
        seq = model(obs, dt, mask)
        stepped, _ = step_loop(model, obs, dt, mask)
    assert torch.allclose(seq[mask], stepped[mask], atol=1e-5)


@pytest.mark.parametrize("core", CORES)
def test_a_batch_gives_the_same_risks_as_each_stay_alone(core):
    """Per-sample time spans: a stay's risks must not depend on which stays share its batch."""
    model = small_model(core)
    obs, dt, mask = irregular_batch()
    with torch.no_grad():
        batched = model(obs, dt, mask)
        for i in range(obs.shape[0]):
            n = int(mask[i].sum())
            alone = model(obs[i : i + 1, :n], dt[i : i + 1, :n], mask[i : i + 1, :n])
            assert torch.allclose(batched[i, :n], alone[0], atol=1e-6)


def test_cfc_risk_depends_on_elapsed_time_lstm_only_through_its_input():
    model = small_model("cfc")
    obs, dt, mask = irregular_batch(b=1)
    with torch.no_grad():
        a = model(obs, dt, mask)
        b = model(obs, dt * 3, mask)
    assert not torch.allclose(a[0, 2:], b[0, 2:])


def test_featurizer_carries_values_forward_and_counts_hours_since_measured():
    f = Featurizer(torch.zeros(40), torch.ones(40))
    state = torch.zeros(1, f.state_size)
    first = torch.full((1, 40), float("nan"))
    first[0, 0] = 90.0  # HR measured at admission
    _, state = f.step(first, torch.zeros(1, 1), state)
    _, state = f.step(torch.full((1, 40), float("nan")), torch.tensor([[2.5]]), state)
    hr = torch.full((1, 40), float("nan"))
    hr[0, 0] = 95.0
    _, state = f.step(hr, torch.tensor([[1.0]]), state)
    _, state = f.step(torch.full((1, 40), float("nan")), torch.tensor([[1.5]]), state)
    last, since, seen, count = state.split(40, dim=1)
    assert last[0, 0] == 95.0 and seen[0, 0] == 1.0 and since[0, 0] == pytest.approx(1.5)
    assert count[0, 0] == 2.0
    assert seen[0, 1] == 0.0 and last[0, 1] == 0.0 and count[0, 1] == 0.0  # never measured: nothing invented


def test_all_zero_state_is_a_new_patient():
    model = small_model("cfc")
    obs, dt, mask = irregular_batch(b=1)
    with torch.no_grad():
        seq = model(obs, dt, mask)
        logit, _ = model.step_logit(obs[:, 0], dt[:, :1], torch.zeros(1, model.state_size))
    assert torch.allclose(seq[0, 0], logit[0, 0], atol=1e-6)


def test_padding_does_not_produce_nan_gradients():
    model = small_model("cfc").train()
    obs, dt, mask = irregular_batch()
    logits = model(obs, dt, mask)
    torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], torch.ones_like(logits[mask])).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("counts", [True, False])
def test_sequence_equals_step_with_and_without_measurement_counts(counts):
    torch.manual_seed(1)
    model = SepsisModel(ModelConfig(core="cfc", hidden_size=8, backbone_units=8, counts=counts),
                        torch.zeros(40), torch.ones(40)).eval()
    obs, dt, mask = irregular_batch(seed=3)
    with torch.no_grad():
        stepped, _ = step_loop(model, obs, dt, mask)
        assert torch.allclose(model(obs, dt, mask)[mask], stepped[mask], atol=1e-5)
    assert model.state_size == (160 if counts else 120) + 8


def test_checkpoints_from_before_measurement_counts_still_load():
    model = SepsisModel(ModelConfig(core="cfc", hidden_size=8, backbone_units=8, counts=False),
                        torch.zeros(40), torch.ones(40))
    legacy = model.to_checkpoint()
    del legacy["config"]["counts"]
    assert SepsisModel.from_checkpoint(legacy).state_size == 120 + 8


def test_checkpoint_round_trip_keeps_the_function():
    model = small_model("lstm")
    clone = SepsisModel.from_checkpoint(model.to_checkpoint())
    obs, dt, mask = irregular_batch()
    with torch.no_grad():
        assert torch.equal(model(obs, dt, mask), clone(obs, dt, mask))
