"""A cross-fitted network and boosters on the same folds, blended in one streaming step.

The boosters read what the step keeps (`trees.TreeInputs`: the boosting peer's inputs, taken from
the step's per-variable memory) and sit in the step as members of their own kind
(`trees.TreeModel`), so the shipped graph is still one `(observation, elapsed, state) -> (risk,
state)`. The blend is chosen like everything else under cross-fitting: each development stay gets
the network's logit and the booster's logit from the fold models that did not train on it, and one
logistic regression of the hourly label on the two (`crossfit.fit_blend`) gives both the weights
and the calibration; the test split is read once, after (`crossfit.combine`).

Boosters train on `step_inputs`: the peer's 108 per-hour inputs as the step computes them from its
memory, so a stay starts at its first measured hour (`ModelConfig.start_at_first`). Hours that
measure nothing hold the last risk in the step, as they do for the network members.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.alarm_figures import first_measured
from models.contract import FEATURES, elapsed_hours
from models.reference import NORMAL
from training.sepsis import metrics as M
from training.sepsis.baseline import BaselineConfig, fit_booster, hourly_features
from training.sepsis.batching import stay_rows
from training.sepsis.crossfit import combine
from training.sepsis.data import load_cohort
from training.sepsis.ensemble import SepsisEnsemble, load_model
from training.sepsis.splits import crossfit_split
from training.sepsis.trees import TreeEnsemble, TreeModel, deviation_arrays

# Septic direction of the variables whose one tail is septic: LightGBM keeps the boosters' risk
# monotone in their last value.
MONOTONE = {"HR": 1, "Resp": 1, "Creatinine": 1, "Lactate": 1, "Bilirubin_total": 1,
            "O2Sat": -1, "SBP": -1, "MAP": -1, "HCO3": -1, "pH": -1, "Platelets": -1}
# Both tails septic (SIRS: fever or hypothermia, leukocytosis or leukopenia): read as the distance from
# the clinical normal (models/reference_values.csv), monotone rising.
DEVIATIONS = {name: float(NORMAL[FEATURES.index(name)]) for name in ("Temp", "WBC")}


def step_inputs(values: np.ndarray, offsets: np.ndarray,
                deviations: dict[str, float] | None = None) -> tuple[np.ndarray, list[str]]:
    """The boosting inputs [rows, 108] as a `start_at_first` step's memory holds them (`TreeInputs`):
    nothing before a stay's first hour with a vital sign or lab, and that hour steps with 0 elapsed
    hours; `deviations` ({column: normal}) read as |value - normal| (named `<column>_from_normal`)."""
    values = np.asarray(values, dtype=np.float32)
    offsets = np.asarray(offsets, dtype=np.int64)
    stay = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    position = np.arange(len(values)) - offsets[:-1][stay]  # each row's index within its stay
    first = first_measured(values, offsets)[stay]
    masked = np.where((position >= first)[:, None], values, np.nan).astype(np.float32)
    elapsed = elapsed_hours(values, offsets) * (position > first)
    x, names = hourly_features(masked, offsets, elapsed=elapsed)
    mask, center = deviation_arrays(deviations)
    x[:, : len(mask)][:, mask] = np.abs(x[:, : len(mask)][:, mask] - center[mask])
    names = [f"{n}_from_normal" if i < len(mask) and mask[i] else n for i, n in enumerate(names)]
    return x, names


def monotone_constraints(names: list[str]) -> list[int]:
    return [1 if n.endswith("_from_normal") else MONOTONE.get(n, 0) for n in names]


def fold_boosters(cohort, k: int, seed: int, cfg: BaselineConfig, monotone: bool,
                  deviations: dict[str, float] | None = None) -> tuple[list[str], list[dict]]:
    """One booster per fold (trained on the other folds, early-stopped on its own), as LightGBM model
    text at its best iteration, with a record of each."""
    x, names = step_inputs(cohort.values, cohort.offsets, deviations)
    y = cohort.labels.astype(np.int8)
    extra = ({"monotone_constraints": monotone_constraints(names), "monotone_constraints_method": "advanced"}
             if monotone else None)
    models, records = [], []
    for f in range(k):
        split = crossfit_split(cohort, f, k, seed)
        tr, va = stay_rows(cohort.offsets, split.train), stay_rows(cohort.offsets, split.val)
        booster, _, seconds = fit_booster(cfg, x[tr], y[tr], x[va], y[va], names, extra)
        best = booster.best_iteration or booster.current_iteration()
        models.append(booster.model_to_string(num_iteration=best))
        records.append({"fold": split.name, "best_iteration": int(best), "seconds": float(seconds),
                        "auroc_rows": float(M.hourly_auroc([y[va]], [booster.predict(x[va], num_iteration=best)]))})
    return models, records


def load_networks(source: Path) -> SepsisEnsemble:
    """The network members: a crossfit's ensemble.pt, or a shipped model folder read back from its
    ONNX step (`from_onnx`, checked equal to it)."""
    source = Path(source)
    if source.suffix == ".pt":
        model = load_model(torch.load(source, map_location="cpu"))
    else:
        from training.sepsis.from_onnx import ensemble_from_onnx

        model = ensemble_from_onnx(source)
    if not isinstance(model, SepsisEnsemble):
        raise ValueError(f"{source}: a single model, not a cross-fitted ensemble")
    if not torch.allclose(model.weights, torch.full_like(model.weights, 1.0 / len(model.members))):
        raise ValueError(f"{source}: already a blend; give the network's own cross-fitted ensemble")
    return model


def blend_crossfit(networks: Path, network_record: Path, data: str, out: Path, name: str,
                   cfg: BaselineConfig, monotone: bool = True, deviations: dict[str, float] | None = DEVIATIONS,
                   device: str = "cpu", dropout_rates=(0.0, 0.3, 0.5)) -> dict:
    """The networks of a cross-fitted model (`network_record`: its crossfit metrics.json, for the
    folds, the split seed and the archive) blended with boosters trained on the same folds."""
    record = json.loads(Path(network_record).read_text())
    k, seed = int(record["folds"]), int(record["config"]["split_seed"])
    ensemble = load_networks(networks)
    if len(ensemble.members) % k:
        raise ValueError(f"{networks}: {len(ensemble.members)} members for {k} folds")
    cohort = load_cohort(data, cache_dir=Path(cfg.cache_dir), progress=cfg.progress)
    if cohort.source_sha256 != record["data_sha256"]:
        raise ValueError(f"{data}: not the archive {network_record} was trained on")
    boosters, booster_records = fold_boosters(cohort, k, seed, cfg, monotone, deviations)
    trees = [TreeModel(TreeEnsemble([m]), deviations) for m in boosters]
    networks_kind = [m.to(device) for m in ensemble.members]
    params = {key: getattr(cfg, key) for key in ("learning_rate", "num_leaves", "min_child_samples", "feature_fraction",
                                                   "bagging_fraction", "max_rounds", "early_stopping", "seed")}
    blend_record = {
        "seed_sets": record.get("seed_sets", 1), "member_seeds": record.get("member_seeds"),
        "fold_runs": [*record.get("fold_runs", []), *(f"{name}-booster-f{f}" for f in range(k))],
        "config": record["config"], "best_epochs": record.get("best_epochs"), "epochs_run": record.get("epochs_run"),
        "networks": {"source": str(networks), "run": record.get("run"), "oof": record.get("oof"),
                     "test": record.get("test")},
        "boosters": {"inputs": "the step's memory (training/sepsis/trees.py TreeInputs; start at the first measured hour)",
                     "parameters": params, "monotone": MONOTONE if monotone else None,
                     "from_normal": deviations or None, "folds": booster_records},
    }
    return combine([networks_kind, trees], cohort, k, seed, data, out, name, device, dropout_rates, blend_record,
                   sources=[str(networks), *(f"booster fold {f}" for f in range(k))])
