"""Train one N-MNIST run (CfC or LSTM), then test once, stress-test and write the run's files."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.loop import (ArraySequences, ClassificationRun, LoopConfig, count_parameters,
                           run_classification, seed_everything, split_indices)
from training.nmnist.data import load_nmnist, to_arrays
from training.nmnist.model import NMNISTNet

CLASS_NAMES = [str(d) for d in range(10)]


@dataclass
class NMNISTConfig:
    """Defaults follow the study's Table V (AdamW, lr 1e-3, batch 64, up to 30 epochs)."""

    data: str = "../shared/data/nmnist/nmnist_small.tar.xz"
    core: str = "cfc"
    variant: str = "fixed"  # "fixed": equal-time bins, span 1; "events": equal-count bins, real spans
    hidden: int = 128
    n_bins: int = 10
    out: str = "results/nmnist/run"
    limit: int | None = None  # use only the first N samples of each split (smoke tests)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(
        epochs=30, batch_size=64, lr=1e-3, weight_decay=1e-4, patience=8, val_fraction=0.1))


def build_model(cfg: NMNISTConfig) -> NMNISTNet:
    return NMNISTNet(core=cfg.core, hidden=cfg.hidden,
                     time_feature=cfg.core == "lstm" and cfg.variant == "events")


def load_splits(cfg: NMNISTConfig):
    samples = load_nmnist(cfg.data)
    train = [s for s in samples if s.split == "train"][: cfg.limit]
    test = [s for s in samples if s.split == "test"][: cfg.limit]
    full = ArraySequences(*to_arrays(train, cfg.variant, cfg.n_bins))
    keep, held = split_indices(len(full), cfg.loop.val_fraction, cfg.loop.seed, full.y.tolist())
    return full.subset(keep), full.subset(held), ArraySequences(*to_arrays(test, cfg.variant, cfg.n_bins))


def describe(cfg: NMNISTConfig, n_train: int, n_val: int, n_test: int) -> str:
    spans = ("equal-time bins, span 1 per bin" if cfg.variant == "fixed" else
             "equal-event-count bins, span = real time between bin centres in units of 100 ms")
    return (f"N-MNIST real events from {Path(cfg.data).name} ({n_train} train / {n_val} validation "
            f"held out of the train list / {n_test} test); {cfg.n_bins} bins, {spans}; "
            f"per-polarity log1p counts on 34x34")


def train(cfg: NMNISTConfig) -> dict:
    seed_everything(cfg.loop.seed)  # before the model is built: --seed decides the initial weights too
    train_set, val_set, test_set = load_splits(cfg)
    model = build_model(cfg)
    config = {k: v for k, v in asdict(cfg).items() if k != "loop"}
    run = ClassificationRun(
        task="nmnist", out_dir=Path(cfg.out), class_names=CLASS_NAMES, config=config,
        data_description=describe(cfg, len(train_set), len(val_set), len(test_set)),
        loop=cfg.loop, core_parameters=count_parameters(model.core),
    )
    return run_classification(model, train_set, val_set, test_set, run)
