"""A pin of sepsis training behaviour: per-epoch losses and validation scores, the epoch chosen,
the test metrics and a fingerprint of the kept weights, for fixed seeds on a fixture archive,
over both batching modes, the three objectives, both selection scores, EMA on and off, silence
runs, early stopping and the three cores.

pins/sepsis_training.json was written by `record` with the sepsis loop as it stood before it
moved onto training/loop.fit (commit 510cbf5, its own loop in training/sepsis/train.py); the
test holds the shared loop to those numbers on the CPU (epochs and counts exactly, floats to 1e-5
relative: they first moved at about 1e-7 on another machine's CPU, 2026-12-02). It is a regression pin, not a
statement that these numbers are right: regenerate it only for a change that is meant to alter
training (and say so in that commit).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

PIN = Path(__file__).parent / "pins" / "sepsis_training.json"

RUNS = {
    # name: (TrainConfig overrides, ModelConfig overrides); each names the settings whose defaults changed
    # since the pin was recorded (batching, select and silence_rate: the v3 recipe is now the default)
    "hourly-length-utility-ema": (dict(objective="hourly", batching="length", select="utility", silence_rate=0.0,
                                       epochs=3), {}),
    "hourly-random-auroc-v3-silence": (
        dict(objective="hourly", batching="random", select="auroc", silence_rate=0.5, epochs=3),
        dict(bins=4, encoder_units=16, skip=True, hold_silent=True)),
    "utility-length-auroc-noema": (dict(objective="utility", batching="length", select="auroc", silence_rate=0.0,
                                        ema=None, epochs=3), {}),
    "utility-random-utility-subset": (
        dict(objective="utility", batching="random", select="utility", silence_rate=0.25, max_train_stays=50,
             epochs=3), {}),
    "patient-length-lstm": (dict(objective="patient", batching="length", silence_rate=0.0, epochs=3),
                            dict(core="lstm")),
    "patient-random-mlp": (dict(objective="patient", batching="random", silence_rate=0.0, epochs=3),
                           dict(core="none", bins=4, encoder_units=16, skip=True, hold_silent=True)),
    "hourly-random-early-stop": (dict(objective="hourly", batching="random", select="auroc", silence_rate=0.0,
                                      patience=1, epochs=6, lr=5e-2), {}),
}


def record(name: str, archive: Path, root: Path) -> dict:
    """Train one pinned run through the public entry point and keep what must not move."""
    from training.sepsis.config import TrainConfig
    from training.sepsis.model import ModelConfig, SepsisModel
    from training.sepsis.train import train

    train_kw, model_kw = RUNS[name]
    model = ModelConfig(**{"hidden_size": 8, "backbone_units": 8, **model_kw})
    # dropout_rates only sizes the inference-time row-dropout table, which the pin leaves out
    cfg = TrainConfig(data=str(archive), model=model, batch_size=32, seed=3, dropout_rates=(0.0,),
                      out=str(root / "results"), checkpoints=str(root / "runs"), run=name,
                      cache_dir=str(root / "cache"), device="cpu", progress=False, **train_kw)
    result = train(cfg)
    best = SepsisModel.from_checkpoint(torch.load(root / "runs" / name / "best.pt", map_location="cpu"))
    weights = torch.cat([p.detach().double().flatten() for p in best.state_dict().values()])
    return {
        "history": [{k: v for k, v in row.items() if k != "seconds"} for row in result["history"]],
        "best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"],
        "threshold": result["threshold"],
        "test": {k: result["test"].get(k) for k in ("auroc", "auprc", "utility", "f1")},
        "weights": {"sum": float(weights.sum()), "sum_sq": float((weights ** 2).sum())},
    }


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from tests.training.conftest import make_archive, synthetic_stays

    return make_archive(tmp_path_factory.mktemp("pin"), synthetic_stays(n=100, seed=11))


@pytest.fixture
def one_thread():
    """The pin was recorded on one CPU thread; reductions split over threads may round differently."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _same(a, b, path="") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: {len(a)} != {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        assert math.isnan(b), f"{path}: nan != {b}"
    elif isinstance(a, float) and isinstance(b, float):
        # float32 training: another CPU's kernels (a different vector unit, a oneDNN dispatch) round
        # differently at about 1e-7 relative; a change to training moves these numbers by far more.
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9), f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", list(RUNS))
def test_sepsis_training_matches_the_pinned_run(name, archive, tmp_path, one_thread):
    pinned = json.loads(PIN.read_text())[name]
    _same(record(name, archive, tmp_path), pinned, name)


if __name__ == "__main__":  # writes the pin: run only with the code whose behaviour is to be pinned
    import tempfile

    from tests.training.conftest import make_archive, synthetic_stays

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_archive(Path(tmp), synthetic_stays(n=100, seed=11))
        pins = {name: record(name, data, Path(tmp) / name) for name in RUNS}
    PIN.parent.mkdir(exist_ok=True)
    PIN.write_text(json.dumps(pins, indent=1) + "\n")
    print(f"wrote {PIN}")
