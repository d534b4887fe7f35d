"""Train a sepsis model on the per-hour task (or the study's patient-level task) through the shared
loop (training/loop.py:fit): the stays as batches (`StayBatches`), the objective as an object
(training/sepsis/objectives.py). Writes checkpoints under `runs/` (best.pt, and last.pt to resume)
and metrics + plots under `results/sepsis/<run>/`."""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from training.loop import count_parameters, fit, pick_device  # noqa: F401  (pick_device is the CLI's too)
from training.sepsis.batching import CohortTensors, length_batches, stay_rows
from training.sepsis.config import CFC_IMPLS, TrainConfig
from training.sepsis.data import load_cohort
from training.sepsis.features import quantile_edges
from training.sepsis.model import SepsisModel
from training.sepsis.objectives import StaySet, objective_for
from training.sepsis.predict import predict_rows
from training.sepsis.silence import blank_runs
from training.sepsis.splits import cross_hospital_split, crossfit_split, patient_split


def make_split(cohort, cfg: TrainConfig):
    if cfg.folds:
        if cfg.split != "patient":
            raise ValueError(f"cross-fitting folds the patient split's development stays, not {cfg.split!r}")
        return crossfit_split(cohort, cfg.fold, cfg.folds, seed=cfg.split_seed)
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


class StayBatches:
    """The training stays as padded batches, one pass per epoch: stays of similar length together
    ("length") or any stays together ("random"), with a run of withheld vitals and labs blanked into
    a share of them (silence_rate). The two random streams (batch order, silence runs) are its state."""

    def __init__(self, tensors: CohortTensors, stays: np.ndarray, cfg: TrainConfig, rng: np.random.Generator):
        if cfg.batching not in ("length", "random"):
            raise ValueError(f"unknown batching {cfg.batching!r}: expected length or random")
        self.tensors, self.stays, self.cfg, self.rng = tensors, stays, cfg, rng
        self.silence = torch.Generator().manual_seed(cfg.seed + 7919)

    def __len__(self) -> int:
        return math.ceil(len(self.stays) / self.cfg.batch_size)

    def order(self) -> list[np.ndarray]:
        lengths, size = self.tensors.lengths[self.stays], self.cfg.batch_size
        if self.cfg.batching == "length":
            return length_batches(lengths, size, self.rng)
        order = self.rng.permutation(len(lengths))
        return [order[i: i + size] for i in range(0, len(order), size)]

    def epoch(self, epoch: int):
        for batch in self.order():
            stays = self.stays[batch]
            obs, dt, y, mask = self.tensors.batch(stays)
            lengths = self.tensors.lengths[stays]
            if self.cfg.silence_rate:
                obs = blank_runs(obs, torch.from_numpy(lengths), self.cfg.silence_rate, self.cfg.silence_hours,
                                 self.silence)
            yield {"obs": obs, "dt": dt, "y": y, "mask": mask, "stays": stays, "lengths": lengths}

    def state_dict(self) -> dict:
        return {"order": self.rng.bit_generator.state, "silence": self.silence.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["order"]
        self.silence.set_state(state["silence"])


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


def record_row(row: dict) -> dict:
    """A loop history row in the sepsis run record's layout, which summaries and plots read: epochs
    counted from 0, the validation scores, the selection score as 'score', the training seconds."""
    scores = {k: v for k, v in row.items() if k.startswith("val_") and k != "val_score"}
    return {"epoch": row["epoch"] - 1, "train_loss": row["train_loss"], **scores, "score": row["val_score"],
            "seconds": row["seconds"]}


def train(cfg: TrainConfig, say=lambda line: None) -> dict:
    """`say` hears, before each phase, what the run is about to do (the demo prints it)."""
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    say(f"loading the stays from {cfg.data} (parsed on the first run, then from {cfg.cache_dir})")
    cohort = load_cohort(cfg.data, cache_dir=Path(cfg.cache_dir), progress=cfg.progress)
    say("preparing: patient split, normalisation and quantile bins from the training stays, tensors")
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
    model.length_chunk = cfg.length_chunk
    tensors = CohortTensors.from_cohort(cohort, device)
    objective = objective_for(cfg, tensors, cohort.labels, cohort.offsets)
    ckpt_dir = Path(cfg.checkpoints) / cfg.run_name

    def report(row: dict) -> None:
        print(json.dumps({"run": cfg.run_name, **record_row(row)}), flush=True)

    say(f"training {len(train_idx):,} stays, validating on {len(val_idx):,} after each epoch")
    fitted = fit(model, StayBatches(tensors, train_idx, cfg, rng), StaySet(tensors, val_idx), cfg.loop, objective,
                 ckpt_dir, export_best=lambda m: m.to_checkpoint(), on_epoch=report)
    history = [record_row(row) for row in fitted.history]
    # the kept (best validation) weights, as ensembles, calibration and export will read them
    model = SepsisModel.from_checkpoint(torch.load(ckpt_dir / "best.pt", map_location="cpu")).to(device)
    set_cfc_impl(model, cfg.cfc_impl)
    from training.sepsis.evaluate import evaluate_run  # after training: plots and test metrics

    say(f"evaluating the best epoch: threshold on validation, metrics on the {len(test_idx):,} test stays, plots")
    result = evaluate_run(model, cohort, tensors, val_idx, test_idx, cfg)
    if objective.hourly:
        from training.sepsis.silence import silence_drift

        sub = cohort.subset(test_idx)
        result["silence_drift_test"] = silence_drift(lambda v, e, o: predict_rows(model, v, e, o, device), sub.values,
                                                     sub.offsets, result["threshold"])
    result.update(run_record(cfg, cohort, split.name, train_idx, val_idx, test_idx, model, device))
    result.update({
        "best_epoch": fitted.best_epoch - 1, "epochs_run": len(history), "seconds_per_epoch": fitted.seconds_per_epoch,
        "history": history, "checkpoint": str(ckpt_dir / "best.pt"),
    })
    out_dir = Path(cfg.out) / cfg.run_name
    out_dir.mkdir(parents=True, exist_ok=True)
    from training.sepsis.plots import learning_curves_png

    learning_curves_png(history, out_dir / "learning_curves.png")
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    return result
