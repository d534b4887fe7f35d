"""One training loop for every task (sepsis, N-MNIST, QuickDraw, IAM).

Seeded by the caller, AdamW, an optional learning-rate schedule and EMA of the weights, early
stopping on a validation score, an optional wall-clock budget, tqdm progress, and a history list
of dicts (one per epoch). What differs between tasks comes in as two objects: the training
`Batches` (the batch order and any augmentation, with the random state that drives them) and
the `Objective` (the loss, and the validation evaluation whose 'score' early stopping follows).
With a checkpoint directory, `last.pt` after every epoch holds everything needed to continue
(`resume`) to the same result as an uninterrupted run. Under `torchrun` (WORLD_SIZE > 1) the model
is wrapped in DistributedDataParallel and the training set is sharded; every rank scores the whole
validation set so they all stop together.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from training.flags import add_flags, from_flags, flag

Batch = dict[str, Any]
SCHEDULES = ("constant", "warmup-cosine")


@dataclass
class LoopConfig:
    epochs: int = flag(30, "passes over the training set at most", min=1)
    batch_size: int = flag(64, "training batch size", min=1)
    lr: float = flag(1e-3, "learning rate of AdamW (the peak, with a schedule)")
    weight_decay: float = flag(1e-4, "AdamW weight decay")
    patience: int = flag(8, "epochs without a better validation score before stopping", min=0)
    grad_clip: float = flag(1.0, "clip the gradient norm to this (0: no clipping)")
    seed: int = flag(0, "seed of the split, the batch order and the weights")
    val_fraction: float = flag(0.1, "share of the training list held out for validation")
    max_minutes: float | None = flag(None, "training wall budget; the epoch in flight finishes")
    schedule: str = flag("constant", "learning rate over training: constant, or linear warm-up then cosine "
                         "decay to 5%% of the peak", choices=SCHEDULES)
    warmup_epochs: float = flag(1.0, "epochs of linear warm-up (warmup-cosine)")
    ema: float | None = flag(None, "validate and keep an exponential moving average of the weights with "
                             "this decay (0: the weights themselves)")
    device: str = flag("auto", "auto (CUDA when present), cpu, cuda, cuda:N")
    num_workers: int = flag(0, "DataLoader worker processes")
    progress: bool = flag(True, "progress bars")
    resume: bool = flag(False, "continue from the run's last checkpoint (last.pt) to the same result as "
                        "an uninterrupted run")


class Batches(Protocol):
    """The training set as batches, one pass per epoch. Its random state (batch order,
    augmentation) goes into the checkpoint, so a resumed run sees the batches it would have seen."""

    def __len__(self) -> int: ...  # batches per epoch
    def epoch(self, epoch: int) -> Iterable[Batch]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class Objective(Protocol):
    """loss(model, batch) -> scalar to minimise; evaluate(model, val, device) -> dict with 'score'
    (higher is better, drives early stopping and the kept weights); batch_weight(batch) -> how much
    the batch counts in the epoch's mean training loss."""

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor: ...
    def evaluate(self, model: nn.Module, val: Any, device: torch.device) -> dict[str, float]: ...
    def batch_weight(self, batch: Batch) -> float: ...


def samples_in(batch: Batch) -> float:
    return float(len(next(v for v in batch.values() if torch.is_tensor(v))))


@dataclass
class LossAndScore:
    """An Objective from two functions; the epoch's loss is the mean over samples."""

    loss: Callable[[nn.Module, Batch], torch.Tensor]
    evaluate: Callable[[nn.Module, Any, torch.device], dict[str, float]]
    batch_weight: Callable[[Batch], float] = samples_in


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


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak; progress in [0, 1]."""
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    t = min((progress - warmup) / max(1.0 - warmup, 1e-9), 1.0)
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t))


# ---------------------------------------------------------------- distributed (torchrun) helpers
def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


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


def _any_rank(flag_: bool, device: torch.device, distributed: bool) -> bool:
    if not distributed:
        return flag_
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag_ else 0.0], device=device)
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


class LoaderBatches:
    """A Dataset as shuffled batches through a DataLoader (sharded under torchrun), seeded."""

    def __init__(self, dataset: Dataset, collate: Callable[[list], Batch], batch_size: int, seed: int,
                 num_workers: int = 0):
        self.sampler = None
        if world_size() > 1:
            from torch.utils.data.distributed import DistributedSampler

            self.sampler = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=self.sampler is None, sampler=self.sampler,
                                 collate_fn=collate, generator=self.generator, num_workers=num_workers, drop_last=False)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterable[Batch]:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        return self.loader

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def loaders(train_set: Dataset, val_set: Dataset, collate: Callable[[list], Batch], cfg: LoopConfig):
    """(training Batches, validation DataLoader) of two datasets, as the classification tasks use them."""
    val = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate, num_workers=cfg.num_workers)
    return LoaderBatches(train_set, collate, cfg.batch_size, cfg.seed, cfg.num_workers), val


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


CLASSIFICATION = LossAndScore(loss=classification_loss, evaluate=classification_evaluate)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(cm, (labels, preds), 1)
    return cm


# ---------------------------------------------------------------- the loop
def _rng_states(device: torch.device) -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, device: torch.device) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def _save(payload: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a run killed while writing keeps its previous checkpoint


def _print_epoch(row: dict) -> None:
    score = "n/a" if row["val_score"] is None else f"{row['val_score']:.4f}"
    tqdm.write(f"epoch {row['epoch']}: train_loss={row['train_loss']:.4f} val_score={score} ({row['seconds']:.1f}s)")


def fit(
    model: nn.Module,
    train: Batches,
    val: Any,
    cfg: LoopConfig,
    objective: Objective = CLASSIFICATION,
    checkpoint_dir: str | Path | None = None,
    *,
    export_best: Callable[[nn.Module], dict] | None = None,
    on_epoch: Callable[[dict], None] = _print_epoch,
) -> FitResult:
    """Train until cfg.epochs, early stopping (cfg.patience) or cfg.max_minutes; leave the best
    validation weights in `model`. Seeding is the caller's (before it builds what the seed decides).

    `val` goes to objective.evaluate as it is. With `checkpoint_dir`, `last.pt` is written after
    every epoch and, with `export_best`, `best.pt` = export_best(weights) at every improvement;
    cfg.resume continues from `last.pt`. `on_epoch(row)` reports each epoch's history row."""
    device = pick_device(cfg.device)
    distributed = init_distributed(device)
    model.to(device)
    train_model: nn.Module = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # the EMA copy is what gets validated and kept: it smooths the epoch-to-epoch swings of SGD
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema))
           if cfg.ema else None)
    evaluated = ema.module if ema is not None else model
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and is_main_process():
        ckpt.mkdir(parents=True, exist_ok=True)
    total_steps = cfg.epochs * len(train)
    budget = cfg.max_minutes * 60.0 if cfg.max_minutes else None

    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = -math.inf, 0, None
    stale, step, done, stopped_by, spent = 0, 0, 0, "epochs", 0.0
    if cfg.resume:
        if ckpt is None or not (ckpt / "last.pt").exists():
            raise FileNotFoundError(f"nothing to resume: no {ckpt / 'last.pt' if ckpt else 'checkpoint directory'}")
        state = torch.load(ckpt / "last.pt", map_location=device, weights_only=False)
        try:
            model.load_state_dict(state["model"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
        except (RuntimeError, KeyError) as err:
            raise ValueError(f"{ckpt / 'last.pt'} was written by a different model or loop: {err}") from err
        opt.load_state_dict(state["optimizer"])
        train.load_state_dict(state["batches"])
        _set_rng_states(state["rng"], device)
        history, best_score, best_epoch, best_state = state["history"], state["best_score"], state["best_epoch"], state["best_state"]
        stale, step, done, spent = state["stale"], state["step"], state["epoch"], state["seconds"]
        stopped_by = state["stopped_by"] or "epochs"
        if state["stopped_by"] == "early_stopping":
            done = cfg.epochs  # the run had ended; there is nothing to continue
    started = time.perf_counter() - spent
    show = cfg.progress and is_main_process()
    for epoch in range(done + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_model.train()
        losses, weights = [], []
        bar = tqdm(train.epoch(epoch), total=len(train), desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not show)
        for batch in bar:
            batch = to_device(batch, device)
            loss = objective.loss(train_model, batch)
            if cfg.schedule == "warmup-cosine":
                # the schedule follows whichever budget binds first: epochs or wall-clock minutes
                progress = step / total_steps
                if budget:
                    progress = max(progress, (time.perf_counter() - started) / budget)
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * lr_factor(progress, warmup=cfg.warmup_epochs / cfg.epochs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            losses.append(loss.item())
            weights.append(objective.batch_weight(batch))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        train_seconds = time.perf_counter() - t0
        val_scores = objective.evaluate(evaluated, val, device)
        row = {"epoch": epoch, "train_loss": float(np.average(losses, weights=weights)) if losses else float("nan"),
               "seconds": train_seconds}
        row.update({f"val_{k}": None if v is None else float(v) for k, v in val_scores.items()})
        history.append(row)
        improved = val_scores["score"] is not None and val_scores["score"] > best_score  # an undefined score never wins
        if improved:
            best_score, best_epoch, stale = float(val_scores["score"]), epoch, 0
            best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
        else:
            stale += 1
        over_budget = budget is not None and time.perf_counter() - started > budget
        stop = "early_stopping" if _any_rank(not improved and stale >= cfg.patience, device, distributed) else (
            "time_budget" if _any_rank(over_budget, device, distributed) and epoch < cfg.epochs else None)
        if ckpt is not None and is_main_process():
            if improved and export_best is not None:
                torch.save(export_best(evaluated), ckpt / "best.pt")
            _save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                   "ema": ema.state_dict() if ema is not None else None, "batches": train.state_dict(),
                   "rng": _rng_states(device), "epoch": epoch, "step": step,
                   "seconds": time.perf_counter() - started, "history": history, "best_score": best_score,
                   "best_epoch": best_epoch, "best_state": best_state, "stale": stale, "stopped_by": stop,
                   "loop": asdict(cfg)}, ckpt / "last.pt")
        if is_main_process():  # one line per epoch even without a progress bar (logs)
            on_epoch(row)
        if stop is not None:
            stopped_by = stop
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
    -> metrics.json + PNGs + model.pt under run.out_dir (and last.pt, to resume). Returns the metrics."""
    from training import stress

    out = Path(run.out_dir)
    if not len(train_set) or not len(val_set) or not len(test_set):
        raise ValueError(f"{run.task}: empty split ({len(train_set)} train, {len(val_set)} validation, "
                         f"{len(test_set)} test); use more data or another split fraction")
    train, val = loaders(train_set, val_set, stack_collate, run.loop)
    result = fit(model, train, val, run.loop, CLASSIFICATION, checkpoint_dir=out)
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
    """A flag per LoopConfig field (--epochs, --batch-size, ..., --no-progress, --resume)."""
    add_flags(parser.add_argument_group("training loop"), LoopConfig, defaults)


def loop_from_args(args) -> LoopConfig:
    return from_flags(LoopConfig, args)
