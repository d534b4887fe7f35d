"""Re-evaluate a saved QuickDraw run on the test split, or re-run its stress test."""
from __future__ import annotations

from pathlib import Path

from training import stress
from training.loop import ArraySequences, evaluate_saved_run, load_saved_run
from training.quickdraw.data import load_quickdraw, test_split, to_arrays
from training.quickdraw.train import DELTA_FEATURES, QuickDrawConfig, build_model


def evaluate(run_dir: Path, data: str | None = None, rates=stress.DROP_RATES, seed: int = 1234,
             with_stress: bool = False) -> dict:
    cfg, model = load_saved_run(run_dir, QuickDrawConfig, build_model)
    drawings = [d for d in load_quickdraw(data or cfg.data, cfg.format)
                if test_split(d.key_id, cfg.test_fraction)][: cfg.limit]
    x, dt, mask, y = to_arrays(drawings, max_len=cfg.max_len)
    return evaluate_saved_run(run_dir, "quickdraw", cfg.core, model, ArraySequences(x, dt, y, mask), 64,
                              with_stress, rates, seed, DELTA_FEATURES)
