"""Train a sepsis model on the per-hour task (or the study's patient-level task), nanoGPT-style:
one loop a reader can hold in their head. Writes a checkpoint under `runs/` and metrics + plots
under `results/sepsis/<run>/`."""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from training.loop import count_parameters, pick_device  # noqa: F401  (pick_device is the CLI's too)
from training.sepsis import metrics as M
from training.sepsis.batching import CohortTensors, length_batches, per_stay, stay_rows
from training.sepsis.config import CFC_IMPLS, TrainConfig
from training.sepsis.data import load_cohort
from training.sepsis.features import quantile_edges
from training.sepsis.model import SepsisModel
from training.sepsis.predict import predict_rows, predict_stays, stay_labels
from training.sepsis.silence import blank_runs
from training.sepsis.splits import cross_hospital_split, patient_split


def make_split(cohort, cfg: TrainConfig):
    if cfg.split == "patient":
        return patient_split(cohort, seed=cfg.split_seed)
    if cfg.split in ("cross-A", "cross-B"):
        return cross_hospital_split(cohort, train_on=cfg.split[-1], seed=cfg.split_seed)
    raise ValueError(f"unknown split {cfg.split!r}: expected patient, cross-A or cross-B")


def normalisation(values: np.ndarray, offsets: np.ndarray, stays: np.ndarray):
    """Per-variable mean and std over the training stays' rows only (never validation or test)."""
    x = values[stay_rows(offsets, stays)].astype(np.float64)
    with warnings.catch_warnings():  # a variable never measured in training: mean 0, std 1
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(x, axis=0), nan=0.0)
        std = np.nan_to_num(np.nanstd(x, axis=0), nan=1.0)
    std[std < 1e-3] = 1.0
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def training_edges(values: np.ndarray, offsets: np.ndarray, stays: np.ndarray, bins: int):
    """Quantile-bin edges of each variable over the training stays' rows (None when bins is 0)."""
    if not bins:
        return None
    return torch.from_numpy(quantile_edges(values[stay_rows(offsets, stays)], bins))


def utility_targets(labels: np.ndarray, offsets: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row target and weight for the utility objective, padding entry appended.

    The challenge's utility is a sum over hours of u_pos (alarm) or u_neg (silence), so the hour is
    a classification whose right answer is 1 where u_pos > u_neg (12 h before to 3 h after onset)
    and whose cost of a mistake is |u_pos - u_neg|: up to 1 for a missed early alarm, up to 2 for a
    missed late one, 0.05 for a false alarm, 0 for hours the challenge does not score."""
    table = M.utility_table(per_stay(labels, offsets))
    target = (table.u_pos > table.u_neg).astype(np.float32)
    weight = np.abs(table.u_pos - table.u_neg).astype(np.float32)
    weight /= weight[weight > 0].mean()  # keep the loss on the usual scale
    pad = np.zeros(1, np.float32)
    return (torch.from_numpy(np.concatenate([target, pad])).to(device),
            torch.from_numpy(np.concatenate([weight, pad])).to(device))


def loss_fn(logits, labels, mask, lengths, cfg: TrainConfig, weights=None):
    pos_weight = torch.tensor(cfg.pos_weight, device=logits.device)
    if cfg.objective == "hourly":
        return F.binary_cross_entropy_with_logits(logits[mask], labels[mask], pos_weight=pos_weight)
    if cfg.objective == "utility":
        return F.binary_cross_entropy_with_logits(logits[mask], labels[mask], weight=weights[mask])
    # patient-level: the last real step's output against "this stay becomes septic"
    last = torch.as_tensor(lengths - 1, device=logits.device)
    rows = torch.arange(len(last), device=logits.device)
    target = (labels * mask).amax(dim=1)
    return F.binary_cross_entropy_with_logits(logits[rows, last], target, pos_weight=pos_weight)


def validation_score(cfg, labels, probs, table) -> dict:
    """The number early stopping follows: normalised utility at the best threshold (hourly task),
    or stay-level AUPRC (patient task)."""
    if cfg.objective in ("hourly", "utility"):
        flat = np.concatenate(probs)
        _, utilities = M.utility_curve(table, flat)
        auroc = M.hourly_auroc(labels, probs)
        return {"val_utility": float(np.max(utilities)), "val_auroc": auroc,
                "score": auroc if cfg.select == "auroc" else float(np.max(utilities))}
    stay_y = np.array([lab.max() for lab in labels])
    stay_p = np.array([p[-1] for p in probs])
    res = M.stay_level_metrics(stay_y, stay_p)
    return {"val_auroc": res["auroc"], "val_auprc": res["auprc"], "score": res["auprc"]}


def training_batches(lengths: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> list[np.ndarray]:
    if cfg.batching == "length":
        return length_batches(lengths, cfg.batch_size, rng)
    if cfg.batching == "random":
        order = rng.permutation(len(lengths))
        return [order[i: i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    raise ValueError(f"unknown batching {cfg.batching!r}: expected length or random")


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak; progress in [0, 1]."""
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    t = min((progress - warmup) / max(1.0 - warmup, 1e-9), 1.0)
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t))


def set_cfc_impl(model: SepsisModel, impl: str) -> None:
    """auto: the fast core on CUDA, the ncps loop elsewhere; fast: the fast core (persistent Triton
    kernels where they suit the widths); fast-steps: the fast core with per-step Triton kernels in
    CUDA graphs; fast-compile: the fast core with torch.compile'd elementwise steps instead of its
    Triton GEMM kernels (both earlier routes, kept to compare); reference: the ncps step loop."""
    if impl not in CFC_IMPLS:
        raise ValueError(f"unknown cfc_impl {impl!r}: expected one of {', '.join(CFC_IMPLS)}")
    if hasattr(model, "members"):
        for member in model.members:
            set_cfc_impl(member, impl)
        return
    if hasattr(model.core, "fast"):
        model.core.fast = {"auto": None, "fast": True, "fast-steps": True, "fast-compile": True, "reference": False}[impl]
        if impl == "fast-steps":
            model.core.fast_options = replace(model.core.fast_options, persistent=False)
        if impl == "fast-compile":
            model.core.fast_options = replace(model.core.fast_options, triton_gemms=False, persistent=False)


def core_parameters(model) -> int:
    """Weights of the recurrent core(s): 0 for the per-hour MLP, summed over an ensemble's members."""
    members = getattr(model, "members", [model])
    return sum(count_parameters(m.core) for m in members if m.core is not None)


def run_record(cfg: TrainConfig, cohort, split_name: str, train_idx, val_idx, test_idx, model, device) -> dict:
    """What every metrics.json says about the run: configuration, data, split sizes, model size."""
    return {"run": cfg.run_name, "config": asdict(cfg), "split": split_name,
            "data_sha256": cohort.source_sha256, "device": str(device),
            "n_train_stays": int(len(train_idx)), "n_train_rows": int(cohort.lengths[train_idx].sum()),
            "n_val_stays": int(len(val_idx)), "n_test_stays": int(len(test_idx)),
            "parameters": {"core": core_parameters(model), "total": count_parameters(model)}}


def train(cfg: TrainConfig) -> dict:
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    cohort = load_cohort(cfg.data, cache_dir=Path(cfg.cache_dir), progress=cfg.progress)
    split = make_split(cohort, cfg)
    train_idx, val_idx, test_idx = split.train, split.val, split.test
    if cfg.max_train_stays:
        train_idx = rng.permutation(train_idx)[: cfg.max_train_stays]
    if cfg.max_eval_stays:
        val_idx, test_idx = val_idx[: cfg.max_eval_stays], test_idx[: cfg.max_eval_stays]

    mean, std = normalisation(cohort.values, cohort.offsets, train_idx)
    edges = training_edges(cohort.values, cohort.offsets, train_idx, cfg.model.bins)
    model = SepsisModel(cfg.model, mean, std, edges).to(device)
    set_cfc_impl(model, cfg.cfc_impl)
    tensors = CohortTensors.from_cohort(cohort, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # the EMA copy is what gets validated and saved: it smooths the epoch-to-epoch swings of SGD
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema))
           if cfg.ema else None)
    evaluated = ema.module if ema is not None else model
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    total_steps, step = cfg.epochs * steps_per_epoch, 0

    val_labels = stay_labels(tensors, val_idx)
    val_table = M.utility_table(val_labels) if cfg.objective in ("hourly", "utility") else None
    targets = weights = None
    if cfg.objective == "utility":
        targets, weights = utility_targets(cohort.labels, cohort.offsets, device)
    ckpt_dir = Path(cfg.checkpoints) / cfg.run_name
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    best, best_epoch, history, epoch_seconds = -math.inf, -1, [], []
    started = time.time()
    silence_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    for epoch in range(cfg.epochs):
        model.train()
        t0, losses = time.time(), []
        batches = training_batches(tensors.lengths[train_idx], cfg, rng)
        for batch in tqdm(batches, desc=f"{cfg.run_name} epoch {epoch}", disable=not cfg.progress, leave=False):
            stays = train_idx[batch]
            obs, dt, y, mask = tensors.batch(stays)
            if cfg.silence_rate:
                obs = blank_runs(obs, torch.from_numpy(tensors.lengths[stays]), cfg.silence_rate,
                                 cfg.silence_hours, silence_gen)
            w = None
            if targets is not None:
                y, w = tensors.gather(targets, stays), tensors.gather(weights, stays)
            loss = loss_fn(model(obs, dt, mask), y, mask, tensors.lengths[stays], cfg, w)
            # the schedule follows whichever budget binds first: epochs or wall-clock minutes
            progress = step / total_steps
            if cfg.max_minutes:
                progress = max(progress, (time.time() - started) / 60 / cfg.max_minutes)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(progress, warmup=1 / cfg.epochs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            losses.append(loss.item())
        epoch_seconds.append(time.time() - t0)
        val = validation_score(cfg, val_labels, predict_stays(evaluated, tensors, val_idx), val_table)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), **val, "seconds": epoch_seconds[-1]})
        print(json.dumps({"run": cfg.run_name, **history[-1]}), flush=True)
        if val["score"] > best:
            best, best_epoch = val["score"], epoch
            torch.save(evaluated.to_checkpoint(), ckpt_dir / "best.pt")
        elif epoch - best_epoch >= cfg.patience:
            break
        if cfg.max_minutes and (time.time() - started) / 60 > cfg.max_minutes:
            break

    model = SepsisModel.from_checkpoint(torch.load(ckpt_dir / "best.pt", map_location="cpu")).to(device)
    set_cfc_impl(model, cfg.cfc_impl)
    from training.sepsis.evaluate import evaluate_run  # after training: plots and test metrics

    result = evaluate_run(model, cohort, tensors, val_idx, test_idx, cfg)
    if cfg.objective in ("hourly", "utility"):
        from training.sepsis.silence import silence_drift

        sub = cohort.subset(test_idx)
        result["silence_drift_test"] = silence_drift(lambda v, e, o: predict_rows(model, v, e, o, device), sub.values, sub.offsets,
                                                     result["threshold"])
    result.update(run_record(cfg, cohort, split.name, train_idx, val_idx, test_idx, model, device))
    result.update({
        "best_epoch": best_epoch, "epochs_run": len(history), "seconds_per_epoch": float(np.mean(epoch_seconds)),
        "history": history, "checkpoint": str(ckpt_dir / "best.pt"),
    })
    out_dir = Path(cfg.out) / cfg.run_name
    out_dir.mkdir(parents=True, exist_ok=True)
    from training.sepsis.plots import learning_curves_png

    learning_curves_png(history, out_dir / "learning_curves.png")
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    return result
