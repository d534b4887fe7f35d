"""Evaluation of a trained sepsis model: validation-chosen threshold, test metrics, plots,
and inference-time temporal dropout."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from models.alarm_figures import first_measured
from training.sepsis import metrics as M
from training.sepsis import plots as P
from models.contract import elapsed_hours
from training.sepsis.batching import CohortTensors, per_stay
from training.sepsis.dropout import drop_mask, remove_rows, zero_rows
from training.sepsis.predict import predict_rows, predict_stays, stay_labels


def dropout_predictions(model, sub, rate: float, variant: str, seed: int, device) -> list[np.ndarray]:
    """Hourly risks for every row of cohort `sub` after dropping rows at `rate` (see dropout.py)."""
    elapsed = elapsed_hours(sub.values, sub.offsets)
    dropped = drop_mask(sub.offsets, rate, seed)
    all_stays = np.arange(len(sub.offsets) - 1)
    if variant == "zero":
        t = CohortTensors.from_arrays(zero_rows(sub.values, dropped), sub.labels, sub.offsets, device, elapsed)
        return predict_stays(model, t, all_stays)
    values, new_elapsed, offsets, source = remove_rows(sub.values, elapsed, sub.offsets, dropped)
    return per_stay(predict_rows(model, values, new_elapsed, offsets, device)[source], sub.offsets)


def hourly_report(model, cohort, tensors, val_idx, test_idx, cfg, out_dir: Path) -> dict:
    val_labels, test_labels = stay_labels(tensors, val_idx), stay_labels(tensors, test_idx)
    val_probs, test_probs = predict_stays(model, tensors, val_idx), predict_stays(model, tensors, test_idx)
    threshold, _ = M.choose_threshold(val_labels, val_probs)
    firsts = first_measured(cohort.values, cohort.offsets)  # alarm figures from each stay's first measured row
    val = M.evaluate(val_labels, val_probs, threshold, firsts[np.asarray(val_idx)])
    test = M.evaluate(test_labels, test_probs, threshold, firsts[np.asarray(test_idx)])
    thresholds, utilities = M.utility_curve(M.utility_table(val_labels), np.concatenate(val_probs))
    P.utility_curve_png(thresholds, utilities, threshold, out_dir / "utility_vs_threshold_val.png")
    P.roc_curve_png(test_labels, test_probs, out_dir / "roc_test.png", title=f"{cfg.run_name}: hourly ROC (test)")
    P.pr_curve_png(test_labels, test_probs, out_dir / "pr_test.png", title=f"{cfg.run_name}: hourly PR (test)")

    sub = cohort.subset(test_idx)
    rows = []
    for variant in ("remove", "zero"):
        for rate in cfg.dropout_rates:
            probs = dropout_predictions(model, sub, rate, variant, seed=1234, device=tensors.values.device)
            rows.append({"variant": variant, "rate": rate, "model": cfg.run_name,
                         "auroc": M.hourly_auroc(test_labels, probs),
                         "utility": M.normalized_utility(test_labels, [p >= threshold for p in probs])})
    P.dropout_png(rows, out_dir / "temporal_dropout_test.png")
    return {"threshold": float(threshold),
            "threshold_selection": "maximises the normalised utility on the validation split",
            "val": val, "test": test, "temporal_dropout_test": rows}


def patient_report(model, tensors, val_idx, test_idx, cfg, out_dir: Path) -> dict:
    def stay_scores(stays):
        labels = stay_labels(tensors, stays)
        probs = predict_stays(model, tensors, stays)
        return np.array([lab.max() for lab in labels]), np.array([p[-1] for p in probs])

    val_y, val_p = stay_scores(val_idx)
    test_y, test_p = stay_scores(test_idx)
    return {"threshold": 0.5, "threshold_selection": "0.5, as in the reference study",
            "val": M.stay_level_metrics(val_y, val_p, 0.5), "test": M.stay_level_metrics(test_y, test_p, 0.5)}


def evaluate_run(model, cohort, tensors, val_idx, test_idx, cfg) -> dict:
    out_dir = Path(cfg.out) / cfg.run_name
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.objective == "patient":
        return patient_report(model, tensors, val_idx, test_idx, cfg, out_dir)
    return hourly_report(model, cohort, tensors, val_idx, test_idx, cfg, out_dir)
