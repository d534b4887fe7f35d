"""Calibration makes the risk a probability without changing which hours rank above which."""
import json

import numpy as np
import pytest
import torch

from training.sepsis.calibration import calibrate, fit_platt, reliability
from training.sepsis.model import ModelConfig, SepsisModel


def overconfident(n=20_000, seed=0):
    """Labels drawn from sigmoid(z); the 'model' reports sigmoid(2z + 2): too high, too sharp."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-3, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    p = 1 / (1 + np.exp(-(2 * z + 2)))
    return [y[: n // 2], y[n // 2:]], [p[: n // 2], p[n // 2:]]


def test_platt_recovers_the_true_scale():
    labels, probs = overconfident()
    a, b = fit_platt(labels, probs)
    # the true map from the reported logit (2z + 2) back to z is 0.5 * logit - 1
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(-1.0, abs=0.15)


def test_calibrated_model_matches_observed_rates_and_keeps_its_ranking():
    torch.manual_seed(0)
    model = SepsisModel(ModelConfig(core="cfc", hidden_size=8, backbone_units=8), torch.zeros(40), torch.ones(40)).eval()
    logits = torch.linspace(-4, 4, 200)
    raw = model.risk(logits)
    labels, probs = overconfident()
    calibrate(model, labels, probs)
    cal = model.risk(logits)
    assert torch.all(torch.diff(cal) > 0)  # monotone: same order as before
    assert not torch.allclose(raw, cal)
    # the fitted map applied to the reported risks reproduces the label rate per decile
    a, b = model.calibration.tolist()
    p = np.concatenate(probs)
    fitted = 1 / (1 + np.exp(-(a * np.log(p / (1 - p)) + b)))
    for row in reliability(labels, [fitted]):
        assert row["mean_risk"] == pytest.approx(row["label_rate"], abs=0.03)


def test_calibration_survives_a_checkpoint_and_old_checkpoints_load_uncalibrated():
    model = SepsisModel(ModelConfig(core="lstm", hidden_size=8), torch.zeros(40), torch.ones(40))
    model.calibration.copy_(torch.tensor([0.7, -2.0]))
    assert SepsisModel.from_checkpoint(model.to_checkpoint()).calibration.tolist() == pytest.approx([0.7, -2.0])
    legacy = model.to_checkpoint()
    del legacy["state_dict"]["calibration"]
    assert SepsisModel.from_checkpoint(legacy).calibration.tolist() == [1.0, 0.0]
