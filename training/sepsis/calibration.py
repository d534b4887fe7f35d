"""Platt calibration of a trained sepsis model on its validation split.

Training weights the rare positive hours (pos_weight), so sigmoid(logit) overstates how likely
sepsis is; a clinician reading "61%" should be able to take it as a probability. A logistic
regression of the hourly label on the model's logit, fitted on validation hours only, rescales the
logit inside the model (the exported step included). It is monotone, so rankings, AUROC and
which hours cross a correspondingly moved threshold are unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression


def fit_platt(labels: list[np.ndarray], probs: list[np.ndarray]) -> tuple[float, float]:
    """(a, b) such that sigmoid(a * logit + b) is calibrated on these stays' hours."""
    y = np.concatenate(labels).astype(int)
    p = np.clip(np.concatenate(probs).astype(np.float64), 1e-7, 1 - 1e-7)
    if y.min() == y.max():
        raise ValueError("calibration needs both septic and non-septic hours in the validation split")
    logit = np.log(p / (1 - p))[:, None]
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(logit, y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def calibrate(model, labels, probs) -> tuple[float, float]:
    """Fold Platt scaling, fitted on (labels, probs) from the model's current risk, into the model."""
    a, b = fit_platt(labels, probs)
    old_a, old_b = model.calibration.tolist()
    # the new risk applies to the old calibrated logit: compose the two affine maps
    model.calibration.copy_(torch.tensor([a * old_a, a * old_b + b]))
    return a, b


def reliability(labels: list[np.ndarray], probs: list[np.ndarray], bins: int = 10) -> list[dict]:
    """Mean predicted risk against observed label rate per risk decile (for the report and plot)."""
    y = np.concatenate(labels).astype(float)
    p = np.concatenate(probs).astype(float)
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    return [{"mean_risk": float(p[which == k].mean()), "label_rate": float(y[which == k].mean()),
             "hours": int((which == k).sum())} for k in range(len(edges) - 1) if (which == k).any()]
