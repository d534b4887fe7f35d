"""Train one IAM-style line recognizer (CfC, LSTM or BiLSTM) with CTC; test once; write results."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from training.iam.data import IAMFormatError, Charset, LineSet, collate_lines, is_test, load_iam
from training import stress
from training.iam.metrics import cer, greedy_decode, wer
from training.iam.model import LineRecognizer
from training.loop import (LoopConfig, LossAndScore, count_parameters, fit, is_main_process, loaders,
                           pick_device, plot_history, seed_everything, split_indices, to_device, write_json)


@dataclass
class IAMConfig:
    """Defaults follow the study's Table V (AdamW, lr 1e-3, batch 32, up to 50 epochs)."""

    data: str = "runs/iam_generated"  # IAM directory (lines.txt) or Teklia parquet file(s)
    core: str = "cfc"
    hidden: int = 256
    max_width: int = 1024
    test_fraction: float = 0.1
    generated: bool = True  # label results as generated data, not IAM
    out: str = "results/iam/run"
    limit: int | None = None
    stress_seed: int = 1234
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(
        epochs=50, batch_size=32, lr=1e-3, weight_decay=1e-4, patience=10, val_fraction=0.1))


def ctc_loss(model, batch) -> torch.Tensor:
    log_probs, lengths = model(batch["image"], batch["widths"])
    return F.ctc_loss(log_probs, batch["targets"], lengths, batch["target_lengths"], blank=0,
                      zero_infinity=True)


@torch.no_grad()
def transcribe(model, loader, device, charset: Charset, keep_all=None, variant: str = "zero"):
    """(references, greedy hypotheses, mean CTC loss); with keep_all [N, T] the columns are put
    through the temporal-dropout variant first."""
    model.eval()
    refs, hyps, total, n = [], [], 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        transform = None
        if keep_all is not None:
            keep = keep_all[batch["index"].cpu()].to(device)

            def transform(f, dt, mask, keep=keep):
                k = torch.zeros_like(mask)
                k[:, : keep.shape[1]] = keep[:, : mask.shape[1]]
                return stress.apply_variant(variant, f, dt, mask, k)
        log_probs, lengths = model(batch["image"], batch["widths"], transform)
        total += F.ctc_loss(log_probs, batch["targets"], lengths, batch["target_lengths"], blank=0,
                            zero_infinity=True, reduction="sum").item()
        n += len(batch["texts"])
        refs += batch["texts"]
        hyps += [charset.decode(s) for s in greedy_decode(log_probs, lengths)]
    return refs, hyps, total / max(n, 1)


def objective(charset: Charset) -> LossAndScore:
    def evaluate(model, loader, device):
        refs, hyps, loss = transcribe(model, loader, device, charset)
        c = cer(refs, hyps)
        return {"score": -c, "cer": c, "wer": wer(refs, hyps), "loss": loss}

    return LossAndScore(loss=ctc_loss, evaluate=evaluate)


def train(cfg: IAMConfig) -> dict:
    lines = load_iam(cfg.data, max_width=cfg.max_width)
    train_lines = [ln for ln in lines if not is_test(ln.line_id, cfg.test_fraction)][: cfg.limit]
    test_lines = [ln for ln in lines if is_test(ln.line_id, cfg.test_fraction)][: cfg.limit]
    if not train_lines or not test_lines:
        raise IAMFormatError(f"{cfg.data}: {len(train_lines)} train and {len(test_lines)} test lines "
                             f"(test = {cfg.test_fraction:.0%} of forms by hash); need both")
    seed_everything(cfg.loop.seed)  # before the model is built: --seed decides the initial weights too
    charset = Charset("".join(ln.text for ln in train_lines))
    full = LineSet(train_lines, charset)
    keep, held = split_indices(len(full), cfg.loop.val_fraction, cfg.loop.seed)
    model = LineRecognizer(len(charset), cfg.core, cfg.hidden)
    train_batches, val = loaders(Subset(full, keep.tolist()), Subset(full, held.tolist()), collate_lines, cfg.loop)
    result = fit(model, train_batches, val, cfg.loop, objective(charset), checkpoint_dir=cfg.out)
    if not is_main_process():
        return {}
    device = pick_device(cfg.loop.device)
    model.to(device)
    loader = DataLoader(LineSet(test_lines, charset), batch_size=cfg.loop.batch_size,
                        collate_fn=collate_lines)
    refs, hyps, test_loss = transcribe(model, loader, device, charset)
    # stress test: the same seeded column masks for every core
    columns = loader.dataset.column_mask()
    points = []
    for variant in stress.VARIANTS:
        for rate in stress.DROP_RATES:
            r, h, _ = transcribe(model, loader, device, charset,
                                 stress.keep_masks(columns, rate, cfg.stress_seed), variant)
            points.append({"variant": variant, "rate": rate, "cer": cer(r, h), "wer": wer(r, h)})
    source = "GENERATED handwriting-like lines (not IAM)" if cfg.generated else "IAM lines"
    out = Path(cfg.out)
    metrics = {
        "task": "iam", "test_cer": cer(refs, hyps), "test_wer": wer(refs, hyps), "test_loss": test_loss,
        "n_train": len(keep), "n_val": len(held), "n_test": len(test_lines),
        "parameters_core": model.core_parameters(), "parameters_total": count_parameters(model),
        "seconds_per_epoch": result.seconds_per_epoch, "epochs_run": len(result.history),
        "best_epoch": result.best_epoch, "best_val_cer": -result.best_score,
        "stopped_by": result.stopped_by, "seed": cfg.loop.seed,
        "config": {k: v for k, v in asdict(cfg).items() if k != "loop"}, "loop": asdict(cfg.loop),
        "data": f"{source} from {cfg.data}; test = {cfg.test_fraction:.0%} of forms by hash; "
                f"height 32, greedy CTC decoding",
        "charset": "".join(charset.chars),
        "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:10]],
        "history": result.history, "device": str(device),
        "stress": points, "stress_seed": cfg.stress_seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": metrics["config"], "charset": charset.chars},
               out / "model.pt")
    write_json(out / "metrics.json", metrics)
    plot_history(result.history, out / "learning_curves.png", score_name="-CER")
    stress.plot_stress({cfg.core: points}, out / "stress.png",
                       f"iam {cfg.core} (generated): column dropout at inference", key="cer",
                       ylabel="test CER")
    return metrics
