"""The physiology table, its measurement (direction_shares) and its training penalty, on a model
whose response to each variable is known by construction."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.contract import INDEX
from training.sepsis.batching import CohortTensors
from training.sepsis.physiology import DIRECTIONS, PhysiologyPenalty, direction_shares


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
