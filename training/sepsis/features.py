"""The per-patient memory the model keeps between observations, as a pure torch module.

The same arithmetic runs two ways: `step` (one observation, what serving runs inside the ONNX
graph) and `sequence` (a whole padded batch at once, what training runs). They compute the same
features; `tests/training/test_sepsis_model.py` holds them to that.

Memory per variable: the last observed value (carried forward), whether it was ever observed, the
hours since it was last observed (advanced by each step's elapsed time) and, optionally, how many
times it was measured (how often a lab is ordered says what the team suspects). Nothing is imputed
outside the model: a never-measured variable enters as its training mean (z = 0) with seen = 0.

How a value enters the network: a z-score with the training split's mean and std (clipped at 8),
and, when `edges` are given (v3 on), also a piecewise-linear encoding over training-split quantile
bins (Gorishniy et al., NeurIPS 2022): bin k reads 0 below its lower edge, 1 above its upper edge
and the position in between. Heavy-tailed labs and ICULOS, where one z-score is weakest, get a
resolution that follows where the training values actually lie; "not measured" stays its own
input (every bin 0 and seen = 0), never a value.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.contract import N_FEATURES

N_VARS = N_FEATURES
Z_CLIP = 8.0  # z-scores beyond this are data-entry errors far more often than physiology


class Featurizer(nn.Module):
    """observation [B, 40] (NaN = not measured) + elapsed hours -> model features [B, n_features]."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, counts: bool = True,
                 edges: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(N_VARS))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(N_VARS).clamp_min(1e-3))
        self.counts = counts
        self.bins = 0
        if edges is not None:
            edges = torch.as_tensor(edges, dtype=torch.float32)
            if edges.dim() != 2 or edges.shape[0] != N_VARS or edges.shape[1] < 2:
                raise ValueError(f"edges: must have shape [{N_VARS}, bins + 1], got {list(edges.shape)}")
            self.bins = edges.shape[1] - 1
            self.register_buffer("edges", edges)
        # layout of the featurizer's part of the state: [last value | hours since | seen (| count)]
        self.state_size = (4 if counts else 3) * N_VARS
        self.n_features = self.state_size + 1 + N_VARS * self.bins

    def _encoded(self, last: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """[..., 40] values -> [..., 40 * bins] piecewise-linear codes, all 0 where never measured."""
        lower = self.edges[:, :-1]
        # a bin of zero width (a discrete variable's repeated quantile) becomes a step at its edge
        width = (self.edges[:, 1:] - lower).clamp_min(1e-6)
        codes = ((last.unsqueeze(-1) - lower) / width).clamp(0.0, 1.0) * seen.unsqueeze(-1)
        return codes.flatten(-2)

    def _features(self, last, since, seen, count, elapsed):
        z = ((last - self.mean) / self.std).clamp(-Z_CLIP, Z_CLIP) * seen
        parts = [z, seen, torch.log1p(since) * seen]
        if self.counts:
            parts.append(torch.log1p(count))
        parts.append(torch.log1p(elapsed))
        if self.bins:
            parts.append(self._encoded(last, seen))
        return torch.cat(parts, dim=-1)

    def step(self, observation: torch.Tensor, elapsed: torch.Tensor, state: torch.Tensor):
        """observation [B, 40], elapsed [B, 1], state [B, state_size] -> (features, next state)."""
        last, since, seen, *rest = state.split(N_VARS, dim=-1)
        measured = ~torch.isnan(observation)
        last = torch.where(measured, observation, last)
        since = torch.where(measured, torch.zeros_like(since), since + elapsed)
        seen = torch.where(measured, torch.ones_like(seen), seen)
        memory = [last, since, seen]
        count = None
        if self.counts:
            count = rest[0] + measured.to(rest[0].dtype)
            memory.append(count)
        return self._features(last, since, seen, count, elapsed), torch.cat(memory, dim=-1)

    def sequence(self, observations: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        """observations [B, T, 40], elapsed [B, T] from an all-zero state -> features [B, T, n_features].

        Carry-forward without a Python loop: for each variable, the index of its latest
        measurement up to t is a running maximum over time.
        """
        b, t, v = observations.shape
        measured = ~torch.isnan(observations)
        steps = torch.arange(t, device=observations.device).view(1, t, 1).expand(b, t, v)
        last_idx = torch.where(measured, steps, torch.full_like(steps, -1)).cummax(dim=1).values
        seen = (last_idx >= 0).to(observations.dtype)
        idx = last_idx.clamp_min(0)
        last = torch.gather(torch.nan_to_num(observations, nan=0.0), 1, idx) * seen
        clock = torch.cumsum(elapsed, dim=1).unsqueeze(-1).expand(b, t, v)
        since = clock - torch.gather(clock, 1, idx) * seen
        count = torch.cumsum(measured.to(observations.dtype), dim=1) if self.counts else None
        return self._features(last, since, seen, count, elapsed.unsqueeze(-1))


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """[40, bins + 1] edges at the observed values' quantiles (training rows only; NaN ignored).

    A variable never observed gets edges 0..1 so its codes stay 0 with seen = 0."""
    edges = np.zeros((N_VARS, bins + 1), dtype=np.float32)
    q = np.linspace(0.0, 1.0, bins + 1)
    for v in range(N_VARS):
        x = values[:, v]
        x = x[~np.isnan(x)]
        edges[v] = np.quantile(x.astype(np.float64), q) if len(x) else q
    return edges
