"""Batched inference over whole stays with the PyTorch model (training-time evaluation)."""
from __future__ import annotations

import numpy as np
import torch

from training.sepsis.batching import CohortTensors, length_batches


@torch.no_grad()
def predict_stays(model, tensors: CohortTensors, stays: np.ndarray, batch_size: int = 512) -> list[np.ndarray]:
    """Hourly risk for each stay in `stays` (same order), one float32 array per stay."""
    model.eval()
    out: list[np.ndarray | None] = [None] * len(stays)
    for batch in length_batches(tensors.lengths[stays], batch_size):
        obs, dt, _, mask = tensors.batch(stays[batch])
        probs = model.risk(model(obs, dt, mask)).float().cpu().numpy()
        for row, pos in enumerate(batch):
            out[pos] = probs[row, : tensors.lengths[stays[pos]]]
    return out  # type: ignore[return-value]


def predict_rows(model, values: np.ndarray, elapsed: np.ndarray, offsets: np.ndarray, device) -> np.ndarray:
    """Risk for every row of flat per-row arrays (stay i is rows offsets[i]:offsets[i + 1])."""
    t = CohortTensors.from_arrays(values, np.zeros(len(values), np.int8), offsets, device, elapsed)
    return np.concatenate(predict_stays(model, t, np.arange(len(offsets) - 1)))


def stay_labels(tensors: CohortTensors, stays: np.ndarray) -> list[np.ndarray]:
    labels = tensors.labels[:-1].cpu().numpy().astype(np.int8)
    return [labels[tensors.offsets[s] : tensors.offsets[s + 1]] for s in stays]
