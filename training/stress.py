"""Inference-time temporal dropout: the stress test the study ran, plus a continuous-time variant.

A keep-mask drops a fraction of each sequence's real steps. It depends only on (seed, rate, sample
index, valid steps), so the CfC and the LSTM see exactly the same drops. Two ways to apply it:

- "zero" (the study's): a dropped step's input is zeroed; its time span is unchanged, so the model
  still steps through it.
- "remove" (continuous-time): dropped steps are taken out; each kept step's span grows by the spans
  of the dropped steps just before it, so elapsed time is preserved. Delta-type input features
  (e.g. QuickDraw's dx, dy) may be accumulated the same way so they stay consistent.

All functions are pure over (x [B, T, ...], dt [B, T], mask [B, T] bool) tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

DROP_RATES = (0.0, 0.3, 0.5, 0.7)
VARIANTS = ("zero", "remove")


def keep_masks(valid: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
    """[N, T] bool keep-mask over a whole evaluation set (valid = real steps).

    Each real step is dropped with probability `rate`. A sample that would lose every real step
    keeps its last one, so every sample still has an input (the same rule in both variants).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop rate must be in [0, 1), got {rate}")
    valid = valid.bool().cpu()
    gen = torch.Generator().manual_seed(int(seed) * 1000 + int(round(rate * 1000)))
    u = torch.rand(valid.shape, generator=gen)
    keep = (u >= rate) & valid
    empty = ~keep.any(dim=1) & valid.any(dim=1)
    if empty.any():
        last = valid.shape[1] - 1 - valid.flip(1).float().argmax(dim=1)
        keep[empty, last[empty]] = True
    return keep


def zero_variant(x: torch.Tensor, dt: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor):
    """Dropped steps' inputs become 0; time spans and the real-step mask are unchanged."""
    k = keep.to(x.device).reshape(keep.shape + (1,) * (x.dim() - 2)).to(x.dtype)
    return x * k, dt, mask


def remove_variant(
    x: torch.Tensor,
    dt: torch.Tensor,
    mask: torch.Tensor,
    keep: torch.Tensor,
    accumulate: Sequence[int] = (),
):
    """Take dropped steps out and close the gaps.

    Kept steps move to the front in order; a kept step's span becomes the sum of its own span and
    the spans of the dropped steps since the previous kept step. Spans of dropped steps after the
    last kept step are lost (nothing observes them). Feature indices in `accumulate` (last axis of
    a [B, T, F] x) are summed the same way. Padding after the new length holds x = 0 and dt = 1.
    """
    keep = keep.to(x.device) & mask.to(x.device).bool()
    b, t = keep.shape
    dt = dt.to(x.dtype)
    # stable sort puts kept steps first, in their original order
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    lengths = keep.sum(dim=1)
    new_mask = torch.arange(t, device=x.device)[None, :] < lengths[:, None]

    # every real step's span goes to the next kept step at or after it: that step's new position
    # is the number of kept steps before it; steps after the last kept one fall out (group >= length)
    group = torch.cumsum(keep.to(torch.int64), dim=1) - keep.to(torch.int64)
    counted = mask.to(x.device).bool() & (group < lengths[:, None])

    def compact_cumulative(values: torch.Tensor) -> torch.Tensor:
        # a direct sum per segment: exact, unlike differences of running sums
        out = torch.zeros_like(values)
        return out.scatter_add(1, group.clamp(max=t - 1), torch.where(counted, values, torch.zeros_like(values)))

    new_dt = torch.where(new_mask, compact_cumulative(dt), torch.ones_like(dt))
    idx = order.reshape(b, t, *([1] * (x.dim() - 2))).expand_as(x)
    new_x = torch.gather(x, 1, idx)
    if accumulate:
        new_x = new_x.clone()
        for c in accumulate:
            new_x[..., c] = compact_cumulative(x[..., c])
    fill = new_mask.reshape(b, t, *([1] * (x.dim() - 2)))
    new_x = torch.where(fill, new_x, torch.zeros_like(new_x))
    return new_x, new_dt, new_mask


def apply_variant(variant: str, x, dt, mask, keep, accumulate: Sequence[int] = ()):
    if variant == "zero":
        return zero_variant(x, dt, mask, keep)
    if variant == "remove":
        return remove_variant(x, dt, mask, keep, accumulate)
    raise ValueError(f"unknown stress variant {variant!r}: expected one of {VARIANTS}")


@dataclass
class StressPoint:
    variant: str
    rate: float
    accuracy: float


def stress_transform(variant: str, keep_all: torch.Tensor, accumulate: Sequence[int] = ()):
    """A batch transform for `loop.predict_classes`: batches must carry 'index' (row in keep_all)
    and 'x', 'dt', 'mask'."""

    def transform(batch: dict) -> dict:
        keep = keep_all[batch["index"].cpu()].to(batch["x"].device)
        b, t = batch["x"].shape[:2]
        dt = batch.get("dt")
        if dt is None:
            dt = torch.ones(b, t, device=batch["x"].device)
        mask = batch.get("mask")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=batch["x"].device)
        x, dt, mask = apply_variant(variant, batch["x"], dt, mask, keep, accumulate)
        return {**batch, "x": x, "dt": dt, "mask": mask}

    return transform


def run_stress(
    accuracy_under: Callable[[Callable | None], float],
    valid: torch.Tensor,
    seed: int,
    rates: Sequence[float] = DROP_RATES,
    variants: Sequence[str] = VARIANTS,
    accumulate: Sequence[int] = (),
) -> list[StressPoint]:
    """accuracy_under(transform) evaluates the model on the test set with the given batch transform."""
    points = []
    for variant in variants:
        for rate in rates:
            keep = keep_masks(valid, rate, seed)
            acc = accuracy_under(stress_transform(variant, keep, accumulate))
            points.append(StressPoint(variant, float(rate), float(acc)))
    return points


def plot_stress(curves: dict[str, list[dict]], path: Path, title: str, ylabel: str = "test accuracy",
                key: str = "accuracy"):
    """curves: label -> list of {'variant', 'rate', key}; one line per (label, variant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    styles = {"zero": "-o", "remove": "--s"}
    for i, (label, points) in enumerate(sorted(curves.items())):
        for variant in VARIANTS:
            pts = sorted((p["rate"], p[key]) for p in points if p["variant"] == variant)
            if pts:
                r, a = zip(*pts)
                ax.plot(np.array(r) * 100, a, styles[variant], color=f"C{i}", label=f"{label} ({variant})")
    ax.set_xlabel("temporal dropout (%)"), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
