"""Inference-time temporal dropout on whole stays: which rows are dropped, and two ways to drop them.

- "remove" (the continuous-time way): dropped rows are never seen; their elapsed time is added to
  the next kept row's, and each hour is scored with the latest risk computed at or before it.
- "zero" (the reference study's): dropped rows' inputs are replaced by zeros and time runs on
  unchanged, so the model does see a (meaningless) observation.
The first row of each stay is always kept: it admits the patient.
"""
from __future__ import annotations

import numpy as np


def drop_mask(offsets: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """bool [rows], True = dropped; the same seed gives the same mask for every model."""
    rows = int(offsets[-1])
    rng = np.random.default_rng(seed)
    dropped = rng.random(rows) < rate
    dropped[offsets[:-1][offsets[:-1] < rows]] = False
    return dropped


def zero_rows(values: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    out = values.copy()
    out[dropped] = 0.0
    return out


def remove_rows(values, elapsed, offsets, dropped):
    """Kept rows with accumulated elapsed time -> (values, elapsed, offsets, source_of_each_row).

    `source_of_each_row[i]` is the index, among kept rows, of the latest kept row at or before
    original row i: scoring hour i uses that risk.
    """
    kept = ~dropped
    stay_of_row = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    # clock per stay: cumulative elapsed hours; elapsed of a kept row = clock gap to previous kept row
    clock = np.cumsum(elapsed.astype(np.float64))
    starts = offsets[:-1]
    clock_from_stay_start = clock - np.repeat(clock[starts] - elapsed[starts], np.diff(offsets))
    kept_idx = np.flatnonzero(kept)
    kept_clock = clock_from_stay_start[kept_idx]
    kept_stay = stay_of_row[kept_idx]
    new_elapsed = np.diff(kept_clock, prepend=0.0)
    first_of_stay = np.r_[True, kept_stay[1:] != kept_stay[:-1]]
    new_elapsed[first_of_stay] = elapsed[kept_idx[first_of_stay]]
    new_offsets = np.r_[0, np.cumsum(np.bincount(kept_stay, minlength=len(offsets) - 1))]
    source = np.cumsum(kept) - 1  # latest kept row at or before each row (first row always kept)
    return values[kept_idx], new_elapsed.astype(np.float32), new_offsets.astype(np.int64), source
