"""Several trained sepsis models exported as one streaming step.

The members' states lie side by side in the one state vector, each member steps its own part, and
the risk is the calibrated mean of the members' logits. To the runtime and the service it is one
model with a longer state: the ONNX contract does not change.
"""
from __future__ import annotations

import torch
from torch import nn

from training.sepsis.model import SepsisModel


class SepsisEnsemble(nn.Module):
    def __init__(self, members: list[SepsisModel]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        # one Platt calibration for the mean logit (members' own calibrations are not used)
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))

    @property
    def config(self):
        return self.members[0].config

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
        return torch.stack(logits).mean(0), torch.cat(states, dim=-1)

    def step(self, observation, elapsed, state):
        logit, next_state = self.step_logit(observation, elapsed, state)
        return self.risk(logit), next_state

    def forward(self, observations, elapsed, mask=None):
        return torch.stack([m(observations, elapsed, mask) for m in self.members]).mean(0)

    def to_checkpoint(self) -> dict:
        return {"members": [m.to_checkpoint() for m in self.members], "calibration": self.calibration.cpu()}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "SepsisEnsemble":
        model = cls([SepsisModel.from_checkpoint(c) for c in checkpoint["members"]])
        model.calibration.copy_(torch.as_tensor(checkpoint.get("calibration", [1.0, 0.0])))
        return model.eval()


def load_model(checkpoint: dict) -> SepsisModel | SepsisEnsemble:
    """A single model or an ensemble, whichever the checkpoint holds."""
    if "members" in checkpoint:
        return SepsisEnsemble.from_checkpoint(checkpoint)
    return SepsisModel.from_checkpoint(checkpoint)
