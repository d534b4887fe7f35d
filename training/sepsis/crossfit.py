"""Cross-fitting: every development stay trains a model and every one chooses, none twice.

The patient split's training and validation stays (85% of the archive's development data) are cut
into k folds by patient (training/sepsis/splits.py:crossfit_split). Member k trains on the other
folds and is early-stopped on fold k; its predictions on fold k are out-of-fold (OOF). The OOF
predictions of all k members cover every development stay once, and everything chosen after
training is chosen on them: the Platt calibration, the operating threshold, the operating points.
The shipped model is the k members as one step (training/sepsis/ensemble.py), each having seen
(k-1)/k of the development stays. The test split is read once, for the record, after all of it.

Several seed-sets (`train --folds k --seed s` for more than one seed per fold) make one model of
m x k members: member i belongs to fold i % k, a stay's out-of-fold risk is the mean logit of the m
members that did not train on it, and the shipped step is all m x k members' mean logit.

The boosting peer runs under the same protocol (the same folds, early stopping on its fold, the
threshold on its OOF predictions, the k boosters' mean on test).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.alarm_figures import first_measured
from training.sepsis import metrics as M
from training.sepsis.baseline import BaselineConfig, fit_booster, hourly_features
from training.sepsis.batching import CohortTensors, per_stay, stay_rows
from training.sepsis.calibration import fit_platt, reliability
from training.sepsis.data import load_cohort
from training.sepsis.ensemble import SepsisEnsemble
from training.sepsis.evaluate import dropout_predictions
from training.sepsis.model import SepsisModel
from training.sepsis.operating_points import Scored, operating_points
from training.sepsis.physiology import direction_shares
from training.sepsis.predict import predict_rows, predict_stays, stay_labels
from training.sepsis.silence import silence_drift
from training.sepsis.splits import crossfit_split, out_of_fold_order

PROTOCOL = ("k-fold cross-fitting over the patient split's training + validation stays (by patient, stratified by "
            "hospital and sepsis); each member early-stopped on its own fold; calibration, threshold and operating "
            "points chosen on the out-of-fold predictions; the test split read once")


def fold_runs(metrics_paths: list[Path]) -> list[dict]:
    """The fold runs' records (train.py's metrics.json) as members in the order member i <-> fold i % k:
    one or more seed-sets, each fold equally often and each (fold, seed) once; one fold count, one
    split seed and one archive among them."""
    runs = [json.loads(Path(p).read_text()) for p in metrics_paths]
    folds = {r["config"]["folds"] for r in runs}
    seeds = {r["config"]["split_seed"] for r in runs}
    data = {r["data_sha256"] for r in runs}
    if len(folds) != 1 or len(seeds) != 1 or len(data) != 1 or 0 in folds:
        raise ValueError(f"fold runs disagree or are not cross-fitted: folds {folds}, split seeds {seeds}, "
                         f"archives {len(data)}")
    k = folds.pop()
    by_fold: dict[int, list[dict]] = {f: [] for f in range(k)}
    for r in runs:
        if r["config"]["fold"] not in by_fold:
            raise ValueError(f"fold {r['config']['fold']} is not one of the {k} folds")
        by_fold[r["config"]["fold"]].append(r)
    counts = {len(v) for v in by_fold.values()}
    if len(counts) != 1:
        raise ValueError(f"need each of the {k} folds equally often, got "
                         f"{ {f: len(v) for f, v in by_fold.items()} } runs per fold")
    for f, group in by_fold.items():
        if len({r["config"]["seed"] for r in group}) != len(group):
            raise ValueError(f"fold {f}: the same model seed twice; each seed-set needs its own seed")
        group.sort(key=lambda r: r["config"]["seed"])
    return [by_fold[f][s] for s in range(counts.pop()) for f in range(k)]


def fold_models(members: list, k: int, weights=None) -> list:
    """Per fold, the model that scores its stays out of fold: its one member, or its members' logits
    combined (member i belongs to fold i % k, as `fold_runs` orders them): their mean, or, given the
    whole model's `weights`, each member's weight times k (a blend's fold logit is then its kinds'
    logits weighted as the shipped step weights them; with equal weights, the mean again)."""
    if len(members) % k:
        raise ValueError(f"{len(members)} members do not divide into {k} folds")
    groups = [members[f::k] for f in range(k)]
    if weights is None:
        return [g[0] if len(g) == 1 else SepsisEnsemble(g).eval() for g in groups]
    w = torch.as_tensor(weights, dtype=torch.float32).reshape(-1) * k
    out = []
    for f, g in enumerate(groups):
        gw = w[f::k]
        out.append(g[0] if len(g) == 1 and abs(float(gw[0]) - 1.0) < 1e-6 else SepsisEnsemble(g, gw.tolist()).eval())
    return out


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def platt(probs: list[np.ndarray], a: float, b: float) -> list[np.ndarray]:
    return [(1.0 / (1.0 + np.exp(-(a * logit(p) + b)))).astype(np.float32) for p in probs]


def pooled_shares(parts: list[dict]) -> dict:
    """direction_shares of several folds as one: shares weighted by each fold's stays."""
    total = sum(p["stays"] for p in parts)
    out = {"hour": parts[0]["hour"], "stays": total, "variables": {}}
    for name, first in parts[0]["variables"].items():
        share = sum(p["variables"][name]["share_higher"] * p["stays"] for p in parts) / total
        ratio = float(np.median([p["variables"][name]["median_risk_ratio"] for p in parts]))
        out["variables"][name] = {"normal": first["normal"], "abnormal": first["abnormal"], "share_higher": share,
                                  "median_risk_ratio_of_folds": ratio}
    return out


def crossfit_cfc(metrics_paths: list[Path], data: str, out: Path, name: str, cache_dir: str = ".cache/sepsis",
                 device: str = "cpu", dropout_rates=(0.0, 0.3, 0.5)) -> dict:
    """The fold runs (one or more seed-sets) as one cross-fitted model: OOF metrics and choices, then
    test once. Writes <out>/metrics.json (export.py reads it), <out>/operating_points.json and
    <out>/ensemble.pt. An empty `dropout_rates` skips the temporal-dropout test (most of the time)."""
    runs = fold_runs(metrics_paths)
    k, seed = runs[0]["config"]["folds"], runs[0]["config"]["split_seed"]
    cohort = load_cohort(data, cache_dir=Path(cache_dir), progress=False)
    if cohort.source_sha256 != runs[0]["data_sha256"]:
        raise ValueError(f"{data}: not the archive the fold runs trained on")
    members = [SepsisModel.from_checkpoint(torch.load(r["checkpoint"], map_location="cpu")).to(device) for r in runs]
    record = {"seed_sets": len(runs) // k, "member_seeds": [r["config"]["seed"] for r in runs],
              "fold_runs": [r["run"] for r in runs], "config": runs[0]["config"],
              "best_epochs": [r["best_epoch"] for r in runs], "epochs_run": [r["epochs_run"] for r in runs]}
    return combine([members], cohort, k, seed, data, out, name, device, dropout_rates, record,
                   sources=[r["checkpoint"] for r in runs])


def fit_blend(labels: list[np.ndarray], logits: list[list[np.ndarray]]) -> tuple[list[float], float]:
    """Logistic regression of the hourly label on each kind's out-of-fold logit -> (coefficients, intercept):
    the blend's weights and its calibration in one fit."""
    from sklearn.linear_model import LogisticRegression

    x = np.stack([np.concatenate(kind) for kind in logits], axis=1)
    fit = LogisticRegression(C=np.inf, max_iter=1000).fit(x, np.concatenate(labels))  # unpenalised
    return [float(c) for c in fit.coef_[0]], float(fit.intercept_[0])


def combine(kinds: list[list], cohort, k: int, seed: int, data: str, out: Path, name: str, device: str,
            dropout_rates, record: dict, sources: list) -> dict:
    """Members of one or more kinds (each a list whose member i belongs to fold i % k) as one
    cross-fitted model: chosen on out-of-fold predictions, the test split read once; writes
    <out>/metrics.json, operating_points.json and ensemble.pt.

    One kind: the members' mean logit, Platt-calibrated on the OOF hours. Several (a blend): each
    kind's fold logit (its members that did not train on the stay) and one logistic regression of
    the label on them (`fit_blend`), whose coefficients weight the kinds and whose intercept
    calibrates; the shipped step weights every member by its kind's coefficient over its count."""
    splits = [crossfit_split(cohort, f, k, seed) for f in range(k)]
    tensors = CohortTensors.from_cohort(cohort, device)
    members = [m for kind in kinds for m in kind]
    oof_labels, kind_probs = [], [[] for _ in kinds]
    kind_folds = [fold_models(kind, k) for kind in kinds]
    for f, split in enumerate(splits):
        oof_labels += stay_labels(tensors, split.val)
        for j, folds in enumerate(kind_folds):
            kind_probs[j] += predict_stays(folds[f], tensors, split.val)
    if len(kinds) == 1:
        weights = None
        a, b = fit_platt(oof_labels, kind_probs[0])
        oof_cal = platt(kind_probs[0], a, b)
        calibration = {"method": "Platt scaling of the logit, fitted on the out-of-fold hours", "a": a, "b": b}
    else:
        kind_logits = [[logit(p) for p in probs] for probs in kind_probs]
        coefficients, b = fit_blend(oof_labels, kind_logits)
        a = 1.0
        weights = [c / len(kind) for c, kind in zip(coefficients, kinds) for _ in kind]
        blended = [sum(c * z[i] for c, z in zip(coefficients, kind_logits)) + b for i in range(len(oof_labels))]
        oof_cal = [(1.0 / (1.0 + np.exp(-z))).astype(np.float32) for z in blended]
        calibration = {"method": "logistic regression of the label on each kind's out-of-fold logit, fitted on "
                                 "the out-of-fold hours (weights and calibration in one fit)",
                       "a": a, "b": b, "kinds": [kind[0].config.core for kind in kinds],
                       "coefficients": coefficients}
    per_fold, shares = [], []
    fold_blends = fold_models(members, k, weights)
    start = 0
    for split, model in zip(splits, fold_blends):
        n = len(split.val)
        per_fold.append({"fold": split.name, "stays": int(n),
                         "auroc": M.hourly_auroc(oof_labels[start: start + n], oof_cal[start: start + n])})
        shares.append(direction_shares(model, tensors, split.val))
        start += n
    threshold, _ = M.choose_threshold(oof_labels, oof_cal)
    # each stay's alarm figures from its first measured row (models.alarm_figures), in the order of its labels
    firsts = first_measured(cohort.values, cohort.offsets)
    oof_starts = out_of_fold_order(firsts, splits)
    oof = M.evaluate(oof_labels, oof_cal, threshold, oof_starts)
    start = 0
    for row in per_fold:  # each fold at the common threshold: the spread behind the pooled figure
        labels, probs = oof_labels[start: start + row["stays"]], oof_cal[start: start + row["stays"]]
        row["utility"] = M.normalized_utility(labels, [p >= threshold for p in probs])
        start += row["stays"]

    ensemble = SepsisEnsemble(members, weights).to(device).eval()
    ensemble.calibration.copy_(torch.tensor([a, b]))
    # everything above was chosen; the test split is read from here on, once
    test_idx = splits[0].test
    test_labels, test_probs = stay_labels(tensors, test_idx), predict_stays(ensemble, tensors, test_idx)
    test_starts = firsts[np.asarray(test_idx)]
    test = M.evaluate(test_labels, test_probs, threshold, test_starts)
    sub = cohort.subset(test_idx)
    drift = silence_drift(lambda v, e, o: predict_rows(ensemble, v, e, o, device), sub.values, sub.offsets, threshold)
    dropout = []
    for variant in ("remove", "zero"):
        for rate in dropout_rates:
            probs = dropout_predictions(ensemble, sub, rate, variant, seed=1234, device=device)
            dropout.append({"variant": variant, "rate": rate, "model": name, "auroc": M.hourly_auroc(test_labels, probs),
                            "utility": M.normalized_utility(test_labels, [p >= threshold for p in probs])})
    dev_idx = np.concatenate([s.val for s in splits])
    points = operating_points(Scored(oof_labels, oof_cal, oof_starts), Scored(test_labels, test_probs, test_starts),
                              "sepsis-cfc", name,
                              {"data": Path(data).name, "data_sha256": cohort.source_sha256,
                               "split": f"{k}-fold cross-fitting over patient split seed {seed}'s training + "
                                        "validation stays; 'validation' figures are out-of-fold",
                               "validation_stays": int(len(dev_idx)), "test_stays": int(len(test_idx)),
                               "card_threshold": float(threshold)}, progress=False)
    result = {
        "run": name, "protocol": PROTOCOL, "folds": k, "split": f"crossfit-{k} (patient split seed {seed})",
        **{key: record[key] for key in ("seed_sets", "member_seeds")},
        "data_sha256": cohort.source_sha256, "fold_runs": record["fold_runs"],
        "config": record["config"], "n_train_stays": int(len(dev_idx)),
        "n_train_rows": int(cohort.lengths[dev_idx].sum()), "n_test_stays": int(len(test_idx)),
        "threshold": float(threshold),
        "threshold_selection": "maximises the normalised utility on the out-of-fold predictions of the "
                               + (f"{k} cross-fitted members (every development stay scored by the member that did not train on it)"
                                  if len(kinds) == 1 else
                                  f"blend of {' and '.join(kind[0].config.core for kind in kinds)}, each cross-fitted over "
                                  f"the same {k} folds (every development stay scored by the members that did not train on it)"),
        "calibration": {**calibration, "reliability_oof": reliability(oof_labels, oof_cal),
                        "reliability_test": reliability(test_labels, test_probs)},
        "oof": oof, "oof_per_fold": per_fold, "plausibility_oof": pooled_shares(shares),
        "plausibility_test": direction_shares(ensemble, tensors, test_idx),
        "test": test, "silence_drift_test": drift, "temporal_dropout_test": dropout,
        **{key: v for key, v in record.items() if key not in ("seed_sets", "member_seeds", "fold_runs", "config")},
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save({**ensemble.cpu().to_checkpoint(), "sources": sources}, out / "ensemble.pt")
    (out / "operating_points.json").write_text(points.to_json() + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    return result


def choose_recipe(results: dict[str, dict], min_share: float = 0.95, min_utility: float = 0.40,
                  tie: float = 0.002) -> tuple[str | None, dict[str, str]]:
    """The cross-fitted recipe to ship, by the rule fixed before training (issue #25), on OOF figures
    only: eligible if every variable's plausibility share is >= min_share and the utility >= min_utility;
    among the eligible the highest utility, and within `tie` of it the higher AUROC. Returns the name
    (None: nothing ships) and, per recipe, why it is out or in."""
    why: dict[str, str] = {}
    eligible = []
    for name, r in results.items():
        shares = {v: s["share_higher"] for v, s in r["plausibility_oof"]["variables"].items()}
        low = {v: round(s, 3) for v, s in shares.items() if s is None or s < min_share}
        if low:
            why[name] = f"out: plausibility under {min_share:.0%} for {low}"
        elif r["oof"]["utility"] < min_utility:
            why[name] = f"out: OOF utility {r['oof']['utility']:.4f} < {min_utility}"
        else:
            eligible.append(name)
            why[name] = f"eligible: OOF utility {r['oof']['utility']:.4f}, AUROC {r['oof']['auroc']:.4f}"
    if not eligible:
        return None, why
    best = max(results[n]["oof"]["utility"] for n in eligible)
    near = [n for n in eligible if results[n]["oof"]["utility"] >= best - tie]
    return max(near, key=lambda n: results[n]["oof"]["auroc"]), why


def crossfit_boosting(cfg: BaselineConfig, folds: int, out: Path, predictions: Path | None = None) -> dict:
    """The boosting peer under the same protocol: one booster per fold, threshold on OOF, the
    boosters' mean probability on test, read once. `predictions`: the test split's hourly
    predictions go to <predictions>/predictions/ in the challenge's format, as `evaluate-onnx`
    writes a shipped step's (for `sepsis compare`)."""
    cohort = load_cohort(cfg.data, cache_dir=Path(cfg.cache_dir), progress=cfg.progress)
    splits = [crossfit_split(cohort, f, folds, cfg.split_seed) for f in range(folds)]
    x, names = hourly_features(cohort.values, cohort.offsets)
    y = cohort.labels.astype(np.int8)

    def cut(stays, flat):
        return per_stay(flat, np.concatenate([[0], np.cumsum(cohort.lengths[stays])]))

    test_rows = stay_rows(cohort.offsets, splits[0].test)
    oof_labels, oof_probs, per_fold, test_sum = [], [], [], np.zeros(len(test_rows))
    for split in splits:
        tr, va = stay_rows(cohort.offsets, split.train), stay_rows(cohort.offsets, split.val)
        booster, _, seconds = fit_booster(cfg, x[tr], y[tr], x[va], y[va], names)
        probs = cut(split.val, booster.predict(x[va], num_iteration=booster.best_iteration).astype(np.float32))
        labels = cut(split.val, y[va])
        oof_labels += labels
        oof_probs += probs
        per_fold.append({"fold": split.name, "stays": int(len(split.val)), "best_iteration": int(booster.best_iteration),
                         "seconds": seconds, "auroc": M.hourly_auroc(labels, probs)})
        test_sum += booster.predict(x[test_rows], num_iteration=booster.best_iteration)
    threshold, _ = M.choose_threshold(oof_labels, oof_probs)
    firsts = first_measured(cohort.values, cohort.offsets)  # the alarm figures' first monitored row of each stay
    oof_starts = out_of_fold_order(firsts, splits)
    test_labels = cut(splits[0].test, y[test_rows])
    test_probs = cut(splits[0].test, (test_sum / folds).astype(np.float32))
    result = {"run": cfg.run_name, "model": "lightgbm", "protocol": PROTOCOL, "folds": folds,
              "data_sha256": cohort.source_sha256, "threshold": float(threshold),
              "threshold_selection": "maximises the normalised utility on the out-of-fold predictions",
              "oof": M.evaluate(oof_labels, oof_probs, threshold, oof_starts), "oof_per_fold": per_fold,
              "test": M.evaluate(test_labels, test_probs, threshold, firsts[np.asarray(splits[0].test)])}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    if predictions is not None:
        from training.sepsis.evaluate_onnx import write_predictions

        test = np.asarray(splits[0].test)
        write_predictions(predictions, [cohort.patient_ids[i] for i in test],
                          np.concatenate([[0], np.cumsum(cohort.lengths[test])]), np.concatenate(test_probs),
                          threshold, cfg.progress)
    return result
