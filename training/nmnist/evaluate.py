"""Re-evaluate a saved N-MNIST run on the test split, or re-run its stress test."""
from __future__ import annotations

from pathlib import Path

from training import stress
from training.loop import ArraySequences, evaluate_saved_run, load_saved_run
from training.nmnist.data import load_nmnist, to_arrays
from training.nmnist.train import NMNISTConfig, build_model


def test_set(cfg: NMNISTConfig, data: str | None) -> ArraySequences:
    samples = [s for s in load_nmnist(data or cfg.data) if s.split == "test"][: cfg.limit]
    return ArraySequences(*to_arrays(samples, cfg.variant, cfg.n_bins))


def evaluate(run_dir: Path, data: str | None = None, rates=stress.DROP_RATES, seed: int = 1234,
             with_stress: bool = False) -> dict:
    cfg, model = load_saved_run(run_dir, NMNISTConfig, build_model)
    return evaluate_saved_run(run_dir, "nmnist", cfg.core, model, test_set(cfg, data), 128, with_stress, rates, seed)
