"""A shared training loop for the sequence benchmarks (N-MNIST, QuickDraw, IAM).

One loop: seeded, AdamW, early stopping on a validation split, an optional wall-clock budget,
tqdm progress, best/last checkpoints and a history list of dicts (one per epoch). What differs
between tasks (the loss, the validation score) comes in as an `Objective`; classification is the
default. Under `torchrun` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel and the
training set is sharded; every rank scores the whole validation set so they all stop together.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

Batch = dict[str, Any]


@dataclass
class LoopConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8  # epochs without a better validation score before stopping
    grad_clip: float = 1.0
    seed: int = 0
    val_fraction: float = 0.1
    max_seconds: float | None = None  # training wall budget; the epoch in flight finishes
    device: str = "auto"
    num_workers: int = 0
    progress: bool = True


@dataclass
class Objective:
    """loss(model, batch) -> scalar; evaluate(model, loader, device) -> dict with 'score'
    (higher is better, drives early stopping) and 'loss'."""

    loss: Callable[[nn.Module, Batch], torch.Tensor]
    evaluate: Callable[[nn.Module, DataLoader, torch.device], dict[str, float]]


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    seconds_per_epoch: float
    stopped_by: str  # "epochs", "early_stopping" or "time_budget"
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


# ---------------------------------------------------------------- distributed (torchrun) helpers
def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: torch.device) -> bool:
    """Join the process group only when launched by torchrun with more than one process."""
    if world_size() <= 1:
        return False
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)  # one GPU per rank; CUDA graphs and NCCL use the current device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def _any_rank(flag: bool, device: torch.device, distributed: bool) -> bool:
    if not distributed:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# ---------------------------------------------------------------- data helpers
def split_indices(n: int, fraction: float, seed: int, labels: Iterable[int] | None = None):
    """Hold `fraction` of n items out (stratified by label when given), seeded. Returns (keep, held)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
        k = max(1, int(round(n * fraction))) if fraction > 0 else 0
        return np.sort(order[k:]), np.sort(order[:k])
    labels = np.asarray(list(labels))
    held = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * fraction))
        if fraction > 0 and k == 0 and len(idx) > 1:
            k = 1
        held.extend(idx[:k].tolist())
    held = np.sort(np.array(held, dtype=int))
    keep = np.setdiff1d(np.arange(n), held)
    return keep, held


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# ---------------------------------------------------------------- classification objective
def classification_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    logits = model(batch["x"], batch.get("dt"), batch.get("mask"))
    return F.cross_entropy(logits, batch["y"])


@torch.no_grad()
def predict_classes(model: nn.Module, loader: DataLoader, device: torch.device, transform=None):
    """(labels, predictions, mean loss). `transform(batch) -> batch` lets the stress test alter
    inputs before the model sees them."""
    model.eval()
    ys, ps, total, n = [], [], 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        if transform is not None:
            batch = transform(batch)
        logits = model(batch["x"], batch.get("dt"), batch.get("mask"))
        total += F.cross_entropy(logits, batch["y"], reduction="sum").item()
        n += len(batch["y"])
        ys.append(batch["y"].cpu())
        ps.append(logits.argmax(-1).cpu())
    return torch.cat(ys).numpy(), torch.cat(ps).numpy(), total / max(n, 1)


def classification_evaluate(model, loader, device) -> dict[str, float]:
    y, p, loss = predict_classes(model, loader, device)
    acc = float((y == p).mean()) if len(y) else float("nan")
    return {"score": acc, "accuracy": acc, "loss": loss}


CLASSIFICATION = Objective(loss=classification_loss, evaluate=classification_evaluate)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(cm, (labels, preds), 1)
    return cm


# ---------------------------------------------------------------- the loop
def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    collate: Callable[[list], Batch],
    cfg: LoopConfig,
    objective: Objective = CLASSIFICATION,
    checkpoint_dir: str | Path | None = None,
) -> FitResult:
    """Train until cfg.epochs, early stopping (cfg.patience) or cfg.max_seconds; leave the best
    validation weights in `model`."""
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    distributed = init_distributed(device)
    model.to(device)
    train_model: nn.Module = model
    sampler = None
    if distributed:
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data.distributed import DistributedSampler

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        sampler = DistributedSampler(train_set, shuffle=True, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
        collate_fn=collate, generator=gen, num_workers=cfg.num_workers, drop_last=False,
    )
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate,
                            num_workers=cfg.num_workers)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and is_main_process():
        ckpt.mkdir(parents=True, exist_ok=True)

    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = -math.inf, 0, None
    stale, stopped_by, started = 0, "epochs", time.perf_counter()
    show = cfg.progress and is_main_process()
    for epoch in range(1, cfg.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        train_model.train()
        total, count = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not show)
        for batch in bar:
            batch = to_device(batch, device)
            loss = objective.loss(train_model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            bs = len(next(v for v in batch.values() if torch.is_tensor(v)))
            total += loss.item() * bs
            count += bs
            bar.set_postfix(loss=f"{loss.item():.4f}")
        train_seconds = time.perf_counter() - t0
        val = objective.evaluate(model, val_loader, device)
        row = {"epoch": epoch, "train_loss": total / max(count, 1), "seconds": train_seconds}
        row.update({f"val_{k}": float(v) for k, v in val.items()})
        history.append(row)
        improved = val["score"] > best_score
        if improved:
            best_score, best_epoch, stale = float(val["score"]), epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if ckpt is not None and is_main_process():
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                        "history": history}, ckpt / "last.pt")
            if improved:
                torch.save({"model": best_state, "epoch": epoch}, ckpt / "best.pt")
        if is_main_process():  # one line per epoch even without a progress bar (logs)
            tqdm.write(f"epoch {epoch}: train_loss={row['train_loss']:.4f} "
                       f"val_score={val['score']:.4f} ({train_seconds:.1f}s)")
        over_budget = cfg.max_seconds is not None and time.perf_counter() - started > cfg.max_seconds
        if _any_rank(stale >= cfg.patience, device, distributed):
            stopped_by = "early_stopping"
            break
        if _any_rank(over_budget, device, distributed) and epoch < cfg.epochs:
            stopped_by = "time_budget"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    secs = float(np.mean([h["seconds"] for h in history])) if history else float("nan")
    return FitResult(history, best_epoch, best_score, secs, stopped_by)


# ---------------------------------------------------------------- reporting
def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
    tmp.replace(path)  # a reader never sees half a file


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def plot_history(history: list[dict], path: Path, score_name: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    if "val_loss" in history[0]:
        a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(epochs, [h["val_score"] for h in history], color="C2")
    b.set_xlabel("epoch"), b.set_ylabel(f"validation {score_name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- shared data plumbing
class ArraySequences(Dataset):
    """Padded arrays as a dataset of dict items: x [N, T, ...], dt [N, T], mask [N, T], y [N].
    Each item also carries its row 'index' so stress masks can be looked up per sample."""

    def __init__(self, x, dt, y, mask=None):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.dt = torch.as_tensor(dt, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.long)
        self.mask = (torch.ones(self.dt.shape, dtype=torch.bool) if mask is None
                     else torch.as_tensor(mask, dtype=torch.bool))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Batch:
        return {"x": self.x[i], "dt": self.dt[i], "mask": self.mask[i], "y": self.y[i],
                "index": torch.tensor(i)}

    def subset(self, idx) -> "ArraySequences":
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return ArraySequences(self.x[idx], self.dt[idx], self.y[idx], self.mask[idx])


def stack_collate(items: list[Batch]) -> Batch:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def score_test_set(model: nn.Module, test_set, batch_size: int, device: torch.device,
                   stress_seed: int | None = None, rates=(), accumulate=()):
    """(labels, predictions, mean loss, stress points or None): the test split scored once, and
    with `stress_seed` also under inference-time temporal dropout (training/stress.py)."""
    from training import stress

    loader = DataLoader(test_set, batch_size=batch_size, shuffle=False, collate_fn=stack_collate)
    y, p, loss = predict_classes(model, loader, device)
    if stress_seed is None:
        return y, p, loss, None

    def accuracy_under(transform):
        yy, pp, _ = predict_classes(model, loader, device, transform)
        return float((yy == pp).mean())

    return y, p, loss, stress.run_stress(accuracy_under, test_set.mask, stress_seed, rates, accumulate=accumulate)


def load_saved_run(run_dir, config_cls, build_model):
    """(config, model in eval mode) from the `model.pt` that run_classification writes."""
    saved = torch.load(Path(run_dir) / "model.pt", map_location="cpu", weights_only=False)
    cfg = config_cls(**saved["config"])
    model = build_model(cfg)
    model.load_state_dict(saved["model"])
    return cfg, model.eval()


def evaluate_saved_run(run_dir, task: str, core: str, model: nn.Module, test_set, batch_size: int,
                       with_stress: bool, rates, seed: int, accumulate=()) -> dict:
    """A saved run scored again on its test split (on the CPU), optionally with the stress test;
    written to the run directory as eval.json or stress.json."""
    from training import stress

    y, p, loss, points = score_test_set(model, test_set, batch_size, torch.device("cpu"),
                                        seed if with_stress else None, rates, accumulate)
    out = {"test_accuracy": float((y == p).mean()), "test_loss": loss, "n_test": int(len(y))}
    if with_stress:
        out["stress"] = [vars(pt) for pt in points]
        out["stress_seed"] = seed
        stress.plot_stress({core: out["stress"]}, Path(run_dir) / "stress_rerun.png",
                           f"{task} {core}: temporal dropout at inference")
    write_json(Path(run_dir) / ("stress.json" if with_stress else "eval.json"), out)
    return out


def masked_mean(outputs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of [B, T, H] counting only real steps (padding never enters the average)."""
    if mask is None:
        return outputs.mean(dim=1)
    m = mask.to(outputs.dtype).unsqueeze(-1)
    return (outputs * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


# ---------------------------------------------------------------- one classification run
@dataclass
class ClassificationRun:
    """Everything a benchmark's classification run needs besides the model and data."""

    task: str
    out_dir: Path
    class_names: list[str]
    config: dict[str, Any]
    data_description: str
    loop: LoopConfig
    core_parameters: int
    stress_seed: int = 1234
    stress_rates: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7)
    accumulate_features: tuple[int, ...] = ()


def run_classification(model: nn.Module, train_set: ArraySequences, val_set: ArraySequences,
                       test_set: ArraySequences, run: ClassificationRun) -> dict[str, Any]:
    """fit -> best weights -> test once (accuracy, confusion) -> stress test on the same test set
    -> metrics.json + PNGs + model.pt under run.out_dir. Returns the metrics."""
    from training import stress

    out = Path(run.out_dir)
    if not len(train_set) or not len(val_set) or not len(test_set):
        raise ValueError(f"{run.task}: empty split ({len(train_set)} train, {len(val_set)} validation, "
                         f"{len(test_set)} test); use more data or another split fraction")
    result = fit(model, train_set, val_set, stack_collate, run.loop)
    metrics: dict[str, Any] = {}
    if is_main_process():
        device = pick_device(run.loop.device)
        model.to(device)
        y, p, test_loss, points = score_test_set(model, test_set, run.loop.batch_size, device, run.stress_seed,
                                                 run.stress_rates, run.accumulate_features)
        cm = confusion_matrix(y, p, len(run.class_names))
        metrics = {
            "task": run.task,
            "test_accuracy": float((y == p).mean()),
            "test_loss": test_loss,
            "n_test": int(len(y)),
            "n_train": len(train_set),
            "n_val": len(val_set),
            "parameters_core": run.core_parameters,
            "parameters_total": count_parameters(model),
            "seconds_per_epoch": result.seconds_per_epoch,
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_score,
            "stopped_by": result.stopped_by,
            "seed": run.loop.seed,
            "config": run.config,
            "loop": asdict(run.loop),
            "data": run.data_description,
            "class_names": run.class_names,
            "confusion_matrix": cm.tolist(),
            "stress": [asdict(pt) for pt in points],
            "stress_seed": run.stress_seed,
            "history": result.history,
            "device": str(device),
        }
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "config": run.config,
                    "class_names": run.class_names}, out / "model.pt")
        write_json(out / "metrics.json", metrics)
        plot_history(result.history, out / "learning_curves.png")
        label = f"{run.config.get('core', '')}"
        plot_confusion(cm, run.class_names, out / "confusion_matrix.png",
                       f"{run.task} {label}: test accuracy {metrics['test_accuracy']:.3f}")
        stress.plot_stress({label: metrics["stress"]}, out / "stress.png",
                           f"{run.task} {label}: temporal dropout at inference")
    return metrics


# ---------------------------------------------------------------- CLI helpers
def add_loop_args(parser, defaults: LoopConfig) -> None:
    g = parser.add_argument_group("training loop")
    g.add_argument("--epochs", type=int, default=defaults.epochs)
    g.add_argument("--batch-size", type=int, default=defaults.batch_size)
    g.add_argument("--lr", type=float, default=defaults.lr)
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    g.add_argument("--patience", type=int, default=defaults.patience)
    g.add_argument("--seed", type=int, default=defaults.seed)
    g.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    g.add_argument("--max-minutes", type=float, default=None,
                   help="training wall budget; the epoch in flight finishes")
    g.add_argument("--device", default=defaults.device)
    g.add_argument("--no-progress", action="store_true")


def loop_from_args(args) -> LoopConfig:
    if args.epochs < 1 or args.batch_size < 1:
        raise SystemExit("error: --epochs and --batch-size must be at least 1")
    return LoopConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        patience=args.patience, seed=args.seed, val_fraction=args.val_fraction,
        max_seconds=None if args.max_minutes is None else args.max_minutes * 60.0,
        device=args.device, progress=not args.no_progress,
    )
