"""Evaluate a shipped model exactly as the service runs it: the ONNX step through the shared
runtime, every stay streamed hour by hour (many patients per step), written in the challenge's
prediction format (one `pXXXXXX.psv` per stay: `PredictedProbability|PredictedLabel`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from training.sepsis import metrics as M
from models.contract import elapsed_hours
from models.alarm_figures import first_measured
from models.grid import from_admission as from_admission_rows
from training.sepsis.batching import per_stay
from training.sepsis.dropout import drop_mask, remove_rows
from training.sepsis.lab_delay import delay_labs


def stream(runtime, values: np.ndarray, elapsed: np.ndarray, offsets: np.ndarray, chunk: int | None = None,
           progress: bool = False) -> np.ndarray:
    """Risk for every row: stays stepped hour by hour in lockstep through the shared runtime
    (states stay on the GPU between hours under the CUDA provider), all at once or `chunk` stays
    at a time, so a progress bar over stays can move (a stay's risks do not depend on its batch)."""
    n = len(offsets) - 1
    if n <= 0:
        return np.empty(0, np.float32)
    with tqdm(total=n, desc="scoring stays hour by hour", unit="stay", disable=not progress) as bar:
        stays = list(zip(per_stay(values, offsets), per_stay(elapsed, offsets)))
        # longest first, so each batch holds stays of similar length and few hours run half-empty
        order = np.argsort(-np.diff(offsets), kind="stable")
        step = chunk or n
        risks: list[np.ndarray | None] = [None] * n
        for start in range(0, n, step):
            part = order[start:start + step]
            for i, r in zip(part, runtime.run_sequences([stays[i] for i in part])):
                risks[i] = r
            bar.update(len(part))
    return np.concatenate(risks)


HEADER = "PredictedProbability|PredictedLabel"  # the challenge's prediction files (read back by compare.py)


def write_predictions(out_dir: Path, patient_ids, offsets, risks, threshold: float, progress: bool = True) -> None:
    pred_dir = out_dir / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    stays = zip(patient_ids, per_stay(risks, offsets))
    for pid, p in tqdm(stays, total=len(patient_ids), desc="writing predictions", unit="stay", disable=not progress):
        lines = [HEADER] + [f"{x:.6f}|{int(x >= threshold)}" for x in p]
        (pred_dir / f"{pid}.psv").write_text("\n".join(lines) + "\n")


# Stays per lockstep batch in evaluate_onnx: a few seconds each on two CPU cores for the shipped
# ensemble, large enough that the per-hour session calls stay a small share of the time.
CHUNK_STAYS = 512


def evaluate_onnx(runtime, cohort, out_dir: Path, drop_rate: float = 0.0, seed: int = 0,
                  progress: bool = True, lab_delay: int = 0, from_admission: bool = False) -> dict:
    """`lab_delay` H: each resulted lab drawn in hour t is seen at hour t + H (training.sepsis.lab_delay).
    `from_admission`: every stay stepped from the ICU admission's hour 1, as the service steps it
    (models.grid.from_admission: a file that starts later gets its earlier hours as empty rows,
    stepped but not scored); the metrics are over the files' own rows either way."""
    offsets = cohort.offsets
    delayed = delay_labs(cohort.values, offsets, lab_delay)
    values = delayed.values
    elapsed = elapsed_hours(values, offsets)
    if from_admission and drop_rate > 0:
        raise ValueError("from_admission and drop_rate together are not supported")
    if from_admission:
        padded, padded_offsets, kept = from_admission_rows(values, offsets)
        risks = stream(runtime, padded, elapsed_hours(padded, padded_offsets), padded_offsets, CHUNK_STAYS, progress)[kept]
    elif drop_rate > 0:
        dropped = drop_mask(offsets, drop_rate, seed)
        kept_values, kept_elapsed, kept_offsets, source = remove_rows(values, elapsed, offsets, dropped)
        risks = stream(runtime, kept_values, kept_elapsed, kept_offsets, CHUNK_STAYS, progress)[source]
    else:
        risks = stream(runtime, values, elapsed, offsets, CHUNK_STAYS, progress)
    labels, probs = per_stay(cohort.labels, offsets), per_stay(risks, offsets)
    out_dir = Path(out_dir)
    write_predictions(out_dir, cohort.patient_ids, offsets, risks, runtime.threshold, progress)
    if progress:
        tqdm.write("metrics: AUROC, AUPRC, utility, alarms, lead time ...", file=sys.stderr)
    result = {"model": runtime.name, "version": runtime.version, "provider": runtime.provider,
              "threshold": runtime.threshold, "drop_rate": drop_rate, "drop_seed": seed,
              "lab_delay_hours": lab_delay, "from_admission": from_admission, "labs_moved": delayed.moved, "labs_dropped_after_stay": delayed.dropped,
              "stays": len(cohort), "rows": int(len(values)), "data_sha256": cohort.source_sha256,
              # each stay monitored from its first measured row, as the service alarms (models.alarm_figures)
              **M.evaluate(labels, probs, runtime.threshold, first_measured(values, offsets))}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    return result
