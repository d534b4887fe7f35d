"""Evaluate a shipped model exactly as the service runs it: the ONNX step through the shared
runtime, every stay streamed hour by hour (many patients per step), written in the challenge's
prediction format (one `pXXXXXX.psv` per stay: `PredictedProbability|PredictedLabel`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from training.sepsis import metrics as M
from models.contract import elapsed_hours
from training.sepsis.batching import per_stay
from training.sepsis.dropout import drop_mask, remove_rows
from training.sepsis.lab_delay import delay_labs


def stream(runtime, values: np.ndarray, elapsed: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Risk for every row: all stays stepped hour by hour in lockstep through the shared runtime
    (states stay on the GPU between hours under the CUDA provider)."""
    stays = list(zip(per_stay(values, offsets), per_stay(elapsed, offsets)))
    return np.concatenate(runtime.run_sequences(stays)) if stays else np.empty(0, np.float32)


def write_predictions(out_dir: Path, patient_ids, offsets, risks, threshold: float, progress: bool = True) -> None:
    pred_dir = out_dir / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    stays = zip(patient_ids, per_stay(risks, offsets))
    for pid, p in tqdm(stays, total=len(patient_ids), desc="writing predictions", unit="stay", disable=not progress):
        lines = ["PredictedProbability|PredictedLabel"] + [f"{x:.6f}|{int(x >= threshold)}" for x in p]
        (pred_dir / f"{pid}.psv").write_text("\n".join(lines) + "\n")


def evaluate_onnx(runtime, cohort, out_dir: Path, drop_rate: float = 0.0, seed: int = 0,
                  progress: bool = True, lab_delay: int = 0) -> dict:
    """`lab_delay` H: each resulted lab drawn in hour t is seen at hour t + H (training.sepsis.lab_delay)."""
    offsets = cohort.offsets
    delayed = delay_labs(cohort.values, offsets, lab_delay)
    values = delayed.values
    elapsed = elapsed_hours(values, offsets)
    if drop_rate > 0:
        dropped = drop_mask(offsets, drop_rate, seed)
        kept_values, kept_elapsed, kept_offsets, source = remove_rows(values, elapsed, offsets, dropped)
        risks = stream(runtime, kept_values, kept_elapsed, kept_offsets)[source]
    else:
        risks = stream(runtime, values, elapsed, offsets)
    labels, probs = per_stay(cohort.labels, offsets), per_stay(risks, offsets)
    out_dir = Path(out_dir)
    write_predictions(out_dir, cohort.patient_ids, offsets, risks, runtime.threshold, progress)
    result = {"model": runtime.name, "version": runtime.version, "provider": runtime.provider,
              "threshold": runtime.threshold, "drop_rate": drop_rate, "drop_seed": seed,
              "lab_delay_hours": lab_delay, "labs_moved": delayed.moved, "labs_dropped_after_stay": delayed.dropped,
              "stays": len(cohort), "rows": int(len(values)), "data_sha256": cohort.source_sha256,
              **M.evaluate(labels, probs, runtime.threshold)}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    return result
