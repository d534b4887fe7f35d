"""Re-evaluate a saved QuickDraw run on the test split, or re-run its stress test."""
from __future__ import annotations

from pathlib import Path

import torch

from training import stress
from training.loop import ArraySequences, score_test_set, write_json
from training.quickdraw.data import load_quickdraw, test_split, to_arrays
from training.quickdraw.train import DELTA_FEATURES, QuickDrawConfig, build_model


def load_run(run_dir: Path):
    saved = torch.load(Path(run_dir) / "model.pt", map_location="cpu", weights_only=False)
    cfg = QuickDrawConfig(**saved["config"])
    model = build_model(cfg)
    model.load_state_dict(saved["model"])
    return cfg, model.eval()


def evaluate(run_dir: Path, data: str | None = None, rates=stress.DROP_RATES, seed: int = 1234,
             with_stress: bool = False) -> dict:
    cfg, model = load_run(run_dir)
    drawings = [d for d in load_quickdraw(data or cfg.data, cfg.format)
                if test_split(d.key_id, cfg.test_fraction)][: cfg.limit]
    x, dt, mask, y = to_arrays(drawings, max_len=cfg.max_len)
    ds = ArraySequences(x, dt, y, mask)
    device = torch.device("cpu")
    y, p, loss, points = score_test_set(model, ds, 64, device, seed if with_stress else None, rates, DELTA_FEATURES)
    out = {"test_accuracy": float((y == p).mean()), "test_loss": loss, "n_test": int(len(y))}
    if with_stress:
        out["stress"] = [vars(pt) for pt in points]
        out["stress_seed"] = seed
        stress.plot_stress({cfg.core: out["stress"]}, Path(run_dir) / "stress_rerun.png",
                           f"quickdraw {cfg.core}: temporal dropout at inference")
    write_json(Path(run_dir) / ("stress.json" if with_stress else "eval.json"), out)
    return out
