"""A cohort held as flat tensors on one device, and padded batches gathered from it.

Padding rows are NaN observations with zero elapsed time and are masked out, so the featurizer
stays finite on them and the core holds its state still.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.contract import elapsed_hours  # noqa: F401  (the elapsed-hours rule, used with the batches)


@dataclass
class CohortTensors:
    values: torch.Tensor    # [rows + 1, 40], last row is the NaN padding row
    elapsed: torch.Tensor   # [rows + 1]
    labels: torch.Tensor    # [rows + 1] float
    offsets: np.ndarray     # [N + 1]
    lengths: np.ndarray     # [N]

    @classmethod
    def from_arrays(cls, values, labels, offsets, device, elapsed=None) -> "CohortTensors":
        if elapsed is None:
            elapsed = elapsed_hours(values, offsets)
        pad_v = np.full((1, values.shape[1]), np.nan, dtype=np.float32)
        v = torch.from_numpy(np.concatenate([values.astype(np.float32), pad_v])).to(device)
        e = torch.from_numpy(np.concatenate([elapsed.astype(np.float32), [0.0]]).astype(np.float32)).to(device)
        y = torch.from_numpy(np.concatenate([labels.astype(np.float32), [0.0]]).astype(np.float32)).to(device)
        offsets = np.asarray(offsets, dtype=np.int64)
        return cls(v, e, y, offsets, np.diff(offsets))

    @classmethod
    def from_cohort(cls, cohort, device) -> "CohortTensors":
        return cls.from_arrays(cohort.values, cohort.labels, cohort.offsets, device)

    @property
    def pad_row(self) -> int:
        return self.values.shape[0] - 1

    def gather(self, per_row: torch.Tensor, stays: np.ndarray) -> torch.Tensor:
        """A per-row quantity ([rows + 1], last entry the padding value) laid out like `batch`."""
        lengths = self.lengths[stays]
        steps = np.arange(int(lengths.max()))[None, :]
        rows = np.where(steps < lengths[:, None], self.offsets[stays][:, None] + steps, self.pad_row)
        return per_row[torch.from_numpy(rows).to(per_row.device)]

    def batch(self, stays: np.ndarray):
        """Padded (observations [B,T,40], elapsed [B,T], labels [B,T], mask [B,T]) for these stays."""
        lengths = self.lengths[stays]
        t = int(lengths.max())
        steps = np.arange(t)[None, :]
        rows = self.offsets[stays][:, None] + steps
        mask_np = steps < lengths[:, None]
        rows = np.where(mask_np, rows, self.pad_row)
        idx = torch.from_numpy(rows).to(self.values.device)
        mask = torch.from_numpy(mask_np).to(self.values.device)
        return self.values[idx], self.elapsed[idx], self.labels[idx], mask


def stay_rows(offsets: np.ndarray, stays: np.ndarray) -> np.ndarray:
    """The flat row indices of these stays, stay after stay."""
    return np.concatenate([np.arange(offsets[s], offsets[s + 1]) for s in stays])


def per_stay(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """A per-row array cut into one piece per stay (stay i is rows offsets[i]:offsets[i+1])."""
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Stays grouped into batches of similar length (little padding); shuffled when rng is given."""
    order = np.argsort(lengths, kind="stable")
    if rng is not None:
        # shuffle within small length windows, then shuffle the batch order
        noise = rng.uniform(0, 4, size=len(lengths))
        order = np.argsort(lengths + noise, kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches
