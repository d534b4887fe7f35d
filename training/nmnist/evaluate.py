"""Re-evaluate a saved N-MNIST run on the test split, or re-run its stress test."""
from __future__ import annotations

from pathlib import Path

import torch

from training import stress
from training.loop import score_test_set, write_json
from training.nmnist.data import load_nmnist, to_arrays
from training.loop import ArraySequences
from training.nmnist.train import NMNISTConfig, build_model


def load_run(run_dir: Path):
    saved = torch.load(Path(run_dir) / "model.pt", map_location="cpu", weights_only=False)
    cfg = NMNISTConfig(**{k: v for k, v in saved["config"].items()})
    model = build_model(cfg)
    model.load_state_dict(saved["model"])
    return cfg, model.eval()


def test_set(cfg: NMNISTConfig, data: str | None) -> ArraySequences:
    samples = [s for s in load_nmnist(data or cfg.data) if s.split == "test"][: cfg.limit]
    return ArraySequences(*to_arrays(samples, cfg.variant, cfg.n_bins))


def evaluate(run_dir: Path, data: str | None = None, rates=stress.DROP_RATES, seed: int = 1234,
             with_stress: bool = False) -> dict:
    cfg, model = load_run(run_dir)
    ds = test_set(cfg, data)
    device = torch.device("cpu")
    y, p, loss, points = score_test_set(model, ds, 128, device, seed if with_stress else None, rates)
    out = {"test_accuracy": float((y == p).mean()), "test_loss": loss, "n_test": int(len(y))}
    if with_stress:
        out["stress"] = [vars(pt) for pt in points]
        out["stress_seed"] = seed
        stress.plot_stress({cfg.core: out["stress"]}, Path(run_dir) / "stress_rerun.png",
                           f"nmnist {cfg.core}: temporal dropout at inference")
    write_json(Path(run_dir) / ("stress.json" if with_stress else "eval.json"), out)
    return out
