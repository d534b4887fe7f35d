"""What a sepsis model is trained for, as objects of the shared loop's Objective protocol
(training/loop.py): the loss of a batch of stays, and the validation score early stopping follows.
`objective_for` is the one place that reads the configuration's objective name."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from training.sepsis import metrics as M
from training.sepsis.batching import CohortTensors, per_stay
from training.sepsis.config import TrainConfig
from training.sepsis.physiology import PhysiologyPenalty
from training.sepsis.predict import predict_stays, stay_labels


@dataclass
class StaySet:
    """Stays of a cohort held as tensors, with their hourly labels computed once (validation)."""

    tensors: CohortTensors
    stays: np.ndarray

    @cached_property
    def labels(self) -> list[np.ndarray]:
        return stay_labels(self.tensors, self.stays)

    @cached_property
    def utility_table(self):
        return M.utility_table(self.labels)


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


class HourlyObjective:
    """SepsisLabel per hour, positive hours weighted by pos_weight. Validation: hourly AUROC and the
    normalised utility at its best threshold; `select` names the one early stopping follows."""

    hourly = True  # scored hour by hour (threshold on validation utility, silence drift)

    def __init__(self, pos_weight: float, select: str, physiology: PhysiologyPenalty | None = None):
        if select not in ("auroc", "utility"):
            raise ValueError(f"unknown select {select!r}: expected auroc or utility")
        self.pos_weight, self.select, self.physiology = pos_weight, select, physiology

    def batch_weight(self, batch) -> float:
        return 1.0  # the epoch's training loss is the mean over batches

    def loss(self, model, batch) -> torch.Tensor:
        logits, mask = model(batch["obs"], batch["dt"], batch["mask"]), batch["mask"]
        pos_weight = torch.tensor(self.pos_weight, device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits[mask], batch["y"][mask], pos_weight=pos_weight)
        if self.physiology is not None:
            loss = loss + self.physiology(model, batch["obs"], batch["dt"], batch["lengths"])
        return loss

    def evaluate(self, model, val: StaySet, device) -> dict[str, float]:
        probs = predict_stays(model, val.tensors, val.stays)
        _, utilities = M.utility_curve(val.utility_table, np.concatenate(probs))
        utility, auroc = float(np.max(utilities)), M.hourly_auroc(val.labels, probs)
        return {"utility": utility, "auroc": auroc, "score": auroc if self.select == "auroc" else utility}


class UtilityObjective(HourlyObjective):
    """The challenge's utility per hour as the target and weight of each hour (utility_targets);
    validated as the hourly objective."""

    def __init__(self, select: str, tensors: CohortTensors, targets: torch.Tensor, weights: torch.Tensor):
        super().__init__(pos_weight=1.0, select=select)
        self.tensors, self.targets, self.weights = tensors, targets, weights

    def loss(self, model, batch) -> torch.Tensor:
        y, w = self.tensors.gather(self.targets, batch["stays"]), self.tensors.gather(self.weights, batch["stays"])
        logits, mask = model(batch["obs"], batch["dt"], batch["mask"]), batch["mask"]
        return F.binary_cross_entropy_with_logits(logits[mask], y[mask], weight=w[mask])


class PatientObjective:
    """The study's patient-level task: the last real step's output against "this stay becomes
    septic", positives weighted by pos_weight; early stopping on stay-level AUPRC."""

    hourly = False

    def __init__(self, pos_weight: float):
        self.pos_weight = pos_weight

    def batch_weight(self, batch) -> float:
        return 1.0

    def loss(self, model, batch) -> torch.Tensor:
        logits, mask = model(batch["obs"], batch["dt"], batch["mask"]), batch["mask"]
        pos_weight = torch.tensor(self.pos_weight, device=logits.device)
        last = torch.as_tensor(batch["lengths"] - 1, device=logits.device)
        rows = torch.arange(len(last), device=logits.device)
        target = (batch["y"] * mask).amax(dim=1)
        return F.binary_cross_entropy_with_logits(logits[rows, last], target, pos_weight=pos_weight)

    def evaluate(self, model, val: StaySet, device) -> dict[str, float]:
        probs = predict_stays(model, val.tensors, val.stays)
        stay_y = np.array([lab.max() for lab in val.labels])
        res = M.stay_level_metrics(stay_y, np.array([p[-1] for p in probs]))
        return {"auroc": res["auroc"], "auprc": res["auprc"], "score": res["auprc"]}


def objective_for(cfg: TrainConfig, tensors: CohortTensors, labels: np.ndarray, offsets: np.ndarray):
    """The objective object cfg.objective names (labels and offsets: the cohort's, for utility targets)."""
    physiology = None
    if cfg.physiology_weight:
        if cfg.objective != "hourly":
            raise ValueError(f"the physiology penalty goes with the hourly objective, not {cfg.objective!r}")
        physiology = PhysiologyPenalty(cfg.physiology_weight, cfg.physiology_stays, seed=cfg.seed,
                                       carry_hours=cfg.physiology_carry_hours)
    if cfg.objective == "hourly":
        return HourlyObjective(cfg.pos_weight, cfg.select, physiology)
    if cfg.objective == "utility":
        targets, weights = utility_targets(labels, offsets, tensors.values.device)
        return UtilityObjective(cfg.select, tensors, targets, weights)
    if cfg.objective == "patient":
        return PatientObjective(cfg.pos_weight)
    raise ValueError(f"unknown objective {cfg.objective!r}: expected hourly, utility or patient")
