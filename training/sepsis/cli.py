"""`python -m training sepsis {train,evaluate,export,evaluate-onnx,operating-points,summarize,demo}`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.flags import add_flags, flag_values, from_flags
from training.sepsis.config import V3_MODEL, TrainConfig
from training.sepsis.model import ModelConfig

# what `evaluate` and `calibrate` read of a training configuration (the model comes from the checkpoint)
EVALUATION_FIELDS = ("data", "objective", "split", "split_seed", "run", "out", "cache_dir", "device")


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    return from_flags(TrainConfig, a)


def _headline(result: dict) -> str:
    test = result.get("test", {})
    keys = ("auroc", "auprc", "utility", "alarms_per_patient_day", "caught_in_window", "septic_alarmed_before_onset",
            "median_lead_time_hours", "precision", "recall", "f1", "false_positives")
    parts = [f"{k}={test[k]:.4g}" if isinstance(test.get(k), (int, float)) else "" for k in keys if k in test]
    return f"{result.get('run', '')}: " + " ".join(p for p in parts if p)


def cmd_train(a) -> int:
    from training.sepsis.train import train

    result = train(config_from_args(a))
    print(_headline(result))
    return 0


def _evaluate_checkpoint(a, calibrate: bool) -> int:
    """Evaluate a checkpoint on a split (threshold on validation, metrics on test, plots); with
    `calibrate`, first fit Platt calibration on the validation split and save the calibrated model."""
    import torch

    from training.sepsis.batching import CohortTensors
    from training.sepsis.data import load_cohort
    from training.sepsis.evaluate import evaluate_run
    from training.sepsis.ensemble import load_model
    from training.sepsis.predict import predict_stays, stay_labels
    from training.sepsis.train import make_split, pick_device, run_record

    model = load_model(torch.load(a.checkpoint, map_location="cpu"))
    cfg = TrainConfig(**flag_values(TrainConfig, a), model=model.config)
    device = pick_device(cfg.device)
    cohort = load_cohort(cfg.data, cache_dir=Path(cfg.cache_dir))
    split = make_split(cohort, cfg)
    tensors = CohortTensors.from_cohort(cohort, device)
    model = model.to(device)
    out = Path(cfg.out) / cfg.run_name
    extra = {}
    if calibrate:
        from training.sepsis.calibration import calibrate as fit, reliability
        from training.sepsis.plots import reliability_png

        val_labels, test_labels = stay_labels(tensors, split.val), stay_labels(tensors, split.test)
        val_probs = predict_stays(model, tensors, split.val)
        before = {"val": reliability(val_labels, val_probs),
                  "test": reliability(test_labels, predict_stays(model, tensors, split.test))}
        a_, b_ = fit(model, val_labels, val_probs)
        after = {"val": reliability(val_labels, predict_stays(model, tensors, split.val)),
                 "test": reliability(test_labels, predict_stays(model, tensors, split.test))}
        torch.save(model.to_checkpoint(), a.save)
        reliability_png({"test, before": before["test"], "test, calibrated": after["test"]}, out / "reliability_test.png")
        extra = {"calibration": {"method": "Platt scaling of the logit, fitted on the validation split's hours",
                                 "a": a_, "b": b_, "reliability_before": before, "reliability_after": after},
                 "calibrated_checkpoint": str(a.save)}
    result = evaluate_run(model, cohort, tensors, split.val, split.test, cfg)
    result.update(run_record(cfg, cohort, split.name, split.train, split.val, split.test, model, device))
    result.update({"checkpoint": str(a.checkpoint),
                   "note": "evaluated from a checkpoint with `python -m training sepsis "
                           f"{'calibrate' if calibrate else 'evaluate'}`; no training history", **extra})
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    print(_headline(result))
    return 0


def cmd_evaluate(a) -> int:
    return _evaluate_checkpoint(a, calibrate=False)


def cmd_calibrate(a) -> int:
    return _evaluate_checkpoint(a, calibrate=True)


def cmd_ensemble(a) -> int:
    """Several checkpoints as one model (states side by side, mean of logits); calibrate it next."""
    import torch

    from training.sepsis.ensemble import SepsisEnsemble
    from training.sepsis.model import SepsisModel

    # checked here, not in main(): train's --checkpoints is an output folder that need not exist yet
    for path in a.checkpoints:
        if not Path(path).exists():
            print(f"error: --checkpoints {path}: no such file or directory", file=sys.stderr)
            return 2
    members = [SepsisModel.from_checkpoint(torch.load(path, map_location="cpu")) for path in a.checkpoints]
    ensemble = SepsisEnsemble(members)
    Path(a.save).parent.mkdir(parents=True, exist_ok=True)
    torch.save({**ensemble.to_checkpoint(), "sources": [str(p) for p in a.checkpoints]}, a.save)
    print(f"ensemble of {len(members)} (state size {ensemble.state_size}) written to {a.save}")
    return 0


def cmd_silence_drift(a) -> int:
    """Risk of shipped models after 0, 6, 12, 24 empty observations, from real stays cut at random:
    one JSON per model in --out and one plot of them all."""
    from models.runtime import StepRuntime
    from training.sepsis.data import load_cohort
    from training.sepsis.evaluate_onnx import stream
    from training.sepsis.plots import silence_drift_png
    from training.sepsis.silence import silence_drift
    from training.sepsis.splits import patient_split

    cohort = load_cohort(a.data, cache_dir=Path(a.cache_dir))
    if a.split != "all":
        cohort = cohort.subset(getattr(patient_split(cohort, seed=a.split_seed), a.split))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for model_dir in a.model:
        runtime = StepRuntime.open(Path(model_dir), device=a.device)

        def predict(values, elapsed, offsets):
            return stream(runtime, values, elapsed, offsets)

        name = f"{runtime.name}-{runtime.version}"
        result = {"model": runtime.name, "version": runtime.version, "split": a.split, "split_seed": a.split_seed,
                  **silence_drift(predict, cohort.values, cohort.offsets, runtime.threshold, seed=a.seed)}
        (out / f"silence_drift_{name}.json").write_text(json.dumps(result, indent=2, default=float))
        results[name] = result
        last = result["rows"][-1]
        print(json.dumps({"model": name, "empty_hours": last["empty_hours"],
                          "below_stays_below": last["below_stays_below"], "mean_change": last["mean_change"]}))
    silence_drift_png(results, out / "silence_drift.png")
    return 0


def cmd_export(a) -> int:
    from training.sepsis.export import export
    from training.sepsis.plausibility import Gate, gate_applies

    gate = None
    if gate_applies(a.plausibility_gate, Path(a.out)):
        if a.plausibility_data is None:
            print("error: the plausibility gate needs --plausibility-data ARCHIVE (validation split); "
                  "--plausibility-gate off skips it, e.g. for a fixture model", file=sys.stderr)
            return 2
        gate = Gate(Path(a.plausibility_data), split_seed=a.split_seed, max_stays=a.plausibility_stays,
                    cache_dir=Path(a.cache_dir), record=Path(a.plausibility_out) if a.plausibility_out else None)
    out = export(Path(a.checkpoint), Path(a.metrics), Path(a.out), a.name, a.version, gate=gate)
    print(f"exported {out}/model.onnx and {out}/model_card.json")
    return 0


def cmd_plausibility(a) -> int:
    from training.sepsis.plausibility import run_cli

    return run_cli(a)


def cmd_compare(a) -> int:
    from training.sepsis.compare import run_cli

    return run_cli(a)


def cmd_baseline(a) -> int:
    from training.sepsis.baseline import BaselineConfig, train_baseline

    cfg = BaselineConfig(data=a.data, split_seed=a.split_seed, seed=a.seed, max_rounds=a.max_rounds,
                         threads=a.threads, out=a.out, run=a.run, cache_dir=a.cache_dir, progress=not a.no_progress)
    if a.folds:
        from training.sepsis.crossfit import crossfit_boosting

        predictions = Path(a.predictions) if a.predictions else None
        print(_headline(crossfit_boosting(cfg, a.folds, Path(cfg.out) / cfg.run_name, predictions)))
        return 0
    if a.predictions:
        raise SystemExit("sepsis baseline: --predictions goes with --folds (the cross-fitted peer's test split)")
    print(_headline(train_baseline(cfg)))
    return 0


def cmd_blend(a) -> int:
    from training.sepsis.baseline import BaselineConfig
    from training.sepsis.blend import DEVIATIONS, blend_crossfit
    from training.sepsis.train import pick_device

    cfg = BaselineConfig(data=a.data, max_rounds=a.max_rounds, threads=a.threads, cache_dir=a.cache_dir,
                         progress=not a.no_progress)
    result = blend_crossfit(Path(a.networks), Path(a.networks_record), a.data, Path(a.out), a.name, cfg,
                            monotone=not a.free, deviations=None if a.raw_two_sided else DEVIATIONS,
                            device=str(pick_device(a.device)),
                            dropout_rates=tuple(a.dropout_rates))
    oof = result["oof"]
    print(f"{_headline(result)} | out-of-fold auroc={oof['auroc']:.4g} utility={oof['utility']:.4g}")
    return 0


def cmd_crossfit(a) -> int:
    from training.sepsis.crossfit import crossfit_cfc
    from training.sepsis.train import pick_device

    result = crossfit_cfc([Path(p) for p in a.runs], a.data, Path(a.out), a.name, a.cache_dir,
                          str(pick_device(a.device)), dropout_rates=tuple(a.dropout_rates))
    oof = result["oof"]
    print(f"{_headline(result)} | out-of-fold auroc={oof['auroc']:.4g} utility={oof['utility']:.4g}")
    return 0


def cmd_evaluate_onnx(a) -> int:
    from models.runtime import StepRuntime
    from training.sepsis.data import load_cohort
    from training.sepsis.evaluate_onnx import evaluate_onnx
    from training.sepsis.splits import patient_split

    if a.lab_delay < 0:
        print(f"error: --lab-delay {a.lab_delay}: must be 0 or more hours", file=sys.stderr)
        return 2
    say(f"loading the model {a.model}")
    runtime = StepRuntime.open(Path(a.model), device=a.device)
    say(f"loading the stays from {a.data} (parsed on the first run, then from {a.cache_dir})")
    cohort = load_cohort(a.data, cache_dir=Path(a.cache_dir))
    if a.split != "all":
        split = patient_split(cohort, seed=a.split_seed)
        cohort = cohort.subset(getattr(split, a.split))
    say(f"{len(cohort):,} stays ({a.split} split), {len(cohort.values):,} hours, through ONNX Runtime "
        f"({runtime.provider}); predictions and metrics.json to {a.out}")
    result = evaluate_onnx(runtime, cohort, Path(a.out), drop_rate=a.drop_rate, seed=a.seed, lab_delay=a.lab_delay,
                           from_admission=a.from_admission)
    print(json.dumps({k: result[k] for k in ("model", "version", "provider", "stays", "rows", "lab_delay_hours",
                                             "auroc", "auprc", "utility")
                      if k in result}, default=float))
    return 0


def say(line: str) -> None:
    """What a long command is doing now, on stderr beside its progress bars (stdout keeps the results)."""
    print(line, file=sys.stderr, flush=True)


def cmd_operating_points(a) -> int:
    from training.sepsis.operating_points import run_cli

    return run_cli(a)


def cmd_ladder(a) -> int:
    from training.sepsis.ladder import run_cli

    return run_cli(a)


def cmd_summarize(a) -> int:
    from training.sepsis.summary import summarize

    print(summarize(Path(a.results)))
    return 0


def cmd_demo(a) -> int:
    """A quick real-data run on the CPU: a few minutes, to show the whole pipeline works."""
    from training.sepsis.train import train

    # outside the tracked results/ tree: runs/ is git-ignored and `make clean` removes runs/demo
    cfg = TrainConfig(data=a.data, model=ModelConfig(core="cfc", hidden_size=64, backbone_units=64, **V3_MODEL),
                      epochs=3, max_minutes=a.minutes, max_train_stays=4000, max_eval_stays=1500,
                      batch_size=64, out="runs/demo/results", checkpoints="runs/demo/checkpoints", run="demo-cfc64",
                      dropout_rates=(0.0, 0.5), device="cpu")
    say(f"train-demo: a small CfC (64 units) on 4,000 training stays, at most 3 epochs or {a.minutes:g} minutes "
        f"on the CPU, then evaluated once on 1,500 test-split stays")
    result = train(cfg, say=say)
    test = result["test"]

    def fmt(key: str, digits: int = 3) -> str:
        return "n/a" if test.get(key) is None else f"{test[key]:.{digits}f}"

    print(f"test split ({result['n_test_stays']:,} stays never trained on; threshold chosen on validation): "
          f"AUROC {fmt('auroc')}, AUPRC {fmt('auprc')}, utility {fmt('utility')}, "
          f"{fmt('alarms_per_patient_day', 2)} alarms per patient-day")
    print("(a few minutes of training on the CPU; the shipped model's figures are in README.md)")
    print(f"metrics and plots: {cfg.out}/{cfg.run_name}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training sepsis")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model (hourly or patient-level task)")
    add_flags(p, TrainConfig)
    p.set_defaults(func=cmd_train)
    for name, func, text in (
            ("evaluate", cmd_evaluate, "evaluate a checkpoint: threshold on validation, metrics on test, plots"),
            ("calibrate", cmd_calibrate, "fit Platt calibration on validation, save the model, then evaluate it")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--checkpoint", required=True)
        add_flags(p, TrainConfig, only=EVALUATION_FIELDS, required=("run",),
                  meta={"run": {"help": "name of the results folder"}})
        if name == "calibrate":
            p.add_argument("--save", required=True, help="where to write the calibrated checkpoint")
        p.set_defaults(func=func)
    p = sub.add_parser("ensemble", help="combine checkpoints into one model (calibrate and export it next)")
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--save", required=True, help="where to write the ensemble checkpoint")
    p.set_defaults(func=cmd_ensemble)
    p = sub.add_parser("silence-drift", help="risk after hours of empty observations, through the ONNX step")
    p.add_argument("--model", required=True, nargs="+", help="models/<name>/<version>, one or more")
    p.add_argument("--data", required=True)
    p.add_argument("--split", choices=["all", "train", "val", "test"], default="test")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="seed of the random cut hour per stay")
    p.add_argument("--out", required=True, help="a folder: silence_drift_<model>-<version>.json and silence_drift.png")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--cache-dir", default=".cache/sepsis")
    p.set_defaults(func=cmd_silence_drift)
    p = sub.add_parser("export", help="export a checkpoint as an ONNX step with its model card")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--metrics", required=True, help="the run's metrics.json (threshold and test metrics)")
    p.add_argument("--out", required=True, help="models/<name>/<version>")
    p.add_argument("--name", default="sepsis-cfc")
    p.add_argument("--version", default="1")
    p.add_argument("--plausibility-gate", choices=["auto", "on", "off"], default="auto",
                   help="refuse a model whose risk moves against physiology (training/sepsis/plausibility.py); "
                        "auto: on when --out is inside this repository's models/ folder")
    p.add_argument("--plausibility-data", default=None, help="the archive whose validation split the gate reads")
    p.add_argument("--plausibility-stays", type=int, default=1000, help="validation stays the gate probes")
    p.add_argument("--plausibility-out", default=None, help="also write the gate's record (JSON + PNG) here")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--cache-dir", default=".cache/sepsis")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("plausibility", help="response curves of a shipped step: does the risk move the "
                       "physiological way as one variable goes from normal to abnormal?")
    p.add_argument("--model", dest="model_ref", metavar="MODEL", required=True,
                   help="a model folder, or <name>/<version> of the registry (e.g. sepsis-cfc/3)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", choices=["validation", "test"], default="validation")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-stays", type=int, default=1000, help="random subset of the split (0: all its stays)")
    p.add_argument("--seed", type=int, default=0, help="seed of that subset")
    p.add_argument("--explanations", type=int, default=200,
                   help="also count clearly abnormal values explained as lowering the risk, on this many stays")
    p.add_argument("--out", default=None, help="default results/sepsis/plausibility/<name>-<version>")
    p.add_argument("--cache-dir", default=".cache/sepsis")
    p.set_defaults(func=cmd_plausibility)
    p = sub.add_parser("baseline", help="the boosting peer: LightGBM on the step's per-hour features")
    p.add_argument("--data", required=True)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rounds", type=int, default=3000)
    p.add_argument("--threads", type=int, default=0, help="LightGBM threads (0: all cores)")
    p.add_argument("--out", default="results/sepsis")
    p.add_argument("--run", default=None, help="results folder name (default lgbm-s<seed>)")
    p.add_argument("--cache-dir", default=".cache/sepsis")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--folds", type=int, default=0, help="cross-fit over this many folds (training/sepsis/crossfit.py)")
    p.add_argument("--predictions", default=None, metavar="DIR",
                   help="with --folds: the test split's hourly predictions into DIR/predictions/ in the challenge's "
                        "format, as `evaluate-onnx --out DIR` writes a shipped step's (for `sepsis compare`)")
    p.set_defaults(func=cmd_baseline)
    p = sub.add_parser("compare", help="two models' challenge-format predictions on one split: AUROC and utility "
                                       "with a paired bootstrap over stays (training/sepsis/compare.py)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", choices=["test", "all"], default="test")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--a", required=True, metavar="NAME=FOLDER", help="e.g. sepsis-cfc/4=OUT/predictions")
    p.add_argument("--b", required=True, metavar="NAME=FOLDER", help="e.g. lgbm-cf5=OUT/predictions")
    p.add_argument("--replicates", type=int, default=1000, help="paired draws of stays")
    p.add_argument("--bar", action="append", metavar="METRIC=VALUE",
                   help="also the share of draws at or above it, e.g. auroc=0.835 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for compare.json, compare.md and compare.png")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("crossfit", help="the fold runs of `train --folds K` as one model: out-of-fold choices, test once")
    p.add_argument("--runs", nargs="+", required=True,
                   help="each fold run's metrics.json; several per fold (other seeds) make one model of all of them")
    p.add_argument("--dropout-rates", nargs="*", type=float, default=[0.0, 0.3, 0.5],
                   help="temporal-dropout rates tested on the test split (none: skip it, most of the time)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="folder for metrics.json, operating_points.json, ensemble.pt")
    p.add_argument("--name", required=True, help="the cross-fitted model's run name")
    p.add_argument("--cache-dir", default=".cache/sepsis")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_crossfit)
    p = sub.add_parser("blend", help="a cross-fitted network and boosters on the same folds as one step, "
                                     "blended on out-of-fold predictions (training/sepsis/blend.py)")
    p.add_argument("--networks", required=True,
                   help="the network members: a crossfit's ensemble.pt, or a shipped model folder (read from its ONNX)")
    p.add_argument("--networks-record", required=True, help="that crossfit's metrics.json (folds, split seed, archive)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="folder for metrics.json, operating_points.json, ensemble.pt")
    p.add_argument("--name", required=True, help="the blend's run name")
    p.add_argument("--free", action="store_true", help="boosters without the monotone constraints (blend.MONOTONE)")
    p.add_argument("--raw-two-sided", action="store_true",
                   help="temperature and WBC as measured, unconstrained, instead of as distance from normal "
                        "(blend.DEVIATIONS)")
    p.add_argument("--max-rounds", type=int, default=3000)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--dropout-rates", nargs="*", type=float, default=[0.0, 0.3, 0.5],
                   help="temporal-dropout rates tested on the test split (none: skip it)")
    p.add_argument("--cache-dir", default=".cache/sepsis")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_blend)
    p = sub.add_parser("evaluate-onnx", help="stream stays through the ONNX runtime, hour by hour")
    p.add_argument("--model", required=True, help="models/<name>/<version>")
    p.add_argument("--data", required=True)
    p.add_argument("--split", choices=["all", "train", "val", "test"], default="all",
                   help="restrict to one split of --data (split seed --split-seed)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--drop-rate", type=float, default=0.0, help="remove this share of rows (elapsed time accumulated)")
    p.add_argument("--lab-delay", type=int, default=0, metavar="H",
                   help="labs known H hours after their draw hour, as deployed (the 25 resulted labs; not FiO2); "
                        "a result due after the stay's last row is dropped")
    p.add_argument("--from-admission", action="store_true",
                   help="step every stay from the ICU admission's hour 1, as the service does (a file that starts "
                        "at ICULOS s > 1 gets s - 1 empty rows first, stepped, not scored)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--cache-dir", default=".cache/sepsis")
    p.set_defaults(func=cmd_evaluate_onnx)
    p = sub.add_parser("operating-points", help="thresholds chosen on validation (utility, alarm budgets, "
                       "sensitivity targets) with test figures and risk bands, through the ONNX step")
    p.add_argument("--model", required=True, help="models/<name>/<version>; operating_points.json is written there")
    p.add_argument("--data", required=True)
    p.add_argument("--split-seed", type=int, default=0, help="patient split seed (0: the shipped card's)")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.2, 0.5], help="alarms per patient-day")
    p.add_argument("--sensitivities", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--out", default="results/sepsis/operating_points", help="record: json, tradeoff.png, README.md")
    p.add_argument("--overwrite", action="store_true", help="replace the model's existing operating_points.json")
    p.add_argument("--no-model-file", action="store_true", help="write only the record in --out")
    p.add_argument("--crossfit", default=None, metavar="DIR",
                   help="a cross-fitted model's folder (crossfit's metrics.json and ensemble.pt): choose on its "
                        "out-of-fold predictions instead of the patient split's validation stays")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--cache-dir", default=".cache/sepsis")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_operating_points)
    p = sub.add_parser("ladder", help="cross-fitted rungs side by side: each core's seed-sets, mean and spread")
    p.add_argument("--rung", action="append", required=True, metavar="NAME=DIR[,DIR...]",
                   help="a rung and its seed-sets' crossfit folders (metrics.json); repeat per rung")
    p.add_argument("--peer", default=None, help="the boosting peer's crossfit folder")
    p.add_argument("--out", required=True, help="folder for ladder.json, ladder.md and ladder.png")
    p.set_defaults(func=cmd_ladder)
    p = sub.add_parser("summarize", help="aggregate results/sepsis/*/metrics.json over seeds")
    p.add_argument("--results", default="results/sepsis")
    p.set_defaults(func=cmd_summarize)
    p = sub.add_parser("demo", help="a few minutes of real training on the CPU")
    p.add_argument("--data", required=True)
    p.add_argument("--minutes", type=float, default=2.0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "drop_rate") and not 0.0 <= args.drop_rate < 1.0:
        print("error: --drop-rate must be in [0, 1)", file=sys.stderr)
        return 2
    for attr in ("data", "checkpoint", "metrics", "model"):
        value = getattr(args, attr, None)
        for path in value if isinstance(value, list) else [value]:
            if path is not None and not Path(path).exists():
                print(f"error: --{attr} {path}: no such file or directory", file=sys.stderr)
                return 2
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:  # data, card and contract errors
        print(f"error: {exc}", file=sys.stderr)
        return 2
