"""Re-evaluate a saved line recognizer on the test forms (CER, WER)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from training.iam.data import Charset, LineSet, collate_lines, is_test, load_iam
from training.iam.metrics import cer, wer
from training.iam.model import LineRecognizer
from training.iam.train import IAMConfig, transcribe
from training.loop import write_json


def evaluate(run_dir: Path, data: str | None = None) -> dict:
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
    write_json(Path(run_dir) / "eval.json", out)
    return out
