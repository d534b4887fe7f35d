"""Training batches run as sub-batches of stays of similar length (model.by_length): the same
logits at every real hour and the same gradient as the padded batch, with less padding stepped."""
import pytest
import torch

from training.sepsis.model import by_length
from training.sepsis.train import set_cfc_impl

from tests.training.test_sepsis_v3 import silent_batch, v3_model


def uneven_batch(seed=0):
    """Six stays of lengths 11, 7, 3, 10, 1 and 5, in no order, the first hours of some silent."""
    obs, dt, mask = silent_batch()
    more_obs, more_dt, more_mask = silent_batch()
    obs, dt, mask = torch.cat([obs, more_obs[:2]]), torch.cat([dt, more_dt[:2]]), torch.cat([mask, more_mask[:2]])
    mask[4, 1:], mask[5, 5:] = False, False
    obs[~mask], dt[~mask] = float("nan"), 0.0
    return obs, dt, mask


CASES = [("cfc", "reference"), ("cfc", "fast"), ("lstm", "auto"), ("none", "auto")]


@pytest.mark.parametrize("core,impl", CASES)
def test_by_length_gives_the_batch_logits_at_every_real_hour(core, impl):
    model = v3_model(core, start_at_first=True)
    set_cfc_impl(model, impl)
    obs, dt, mask = uneven_batch()
    with torch.no_grad():
        whole = model(obs, dt, mask)
        model.length_chunk = 2
        parts = model(obs, dt, mask)
    assert torch.allclose(parts[mask], whole[mask], atol=1e-6)
    assert torch.all(parts[~mask] == 0)


@pytest.mark.parametrize("core,impl", CASES)
def test_by_length_gives_the_batch_gradient(core, impl):
    def gradient(chunk):
        model = v3_model(core, start_at_first=True)
        set_cfc_impl(model, impl)
        model.length_chunk = chunk
        obs, dt, mask = uneven_batch()
        logits = model(obs, dt, mask)
        target = (torch.arange(mask.numel()).reshape(mask.shape) % 3 == 0).float()
        torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], target[mask]).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    whole, parts = gradient(0), gradient(4)
    assert whole.abs().sum() > 0
    assert torch.allclose(parts, whole, atol=1e-6)


def test_each_sub_batch_is_cut_after_its_longest_stay():
    seen = []

    def forward(obs, dt, mask):
        seen.append((obs.shape[0], obs.shape[1], mask.sum(1).tolist()))
        return torch.ones(obs.shape[:2])

    mask = torch.arange(8)[None, :] < torch.tensor([2, 8, 0, 5, 1])[:, None]
    out = by_length(forward, torch.zeros(5, 8, 40), torch.zeros(5, 8), mask, 2)
    assert seen == [(2, 8, [8, 5]), (2, 2, [2, 1])]  # the stay with no real hour is never run
    assert torch.equal(out, mask.float())
