"""Labs as a deployed model sees them: known some hours after the blood was drawn.

The files chart each lab in the hour of its draw, and the offline scores read it there; a hospital
results it one to two hours later, after later vital signs. `delay_labs(values, offsets, hours)`
moves every resulted lab (`models.contract.RESULTED_LABS`: the 26 labs but FiO2, a bedside
setting) drawn in hour t to the stay's row of hour t + H (ICULOS; where that hour has no row, the
stay's first later row). A lab whose t + H falls after the stay's last row is dropped: the stay
ended before it was known. When two draws reach one row (only around gaps in ICULOS) the later
draw is the one kept. Vital signs, FiO2, demographics and ICULOS are untouched, and no row is
added or removed, so the labels and every per-hour metric still line up with the file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.contract import INDEX, RESULTED_LABS
from training.sepsis.fhir_bundle import row_hours

LAB_COLUMNS = np.array([INDEX[name] for name in RESULTED_LABS])


@dataclass(frozen=True)
class Delayed:
    values: np.ndarray   # [N, 40] float32, the rows with labs moved (a copy; the input itself at H = 0)
    moved: int           # lab values seen later than drawn
    dropped: int         # lab values whose result would come after the stay's last row


def delay_labs(values: np.ndarray, offsets: np.ndarray, hours: int) -> Delayed:
    if hours < 0 or int(hours) != hours:
        raise ValueError(f"lab delay must be a whole number of hours >= 0, got {hours}")
    if hours == 0:
        return Delayed(values, 0, 0)  # the rows as they are, not copied
    out = values.copy()
    moved = dropped = 0
    for start, end in zip(offsets[:-1], offsets[1:]):
        labs = values[start:end][:, LAB_COLUMNS]
        out[start:end, LAB_COLUMNS] = np.nan
        drawn = np.isfinite(labs)
        if not drawn.any():
            continue
        at = row_hours(values[start:end])
        target = np.searchsorted(at, at + hours, side="left")  # the row of hour t + H, or the next one
        rows, cols = np.nonzero(drawn)  # row-major: a later draw is written after an earlier one
        known = target[rows] < len(at)
        dropped += int((~known).sum())
        moved += int(known.sum())
        block = out[start:end]
        block[target[rows[known]], LAB_COLUMNS[cols[known]]] = labs[rows[known], cols[known]]
    return Delayed(out, moved, dropped)
