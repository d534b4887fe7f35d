"""--resume: a run killed after epoch k and resumed ends as the uninterrupted run does (the same
history, the same final and kept weights), for the sepsis run and the classification runs; the
kill is an exception raised from fit's epoch report, after that epoch's last.pt is written."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import training.loop as loop_module
import training.sepsis.train as sepsis_train
from training.__main__ import main as cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Killed(Exception):
    pass


def kill_after(monkeypatch, module, epoch: int) -> None:
    """Make `module.fit` die right after reporting `epoch` (its checkpoint is on disk by then)."""
    real = loop_module.fit

    def fit(*args, on_epoch=loop_module._print_epoch, **kwargs):
        def report(row):
            on_epoch(row)
            if row["epoch"] == epoch:
                raise Killed(f"killed after epoch {epoch}")

        return real(*args, on_epoch=report, **kwargs)

    monkeypatch.setattr(module, "fit", fit)


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from tests.training.conftest import make_archive, synthetic_stays

    return make_archive(tmp_path_factory.mktemp("resume"), synthetic_stays(n=100, seed=5))


def sepsis_args(archive, root, *extra) -> list[str]:
    # the v3 recipe's every random stream: random batches, silence runs, dropout; EMA and warm-up + cosine
    return ["sepsis", "train", "--data", str(archive), "--hidden", "8", "--backbone-units", "8", "--bins", "4",
            "--encoder-units", "16", "--epochs", "3", "--patience", "10", "--batch-size", "32", "--silence-rate", "0.5",
            "--out", str(root / "results"), "--checkpoints", str(root / "runs"), "--cache-dir", str(root.parent / "cache"),
            "--run", "r", "--dropout-rates", "0", "--no-progress", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def straight(archive, tmp_path_factory):
    """The uninterrupted sepsis run."""
    root = tmp_path_factory.mktemp("straight")
    assert cli(sepsis_args(archive, root)) == 0
    return root


def test_a_killed_sepsis_run_resumes_to_the_uninterrupted_result(archive, straight, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    kill_after(monkeypatch, sepsis_train, epoch=1)
    with pytest.raises(Killed):
        cli(sepsis_args(archive, broken))
    assert not (broken / "results/r/metrics.json").exists()
    assert torch.load(broken / "runs/r/last.pt", weights_only=False)["epoch"] == 1
    monkeypatch.undo()
    assert cli(sepsis_args(archive, broken, "--resume")) == 0

    a = json.loads((straight / "results/r/metrics.json").read_text())
    b = json.loads((broken / "results/r/metrics.json").read_text())
    assert len(a["history"]) == 3
    assert without_seconds(a["history"]) == without_seconds(b["history"])
    assert (a["best_epoch"], a["test"], a["threshold"]) == (b["best_epoch"], b["test"], b["threshold"])
    last_a = torch.load(straight / "runs/r/last.pt", weights_only=False)
    last_b = torch.load(broken / "runs/r/last.pt", weights_only=False)
    assert_same_weights(last_a["model"], last_b["model"])  # the final weights
    assert_same_weights(last_a["ema"], last_b["ema"])
    best_a = torch.load(straight / "runs/r/best.pt", weights_only=False)
    best_b = torch.load(broken / "runs/r/best.pt", weights_only=False)
    assert_same_weights(best_a["state_dict"], best_b["state_dict"])  # the kept weights


def test_resume_needs_a_checkpoint(archive, tmp_path, capsys):
    assert cli(sepsis_args(archive, tmp_path, "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_resuming_a_finished_run_trains_nothing_more(archive, straight, tmp_path, monkeypatch):
    shutil.copytree(straight, tmp_path, dirs_exist_ok=True)
    monkeypatch.setattr(sepsis_train.StayBatches, "epoch", lambda self, epoch: pytest.fail("trained again"))
    assert cli(sepsis_args(archive, tmp_path, "--resume")) == 0
    again = json.loads((tmp_path / "results/r/metrics.json").read_text())
    assert again["history"] == json.loads((straight / "results/r/metrics.json").read_text())["history"]


def test_a_killed_classification_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    from tests.training.test_nmnist import _write_small
    from training.loop import LoopConfig
    from training.nmnist.train import NMNISTConfig, train

    data = _write_small(tmp_path / "data", n_train=30)

    def run(out, resume=False):
        loop = LoopConfig(epochs=4, batch_size=8, val_fraction=0.2, patience=10, progress=False, resume=resume)
        return train(NMNISTConfig(data=str(data), core="cfc", variant="events", hidden=8, out=str(out), loop=loop))

    a = run(tmp_path / "straight")
    kill_after(monkeypatch, loop_module, epoch=2)
    with pytest.raises(Killed):
        run(tmp_path / "broken")
    monkeypatch.undo()
    b = run(tmp_path / "broken", resume=True)
    assert len(a["history"]) == 4
    assert without_seconds(a["history"]) == without_seconds(b["history"])
    assert (a["test_accuracy"], a["test_loss"], a["best_epoch"]) == (b["test_accuracy"], b["test_loss"], b["best_epoch"])
    last_a = torch.load(tmp_path / "straight/last.pt", weights_only=False)
    last_b = torch.load(tmp_path / "broken/last.pt", weights_only=False)
    assert_same_weights(last_a["model"], last_b["model"])
    assert_same_weights(torch.load(tmp_path / "straight/model.pt")["model"], torch.load(tmp_path / "broken/model.pt")["model"])


def test_a_killed_ctc_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    import training.iam.train as iam_train
    from training.iam.generate import generate
    from training.loop import LoopConfig

    data = generate(tmp_path / "data", 24, seed=0, progress=False)

    def run(out, resume=False):
        loop = LoopConfig(epochs=2, batch_size=8, patience=10, progress=False, resume=resume)
        return iam_train.train(iam_train.IAMConfig(data=str(data), core="cfc", hidden=8, max_width=128,
                                                   test_fraction=0.6, out=str(out), loop=loop))

    a = run(tmp_path / "straight")
    kill_after(monkeypatch, iam_train, epoch=1)
    with pytest.raises(Killed):
        run(tmp_path / "broken")
    monkeypatch.undo()
    b = run(tmp_path / "broken", resume=True)
    assert without_seconds(a["history"]) == without_seconds(b["history"]) and len(a["history"]) == 2
    assert (a["test_cer"], a["test_loss"]) == (b["test_cer"], b["test_loss"])
    assert_same_weights(torch.load(tmp_path / "straight/model.pt")["model"], torch.load(tmp_path / "broken/model.pt")["model"])
