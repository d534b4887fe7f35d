"""Re-evaluate a saved line recognizer on the test forms (CER, WER)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from training import stress
from training.iam.data import Charset, LineSet, collate_lines, is_test, load_iam
from training.iam.metrics import cer, wer
from training.iam.model import LineRecognizer
from training.iam.train import IAMConfig, transcribe
from training.loop import write_json


def evaluate(run_dir: Path, data: str | None = None, stress_seed: int | None = None) -> dict:
    """CER/WER on the test forms; with stress_seed, also CER under column dropout."""
    saved = torch.load(Path(run_dir) / "model.pt", map_location="cpu", weights_only=False)
    cfg = IAMConfig(**saved["config"])
    charset = Charset(saved["charset"])
    model = LineRecognizer(len(charset), cfg.core, cfg.hidden)
    model.load_state_dict(saved["model"])
    lines = [ln for ln in load_iam(data or cfg.data, max_width=cfg.max_width)
             if is_test(ln.line_id, cfg.test_fraction)][: cfg.limit]
    loader = DataLoader(LineSet(lines, charset), batch_size=32, collate_fn=collate_lines)
    refs, hyps, loss = transcribe(model, loader, torch.device("cpu"), charset)
    out = {"test_cer": cer(refs, hyps), "test_wer": wer(refs, hyps), "test_loss": loss,
           "n_test": len(refs)}
    if stress_seed is not None:
        columns = loader.dataset.column_mask()
        out["stress"] = []
        for variant in stress.VARIANTS:
            for rate in stress.DROP_RATES:
                r, h, _ = transcribe(model, loader, torch.device("cpu"), charset,
                                     stress.keep_masks(columns, rate, stress_seed), variant)
                out["stress"].append({"variant": variant, "rate": rate, "cer": cer(r, h)})
        out["stress_seed"] = stress_seed
    write_json(Path(run_dir) / ("stress.json" if stress_seed is not None else "eval.json"), out)
    return out
