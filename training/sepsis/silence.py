"""Silence: hours in which a patient is monitored but nothing new is measured.

When a monitor is unplugged, the service still steps the patient with observations that carry only
what it derives itself (ICULOS from the admission time, the demographics it stored). A model that
learned "long since the last heart rate" only from the training data's few gaps may raise its risk
on that silence alone. Two tools:

- `blank_runs`, for training: random runs of hours whose vitals and labs are withheld, labels kept,
  so silence is a state the model has seen with its true outcome;
- `silence_drift`, for evaluation: real test stays cut at a random hour, then stepped through
  empty observations shaped as the service sends them; the risk after 0, 6, 12 and 24 empty hours.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from models.contract import ICULOS_INDEX as ICULOS
from models.contract import N_CLINICAL as CLINICAL
from models.contract import elapsed_hours
from training.sepsis.batching import per_stay  # demographics and ICULOS always come with a post


def blank_runs(observations: torch.Tensor, lengths: torch.Tensor, rate: float, max_hours: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of observations [B, T, 40] in which a share `rate` of stays has one run of 1..max_hours
    consecutive hours with every vital and lab withheld (NaN); demographics and ICULOS stay."""
    b, t, _ = observations.shape
    if rate <= 0 or t == 0:
        return observations
    dev = observations.device
    u = torch.rand(b, 3, generator=generator, device="cpu").to(dev)
    chosen = u[:, 0] < rate
    start = (u[:, 1] * lengths.to(dev).float()).floor()
    run = 1 + (u[:, 2] * max_hours).floor()
    steps = torch.arange(t, device=dev).view(1, t)
    hit = chosen[:, None] & (steps >= start[:, None]) & (steps < (start + run)[:, None])
    out = observations.clone()
    out[:, :, :CLINICAL] = torch.where(hit[..., None], torch.full_like(out[:, :, :CLINICAL], float("nan")),
                                       out[:, :, :CLINICAL])
    return out


def silent_continuations(values: np.ndarray, offsets: np.ndarray, hours: int, seed: int = 0):
    """Each stay cut after a random hour (at least its first) and followed by `hours` empty
    observations one hour apart: vitals and labs NaN, demographics carried from the stay, ICULOS
    advancing. Returns (values, elapsed, offsets, cut) where cut[i] is the number of real rows kept."""
    rng = np.random.default_rng(seed)
    lengths = np.diff(offsets)
    cut = 1 + (rng.random(len(lengths)) * lengths).astype(np.int64)
    cut = np.minimum(cut, lengths)
    real_elapsed = elapsed_hours(values, offsets)
    out_v, out_e = [], []
    for i, (v, e) in enumerate(zip(per_stay(values, offsets), per_stay(real_elapsed, offsets))):
        kept = v[: cut[i]]
        empty = np.full((hours, values.shape[1]), np.nan, dtype=np.float32)
        last = kept[-1]
        empty[:, CLINICAL:] = last[CLINICAL:]
        iculos = last[ICULOS] if np.isfinite(last[ICULOS]) else float(cut[i])
        empty[:, ICULOS] = iculos + np.arange(1, hours + 1)
        out_v.append(np.concatenate([kept, empty]))
        out_e.append(np.concatenate([e[: cut[i]], np.ones(hours, np.float32)]))
    new_offsets = np.concatenate([[0], np.cumsum(cut + hours)]).astype(np.int64)
    return np.concatenate(out_v).astype(np.float32), np.concatenate(out_e).astype(np.float32), new_offsets, cut


def silence_drift(predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], values: np.ndarray,
                  offsets: np.ndarray, threshold: float, hours=(0, 6, 12, 24), seed: int = 0) -> dict:
    """Risk after each number of empty hours, from `predict(values, elapsed, offsets) -> risk per row`.

    `below_stays_below`: of the stays whose risk was below the threshold at the cut, the share still
    below it after that many empty hours (the issue's bar: >= 95% at 24 h)."""
    most = max(hours)
    v, e, o, cut = silent_continuations(values, offsets, most, seed)
    risk = np.asarray(predict(v, e, o), dtype=np.float64)
    at = {h: risk[o[:-1] + cut - 1 + h] for h in hours}
    start = at[0]
    below = start < threshold
    rows = []
    for h in hours:
        r = at[h]
        rows.append({"empty_hours": h, "mean_risk": float(r.mean()), "median_risk": float(np.median(r)),
                     "mean_change": float((r - start).mean()),
                     "share_rising": float((r > start).mean()),
                     "above_threshold": float((r >= threshold).mean()),
                     "below_stays_below": float((r[below] < threshold).mean()) if below.any() else None})
    return {"stays": int(len(cut)), "threshold": float(threshold), "seed": seed,
            "stays_below_at_cut": int(below.sum()),
            "observation": "vitals and labs NaN, demographics carried, ICULOS advancing 1 h per step",
            "rows": rows}
