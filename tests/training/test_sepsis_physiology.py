"""The physiology table, its measurement (direction_shares) and its training penalty, on a model
whose response to each variable is known by construction."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.contract import INDEX
from training.sepsis.batching import CohortTensors
from training.sepsis.physiology import DIRECTIONS, PhysiologyPenalty, carried_hours, direction_shares


class Linear(nn.Module):
    """logit = sum over the thirteen variables of sign * (value - normal) / |abnormal - normal| at
    that hour (0 where not measured): the physiological way when every sign is +1."""

    def __init__(self, signs: dict[str, float] | None = None):
        super().__init__()
        signs = signs or {}
        self.cols = [INDEX[d.variable] for d in DIRECTIONS]
        self.normal = torch.tensor([d.normal for d in DIRECTIONS])
        self.scale = torch.tensor([(d.abnormal - d.normal) for d in DIRECTIONS])
        self.sign = torch.tensor([signs.get(d.variable, 1.0) for d in DIRECTIONS])
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, obs, dt, mask=None):
        x = torch.nan_to_num((obs[..., self.cols] - self.normal) / self.scale)
        return (x * self.sign).sum(-1) + self.bias

    def risk(self, logits):
        return torch.sigmoid(logits)


class ForwardFill(Linear):
    """Linear on each variable's latest value at or before the hour (carried forward, as the
    shipped featurizer remembers it), not only on values measured that hour."""

    def forward(self, obs, dt, mask=None):
        filled, last = [], torch.full_like(obs[:, 0], float("nan"))
        for t in range(obs.shape[1]):
            last = torch.where(torch.isnan(obs[:, t]), last, obs[:, t])
            filled.append(last)
        return super().forward(torch.stack(filled, dim=1), dt, mask)


def batch(n=32, t=20, seed=0):
    rng = np.random.default_rng(seed)
    obs = torch.full((n, t, 40), float("nan"))
    for d in DIRECTIONS:  # real-looking values, measured in about half the hours
        vals = torch.from_numpy(rng.normal(d.normal, abs(d.abnormal - d.normal) / 3, (n, t))).float()
        obs[..., INDEX[d.variable]] = torch.where(torch.rand(n, t) < 0.5, vals, torch.nan)
    lengths = rng.integers(5, t + 1, n)
    return obs, torch.ones(n, t), lengths


def test_the_table_points_each_variable_the_septic_way():
    way = {d.variable: np.sign(d.abnormal - d.normal) for d in DIRECTIONS}
    assert len(DIRECTIONS) == 13
    assert way["Lactate"] == way["HR"] == way["Creatinine"] == 1
    assert way["Platelets"] == way["pH"] == way["MAP"] == way["SBP"] == -1
    for d in DIRECTIONS:
        assert d.lowest <= min(d.normal, d.abnormal) and max(d.normal, d.abnormal) <= d.highest, d


def test_penalty_is_zero_for_a_physiological_model_and_positive_for_a_wrong_way_one():
    obs, dt, lengths = batch()
    right = PhysiologyPenalty(1.0, stays=32, margin=0.1, seed=0)(Linear(), obs, dt, lengths)
    assert right.item() == 0.0
    wrong = PhysiologyPenalty(1.0, stays=32, margin=0.1, seed=0)(Linear({d.variable: -1.0 for d in DIRECTIONS}),
                                                                 obs, dt, lengths)
    assert wrong.item() > 0.1


def test_penalty_gradient_turns_a_wrong_way_response_around():
    """Trained on the penalty alone, a model that reads lactate backwards learns to read it forwards."""
    obs, dt, lengths = batch(n=64)
    model = Linear()
    model.sign = nn.Parameter(torch.tensor([-1.0 if d.variable == "Lactate" else 1.0 for d in DIRECTIONS]))
    penalty = PhysiologyPenalty(1.0, stays=64, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=20.0)
    for _ in range(100):
        opt.zero_grad()
        penalty(model, obs, dt, lengths).backward()
        opt.step()
    assert model.sign[[d.variable for d in DIRECTIONS].index("Lactate")].item() > 0


def test_direction_shares_counts_the_stays_moving_each_way():
    obs, dt, lengths = batch(n=40, t=16)
    values = obs.reshape(-1, 40).numpy()
    offsets = np.arange(0, 40 * 16 + 1, 16)
    tensors = CohortTensors.from_arrays(values, np.zeros(len(values)), offsets, "cpu", dt.reshape(-1).numpy())
    stays = np.arange(40)
    shares = direction_shares(Linear({"pH": -1.0}), tensors, stays, hour=12)
    assert shares["stays"] == 40
    got = {k: v["share_higher"] for k, v in shares["variables"].items()}
    assert got.pop("pH") == 0.0
    assert set(got.values()) == {1.0}


def test_bad_penalty_settings_are_refused():
    with pytest.raises(ValueError, match="weight"):
        PhysiologyPenalty(-1.0)


def test_carried_hours_run_from_the_changed_hour_until_the_value_is_measured_again_or_too_old():
    obs = torch.full((2, 10, 40), float("nan"))
    lactate = INDEX["Lactate"]
    obs[:, [1, 6], lactate] = 2.0           # measured at hours 1 and 6
    hour, column = torch.tensor([2, 2]), torch.tensor([lactate, lactate])
    dt = torch.tensor([[1.0] * 10, [2.0] * 10])  # the second stay's hours are 2 h apart
    got = carried_hours(obs, hour, column, dt, torch.tensor([10, 5]), carry_hours=24.0)
    assert got[0].nonzero().flatten().tolist() == [3, 4, 5]      # re-measured at 6
    assert got[1].nonzero().flatten().tolist() == [3, 4]         # the stay ends at 5
    short = carried_hours(obs, hour, column, dt, torch.tensor([10, 10]), carry_hours=4.0)
    assert short[0].nonzero().flatten().tolist() == [3, 4, 5] and short[1].nonzero().flatten().tolist() == [3, 4]


def test_carry_hours_ask_the_margin_where_the_value_is_carried():
    """A model that reads only the hour's own values moves the risk at the changed hour and not
    after it: no penalty without carry_hours, a penalty with it. One that carries values forward
    (as the shipped step's memory does) passes both."""
    obs, dt, lengths = batch(n=32, t=20)
    posted_only, carrying = Linear(), ForwardFill()
    assert PhysiologyPenalty(1.0, stays=32, seed=0)(posted_only, obs, dt, lengths).item() == 0.0
    assert PhysiologyPenalty(1.0, stays=32, seed=0, carry_hours=24)(posted_only, obs, dt, lengths).item() > 0.0
    assert PhysiologyPenalty(1.0, stays=32, seed=0, carry_hours=24)(carrying, obs, dt, lengths).item() == 0.0
    with pytest.raises(ValueError, match="carry_hours"):
        PhysiologyPenalty(1.0, carry_hours=-1)
