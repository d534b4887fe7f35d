"""Several trained sepsis models exported as one streaming step.

The members' states lie side by side in the one state vector, each member steps its own part, and
the risk is the calibrated mean of the members' logits (or, with `weights`, their weighted sum: a
blend whose weights were fitted on out-of-fold predictions, `training/sepsis/blend.py`). To the
runtime and the service it is one model with a longer state: the ONNX contract does not change.
"""
from __future__ import annotations

import torch
from torch import nn

from training.sepsis.model import SepsisModel


class SepsisEnsemble(nn.Module):
    def __init__(self, members: list[SepsisModel], weights=None):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        if weights is None:
            weights = [1.0 / len(members)] * len(members)
        if len(weights) != len(members):
            raise ValueError(f"weights: {len(weights)} for {len(members)} members")
        # the logit is sum(weight_i * logit_i): the mean unless a blend set them
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32).reshape(-1))
        # one Platt calibration for the combined logit (members' own calibrations are not used)
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))

    @property
    def config(self):
        return self.members[0].config

    @property
    def kinds(self) -> str:
        """What the members are, e.g. "cfc ensemble of 5" or "cfc ensemble of 5 + trees"."""
        cores = [m.config.core for m in self.members]
        parts = [f"{c} ensemble of {cores.count(c)}" if i == 0 else c
                 for i, c in enumerate(dict.fromkeys(cores))]
        return " + ".join(parts)

    @property
    def state_size(self) -> int:
        return sum(m.state_size for m in self.members)

    def risk(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.calibration[0] * logits + self.calibration[1])

    def step_logit(self, observation, elapsed, state):
        logits, states = [], []
        for member, part in zip(self.members, state.split([m.state_size for m in self.members], dim=-1)):
            logit, next_part = member.step_logit(observation, elapsed, part)
            logits.append(logit)
            states.append(next_part)
        return self._combine(logits), torch.cat(states, dim=-1)

    def _combine(self, logits: list[torch.Tensor]) -> torch.Tensor:
        w = self.weights.reshape(-1, *([1] * logits[0].dim()))
        return (torch.stack(logits) * w).sum(0)

    def step(self, observation, elapsed, state):
        logit, next_state = self.step_logit(observation, elapsed, state)
        return self.risk(logit), next_state

    def forward(self, observations, elapsed, mask=None):
        return self._combine([m(observations, elapsed, mask) for m in self.members])

    def to_checkpoint(self) -> dict:
        return {"members": [m.to_checkpoint() for m in self.members], "calibration": self.calibration.cpu(),
                "weights": self.weights.cpu()}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "SepsisEnsemble":
        # checkpoints from before weights existed are plain means
        model = cls([member_from_checkpoint(c) for c in checkpoint["members"]], checkpoint.get("weights"))
        model.calibration.copy_(torch.as_tensor(checkpoint.get("calibration", [1.0, 0.0])))
        return model.eval()


def member_from_checkpoint(checkpoint: dict) -> SepsisModel:
    """A network member, or the boosting member of a blend (`training/sepsis/trees.py`)."""
    if checkpoint.get("config", {}).get("core") == "trees":
        from training.sepsis.trees import TreeModel

        return TreeModel.from_checkpoint(checkpoint)
    return SepsisModel.from_checkpoint(checkpoint)


def load_model(checkpoint: dict) -> SepsisModel | SepsisEnsemble:
    """A single model or an ensemble, whichever the checkpoint holds."""
    if "members" in checkpoint:
        return SepsisEnsemble.from_checkpoint(checkpoint)
    return member_from_checkpoint(checkpoint)
