"""Train one QuickDraw run (CfC or LSTM), then test once, stress-test and write the run's files."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.loop import (ArraySequences, ClassificationRun, LoopConfig, count_parameters,
                           run_classification, seed_everything, split_indices)
from training.quickdraw.data import STUDY_CATEGORIES, load_quickdraw, test_split, to_arrays
from training.quickdraw.model import QuickDrawNet

# dx and dy are deltas: when the stress test removes points they are summed into the next kept one
DELTA_FEATURES = (0, 1)


@dataclass
class QuickDrawConfig:
    """Defaults follow the study's Table V (AdamW, lr 1e-3, batch 32, up to 40 epochs)."""

    data: str = "../shared/data/quickdraw/quickdraw_small.tar.xz"
    core: str = "cfc"
    format: str = "simplified"  # "raw": real pen timing becomes the CfC's spans (LSTM: a feature)
    hidden: int = 256
    max_len: int = 200
    test_fraction: float = 0.2
    out: str = "results/quickdraw/run"
    limit: int | None = None  # first N drawings per split (smoke tests)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(
        epochs=40, batch_size=32, lr=1e-3, weight_decay=1e-4, patience=10, val_fraction=0.15))


def build_model(cfg: QuickDrawConfig) -> QuickDrawNet:
    return QuickDrawNet(core=cfg.core, hidden=cfg.hidden,
                        time_feature=cfg.core == "lstm" and cfg.format == "raw")


def load_splits(cfg: QuickDrawConfig):
    drawings = load_quickdraw(cfg.data, cfg.format)
    train = [d for d in drawings if not test_split(d.key_id, cfg.test_fraction)][: cfg.limit]
    test = [d for d in drawings if test_split(d.key_id, cfg.test_fraction)][: cfg.limit]
    full = ArraySequences(*_reorder(to_arrays(train, max_len=cfg.max_len)))
    keep, held = split_indices(len(full), cfg.loop.val_fraction, cfg.loop.seed, full.y.tolist())
    return (full.subset(keep), full.subset(held),
            ArraySequences(*_reorder(to_arrays(test, max_len=cfg.max_len))))


def _reorder(arrays):
    x, dt, mask, y = arrays
    return x, dt, y, mask


def describe(cfg: QuickDrawConfig, n_train: int, n_val: int, n_test: int) -> str:
    fmt = ("simplified ndjson (lamnguyen_simplified25), span 1 per point" if cfg.format == "simplified"
           else "raw ndjson with pen timing (exupery_raw), span = real time between points in units "
                "of 100 ms")
    return (f"Quick, Draw! real drawings from {Path(cfg.data).name}, {fmt}; the study's 10 "
            f"categories; {n_train} train / {n_val} validation / {n_test} test (test chosen by "
            f"key_id hash, {cfg.test_fraction:.0%}); points thinned to <= {cfg.max_len}")


def train(cfg: QuickDrawConfig) -> dict:
    seed_everything(cfg.loop.seed)  # before the model is built: --seed decides the initial weights too
    train_set, val_set, test_set = load_splits(cfg)
    model = build_model(cfg)
    model.set_normalisation(train_set.x, train_set.mask)
    config = {k: v for k, v in asdict(cfg).items() if k != "loop"}
    run = ClassificationRun(
        task="quickdraw", out_dir=Path(cfg.out), class_names=list(STUDY_CATEGORIES), config=config,
        data_description=describe(cfg, len(train_set), len(val_set), len(test_set)),
        loop=cfg.loop, core_parameters=count_parameters(model.core),
        accumulate_features=DELTA_FEATURES,
    )
    return run_classification(model, train_set, val_set, test_set, run)
