"""Evaluate a shipped model exactly as the service runs it: the ONNX step through the shared
runtime, every stay streamed hour by hour (many patients per step), written in the challenge's
prediction format (one `pXXXXXX.psv` per stay: `PredictedProbability|PredictedLabel`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from training.sepsis import metrics as M
from training.sepsis.batching import elapsed_hours
from training.sepsis.dropout import drop_mask, remove_rows


def stream(runtime, values: np.ndarray, elapsed: np.ndarray, offsets: np.ndarray,
           batch_patients: int = 4096, progress: bool = True) -> np.ndarray:
    """Risk for every row, stepping up to `batch_patients` stays at once through the runtime."""
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")
    risks = np.empty(len(values), dtype=np.float32)
    chunks = [order[i : i + batch_patients] for i in range(0, len(order), batch_patients)]
    with tqdm(total=int(lengths.sum()), desc="streaming hours", unit="row", disable=not progress) as bar:
        for stays in chunks:
            state = runtime.new_state(len(stays))
            for t in range(int(lengths[stays].max())):
                active = lengths[stays] > t  # sorted by length: a prefix of the chunk
                n = int(active.sum())
                rows = offsets[stays[:n]] + t
                res = runtime.step(values[rows], elapsed[rows, None], state[:n])
                state[:n] = res.next_state
                risks[rows] = res.risk
                bar.update(n)
    return risks


def write_predictions(out_dir: Path, patient_ids, offsets, risks, threshold: float) -> None:
    pred_dir = out_dir / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    for i, pid in enumerate(patient_ids):
        p = risks[offsets[i] : offsets[i + 1]]
        lines = ["PredictedProbability|PredictedLabel"] + [f"{x:.6f}|{int(x >= threshold)}" for x in p]
        (pred_dir / f"{pid}.psv").write_text("\n".join(lines) + "\n")


def evaluate_onnx(runtime, cohort, out_dir: Path, drop_rate: float = 0.0, seed: int = 0,
                  progress: bool = True) -> dict:
    values, offsets = cohort.values, cohort.offsets
    elapsed = elapsed_hours(values, offsets)
    if drop_rate > 0:
        dropped = drop_mask(offsets, drop_rate, seed)
        kept_values, kept_elapsed, kept_offsets, source = remove_rows(values, elapsed, offsets, dropped)
        risks = stream(runtime, kept_values, kept_elapsed, kept_offsets, progress=progress)[source]
    else:
        risks = stream(runtime, values, elapsed, offsets, progress=progress)
    labels = [cohort.labels[offsets[i] : offsets[i + 1]] for i in range(len(cohort))]
    probs = [risks[offsets[i] : offsets[i + 1]] for i in range(len(cohort))]
    out_dir = Path(out_dir)
    write_predictions(out_dir, cohort.patient_ids, offsets, risks, runtime.threshold)
    result = {"model": runtime.name, "version": runtime.version, "provider": runtime.provider,
              "threshold": runtime.threshold, "drop_rate": drop_rate, "drop_seed": seed,
              "stays": len(cohort), "rows": int(len(values)), "data_sha256": cohort.source_sha256,
              **M.evaluate(labels, probs, runtime.threshold)}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    return result
