"""`make train-demo` (`python -m training sepsis demo`): says what it is doing in each phase, labels
its figures as the test split's, and writes under runs/demo/, never into the tracked results/."""
import json

import pytest

from training.__main__ import main as cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_train_demo_says_its_phases_labels_test_metrics_and_writes_under_runs(tmp_path, monkeypatch, capsys):
    from tests.training.conftest import make_archive, synthetic_stays

    archive = make_archive(tmp_path, synthetic_stays(n=60, seed=3))
    monkeypatch.chdir(tmp_path)
    assert cli(["sepsis", "demo", "--data", str(archive), "--minutes", "0.05"]) == 0
    out, err = capsys.readouterr()

    phases = ["\nloading the stays", "\npreparing:", "\ntraining ", "evaluating the best epoch"]
    positions = [err.find(p) for p in phases]
    assert -1 not in positions and positions == sorted(positions), err
    assert "test split (" in out and "AUROC" in out
    metrics = json.loads((tmp_path / "runs/demo/results/demo-cfc64/metrics.json").read_text())
    assert f"test split ({metrics['n_test_stays']:,} stays" in out
    assert (tmp_path / "runs/demo/checkpoints/demo-cfc64/best.pt").exists()
    assert not (tmp_path / "results").exists()
