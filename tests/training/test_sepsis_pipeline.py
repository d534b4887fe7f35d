"""The sepsis pipeline end to end on a fixture archive in the real format: train a few steps,
export one ONNX step, check it against PyTorch, evaluate it as the service runs it."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.runtime import StepRuntime
from training.__main__ import main as cli
from training.sepsis.batching import elapsed_hours
from training.sepsis.data import load_cohort
from training.sepsis.model import SepsisModel

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny CfC run on a 100-stay fixture archive (both hospitals, a quarter septic)."""
    from tests.training.conftest import make_archive, synthetic_stays

    root = tmp_path_factory.mktemp("pipeline")
    archive = make_archive(root, synthetic_stays(n=100, seed=7))
    rc = cli(["sepsis", "train", "--data", str(archive), "--hidden", "8", "--backbone-units", "8",
              "--epochs", "2", "--batch-size", "32", "--out", str(root / "results"),
              "--checkpoints", str(root / "runs"), "--cache-dir", str(root / "cache"),
              "--run", "tiny", "--no-progress", "--device", "cpu"])
    assert rc == 0
    return root, archive


def test_training_writes_metrics_plots_and_a_checkpoint(trained):
    root, _ = trained
    out = root / "results" / "tiny"
    metrics = json.loads((out / "metrics.json").read_text())
    for png in ("roc_test.png", "pr_test.png", "utility_vs_threshold_val.png", "learning_curves.png",
                "temporal_dropout_test.png"):
        assert (out / png).stat().st_size > 1000, png
    assert metrics["epochs_run"] == 2 and len(metrics["history"]) == 2
    assert 0.0 <= metrics["threshold"] <= 1.0
    assert metrics["n_train_stays"] + metrics["n_val_stays"] + metrics["n_test_stays"] == 100
    assert {r["variant"] for r in metrics["temporal_dropout_test"]} == {"remove", "zero"}
    assert {r["rate"] for r in metrics["temporal_dropout_test"]} == {0.0, 0.3, 0.5, 0.7}
    assert (root / "runs" / "tiny" / "best.pt").exists()


def test_exported_step_matches_the_pytorch_sequence_forward(trained, tmp_path):
    root, archive = trained
    out = tmp_path / "sepsis-cfc" / "7"
    assert cli(["sepsis", "export", "--checkpoint", str(root / "runs/tiny/best.pt"),
                "--metrics", str(root / "results/tiny/metrics.json"), "--out", str(out), "--version", "7"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["version"] == "7" and card["threshold"] == pytest.approx(
        json.loads((root / "results/tiny/metrics.json").read_text())["threshold"])

    model = SepsisModel.from_checkpoint(torch.load(root / "runs/tiny/best.pt", map_location="cpu"))
    runtime = StepRuntime.open(out, device="cpu")
    cohort = load_cohort(archive, cache_dir=tmp_path / "cache", progress=False)
    elapsed = elapsed_hours(cohort.values, cohort.offsets)
    for i in range(0, len(cohort), 10):  # real-format stays, hour by hour through ONNX Runtime
        lo, hi = cohort.offsets[i], cohort.offsets[i + 1]
        onnx_risk = runtime.run_sequence(cohort.values[lo:hi], elapsed[lo:hi])
        with torch.no_grad():
            logits = model(torch.from_numpy(cohort.values[lo:hi])[None], torch.from_numpy(elapsed[lo:hi])[None])
        np.testing.assert_allclose(onnx_risk, torch.sigmoid(logits)[0].numpy(), atol=1e-5, rtol=0)


def test_export_refuses_to_overwrite_a_shipped_version(trained, tmp_path, capsys):
    root, _ = trained
    args = ["sepsis", "export", "--checkpoint", str(root / "runs/tiny/best.pt"),
            "--metrics", str(root / "results/tiny/metrics.json"), "--out", str(tmp_path / "m" / "1")]
    assert cli(args) == 0
    assert cli(args) == 2
    assert "immutable" in capsys.readouterr().err


def test_evaluate_onnx_writes_challenge_predictions_and_metrics(trained, tmp_path):
    root, archive = trained
    model_dir = tmp_path / "sepsis-cfc" / "1"
    cli(["sepsis", "export", "--checkpoint", str(root / "runs/tiny/best.pt"),
         "--metrics", str(root / "results/tiny/metrics.json"), "--out", str(model_dir)])
    out = tmp_path / "eval"
    assert cli(["sepsis", "evaluate-onnx", "--model", str(model_dir), "--data", str(archive), "--out", str(out),
                "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stays"] == 100 and metrics["provider"] == "CPUExecutionProvider"
    preds = sorted((out / "predictions").glob("p*.psv"))
    assert len(preds) == 100
    lines = preds[0].read_text().splitlines()
    assert lines[0] == "PredictedProbability|PredictedLabel"
    prob, label = lines[1].split("|")
    assert 0.0 <= float(prob) <= 1.0 and label in {"0", "1"}
    assert int(label) == int(float(prob) >= metrics["threshold"])

    dropped = tmp_path / "eval_drop"
    assert cli(["sepsis", "evaluate-onnx", "--model", str(model_dir), "--data", str(archive), "--out", str(dropped),
                "--device", "cpu", "--drop-rate", "0.5", "--cache-dir", str(tmp_path / "cache")]) == 0
    # every hour still gets a prediction: the latest risk computed at or before it
    assert len((dropped / "predictions" / preds[0].name).read_text().splitlines()) == len(lines)


def test_cli_names_a_missing_file_and_a_bad_rate(tmp_path, capsys):
    assert cli(["sepsis", "train", "--data", str(tmp_path / "nope.tar.xz")]) == 2
    assert "nope.tar.xz" in capsys.readouterr().err
    assert cli(["sepsis", "evaluate-onnx", "--model", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path),
                "--drop-rate", "1.5"]) == 2
    assert "--drop-rate" in capsys.readouterr().err


def test_cli_reports_a_malformed_stay_with_file_and_line(tmp_path, capsys):
    from tests.training.conftest import HEADER, make_archive

    good = [[float("nan")] * 34 + [60, 1, 0, 1, -1, 1, 0]]
    archive = make_archive(tmp_path, {"setA/p000001.psv": good, "setA/p000002.psv": "|".join(HEADER) + "\n1|2|3\n"})
    assert cli(["sepsis", "train", "--data", str(archive), "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "p000002.psv" in err and "line 2" in err


def test_calibrated_export_carries_the_calibration_and_keeps_the_ranking(trained, tmp_path):
    root, archive = trained
    saved = tmp_path / "calibrated.pt"
    assert cli(["sepsis", "calibrate", "--checkpoint", str(root / "runs/tiny/best.pt"), "--data", str(archive),
                "--run", "tiny-cal", "--out", str(tmp_path / "results"), "--save", str(saved),
                "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "results/tiny-cal/metrics.json").read_text())
    original = json.loads((root / "results/tiny/metrics.json").read_text())
    assert metrics["test"]["auroc"] == pytest.approx(original["test"]["auroc"], abs=1e-6)
    assert (tmp_path / "results/tiny-cal/reliability_test.png").stat().st_size > 1000
    out = tmp_path / "sepsis-cfc" / "3"
    assert cli(["sepsis", "export", "--checkpoint", str(saved), "--metrics",
                str(tmp_path / "results/tiny-cal/metrics.json"), "--out", str(out), "--version", "3"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert "Platt" in card["threshold_selection"]
    model = SepsisModel.from_checkpoint(torch.load(saved, map_location="cpu"))
    assert model.calibration.tolist() != [1.0, 0.0]
    runtime = StepRuntime.open(out, device="cpu")
    cohort = load_cohort(archive, cache_dir=tmp_path / "cache", progress=False)
    elapsed = elapsed_hours(cohort.values, cohort.offsets)
    lo, hi = cohort.offsets[0], cohort.offsets[1]
    with torch.no_grad():
        expected = model.risk(model(torch.from_numpy(cohort.values[lo:hi])[None], torch.from_numpy(elapsed[lo:hi])[None]))
    np.testing.assert_allclose(runtime.run_sequence(cohort.values[lo:hi], elapsed[lo:hi]), expected[0].numpy(), atol=1e-5)


def test_utility_targets_follow_the_challenge_scoring():
    """Hours where an alarm earns more than silence are the positives, weighted by the difference."""
    from training.sepsis.objectives import utility_targets

    septic = np.zeros(30, np.int8)
    septic[16:] = 1  # first label at hour 16 -> t_sepsis = 22
    labels = np.concatenate([septic, np.zeros(5, np.int8)])
    target, weight = utility_targets(labels, np.array([0, 30, 35]), "cpu")
    t, w = target.numpy(), weight.numpy()
    # an alarm wins after -12 h up to +3 h; at exactly -12 h both earn 0, so the hour carries no weight
    assert t[:11].sum() == 0 and t[11:26].all() and t[26:30].sum() == 0 and w[10] == 0
    assert w[26:30].sum() == 0  # hours after t_sepsis + 3 are not scored
    assert w[16] > w[30] > 0  # a missed early hour costs more than one false alarm
    assert t[30:35].sum() == 0 and w[-1] == 0  # non-septic stay; padding carries no weight


def test_training_on_the_utility_objective_runs(trained, tmp_path):
    _, archive = trained
    assert cli(["sepsis", "train", "--data", str(archive), "--hidden", "8", "--backbone-units", "8",
                "--epochs", "1", "--batch-size", "32", "--objective", "utility", "--out", str(tmp_path / "r"),
                "--checkpoints", str(tmp_path / "c"), "--cache-dir", str(tmp_path / "cache"),
                "--run", "u", "--no-progress", "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "r/u/metrics.json").read_text())
    assert metrics["config"]["objective"] == "utility" and "utility" in metrics["test"]
