"""The boosting peer: LightGBM on the per-hour features the streaming step already keeps.

Every CfC result is printed next to this model. Its inputs are what the step's featurizer holds at
each hour and nothing more (no windows, differences or derived scores), so a gap between the two
says how well the network uses the same information, not who had more of it:
- the carry-forward value of each of the 40 columns (NaN until first measured),
- for the 34 clinical columns (vitals and labs), how many times each was measured so far and the
  hours since it was last measured (NaN until first measured).

Same split, same threshold rule (utility maximised on validation), same metrics and plots as the
network runs; written to `results/sepsis/<run>/metrics.json`.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.alarm_figures import first_measured
from models.contract import FEATURES, N_CLINICAL, elapsed_hours
from training.sepsis import metrics as M
from training.sepsis import plots as P
from training.sepsis.batching import per_stay, stay_rows
from training.sepsis.data import load_cohort


def hourly_features(values: np.ndarray, offsets: np.ndarray,
                    elapsed: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Per-row memoryless inputs [rows, 108] and their names, computed stay by stay without a loop.

    Equal to the featurizer's memory (`Featurizer.step`): last value, measurement count, hours since
    the last measurement (elapsed time from ICULOS, as the step receives it, unless `elapsed` gives
    each row's hours since the previous row).
    """
    values = np.asarray(values, dtype=np.float32)
    rows, n_vars = values.shape
    stay = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    start = np.asarray(offsets[:-1])[stay]
    idx = np.broadcast_to(np.arange(rows)[:, None], (rows, n_vars))
    measured = ~np.isnan(values)
    # index of the latest measurement at or before each row, restarted at each stay's first row
    last_idx = np.maximum.accumulate(np.where(measured, idx, -1), axis=0)
    seen = last_idx >= start[:, None]
    last = np.where(seen, values[np.maximum(last_idx, 0), np.arange(n_vars)], np.nan)
    if elapsed is None:
        elapsed = elapsed_hours(values, offsets)
    clock = np.cumsum(np.asarray(elapsed, dtype=np.float64))
    since = np.where(seen, clock[:, None] - clock[np.maximum(last_idx, 0)], np.nan)
    cum = np.cumsum(measured, axis=0, dtype=np.int64)
    count = cum - cum[np.maximum(start - 1, 0)] * (start > 0)[:, None]
    c = N_CLINICAL
    x = np.concatenate([last, count[:, :c], since[:, :c]], axis=1).astype(np.float32)
    names = list(FEATURES) + [f"{f}_count" for f in FEATURES[:c]] + [f"{f}_hours_since" for f in FEATURES[:c]]
    return x, names


@dataclass
class BaselineConfig:
    data: str
    split_seed: int = 0
    seed: int = 0
    learning_rate: float = 0.05
    num_leaves: int = 63
    min_child_samples: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    max_rounds: int = 3000
    early_stopping: int = 100        # rounds without a better validation AUROC
    threads: int = 0                 # 0: LightGBM's default (all cores)
    out: str = "results/sepsis"
    run: str | None = None
    cache_dir: str = ".cache/sepsis"
    progress: bool = True

    @property
    def run_name(self) -> str:
        return self.run or f"lgbm-s{self.seed}"


def fit_booster(cfg: BaselineConfig, x_train, y_train, x_val, y_val, names: list[str], extra: dict | None = None):
    """LightGBM with early stopping on the validation rows' AUROC -> (booster, history, seconds);
    `extra`: further LightGBM parameters (e.g. monotone constraints)."""
    import lightgbm as lgb
    from tqdm.auto import tqdm

    train_set = lgb.Dataset(x_train, y_train, feature_name=names, free_raw_data=False)
    val_set = lgb.Dataset(x_val, y_val, reference=train_set)
    params = {"objective": "binary", "metric": "auc", "learning_rate": cfg.learning_rate,
              "num_leaves": cfg.num_leaves, "min_child_samples": cfg.min_child_samples,
              "feature_fraction": cfg.feature_fraction, "bagging_fraction": cfg.bagging_fraction,
              "bagging_freq": 1, "seed": cfg.seed, "verbosity": -1, "num_threads": cfg.threads, **(extra or {})}
    bar = tqdm(total=cfg.max_rounds, desc=f"{cfg.run_name} rounds", disable=not cfg.progress, leave=False)
    history: list[dict] = []

    def record(env):
        bar.update(1)
        for _, metric, value, _ in env.evaluation_result_list:
            if env.iteration % 50 == 0:
                history.append({"round": env.iteration, f"val_{metric}": float(value)})

    started = time.time()
    booster = lgb.train(params, train_set, num_boost_round=cfg.max_rounds, valid_sets=[val_set],
                        callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False), record])
    bar.close()
    return booster, history, time.time() - started


def train_baseline(cfg: BaselineConfig) -> dict:
    from training.sepsis.splits import patient_split

    cohort = load_cohort(cfg.data, cache_dir=Path(cfg.cache_dir), progress=cfg.progress)
    split = patient_split(cohort, seed=cfg.split_seed)
    x, names = hourly_features(cohort.values, cohort.offsets)
    y = cohort.labels.astype(np.int8)
    parts = {k: stay_rows(cohort.offsets, getattr(split, k)) for k in ("train", "val", "test")}
    booster, history, seconds = fit_booster(cfg, x[parts["train"]], y[parts["train"]], x[parts["val"]],
                                            y[parts["val"]], names)

    def stay_probs(part: str) -> tuple[list, list]:
        stays = getattr(split, part)
        p = booster.predict(x[parts[part]], num_iteration=booster.best_iteration).astype(np.float32)
        lengths = cohort.lengths[stays]
        cuts = np.concatenate([[0], np.cumsum(lengths)])
        return per_stay(y[parts[part]], cuts), per_stay(p, cuts)

    val_labels, val_probs = stay_probs("val")
    test_labels, test_probs = stay_probs("test")
    threshold, _ = M.choose_threshold(val_labels, val_probs)
    out_dir = Path(cfg.out) / cfg.run_name
    out_dir.mkdir(parents=True, exist_ok=True)
    thresholds, utilities = M.utility_curve(M.utility_table(val_labels), np.concatenate(val_probs))
    P.utility_curve_png(thresholds, utilities, threshold, out_dir / "utility_vs_threshold_val.png")
    P.roc_curve_png(test_labels, test_probs, out_dir / "roc_test.png", title=f"{cfg.run_name}: hourly ROC (test)")
    P.pr_curve_png(test_labels, test_probs, out_dir / "pr_test.png", title=f"{cfg.run_name}: hourly PR (test)")
    gain = booster.feature_importance("gain")
    top = sorted(zip(names, gain.tolist()), key=lambda t: -t[1])[:20]
    firsts = first_measured(cohort.values, cohort.offsets)  # alarm figures from each stay's first measured row
    result = {
        "run": cfg.run_name, "model": "lightgbm", "config": {**asdict(cfg), "objective": "hourly"},
        "split": split.name, "data_sha256": cohort.source_sha256,
        "n_train_stays": int(len(split.train)), "n_train_rows": int(len(parts["train"])),
        "n_val_stays": int(len(split.val)), "n_test_stays": int(len(split.test)),
        "features": names, "best_iteration": int(booster.best_iteration), "train_seconds": seconds,
        "parameters": {"core": int(booster.num_trees()), "total": int(booster.num_trees()),
                       "note": "trees, not weights"},
        "threshold": float(threshold),
        "threshold_selection": "maximises the normalised utility on the validation split",
        "val": M.evaluate(val_labels, val_probs, threshold, firsts[split.val]),
        "test": M.evaluate(test_labels, test_probs, threshold, firsts[split.test]),
        "top_features_by_gain": top, "history": history,
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    return result
