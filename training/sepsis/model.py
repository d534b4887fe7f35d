"""The sepsis model as one streaming step: (observation, elapsed hours, state) -> (risk, next state).

state = [featurizer memory (120) | recurrent core state (S_core)]; all zeros is a new patient.
`forward` runs the same function over padded batches for training; `step` is what is exported.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.cores import make_core
from training.sepsis.features import Featurizer


@dataclass
class ModelConfig:
    core: str = "cfc"          # "cfc" or "lstm"
    hidden_size: int = 128
    backbone_units: int = 128  # CfC only
    backbone_layers: int = 1   # CfC only
    dropout: float = 0.1       # before the risk head; off at inference
    counts: bool = True        # measurement counts among the features (v2 on)


class SepsisModel(nn.Module):
    def __init__(self, config: ModelConfig, mean, std):
        super().__init__()
        self.config = config
        self.featurizer = Featurizer(mean, std, counts=config.counts)
        core_kwargs = {}
        if config.core == "cfc":
            core_kwargs = dict(backbone_units=config.backbone_units, backbone_layers=config.backbone_layers)
        self.core = make_core(config.core, self.featurizer.n_features, config.hidden_size, **core_kwargs)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, 1)
        # Platt calibration of the risk (fitted on validation after training; identity until then):
        # the loss weights positives, so the raw sigmoid overstates the probability of sepsis
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))

    @property
    def state_size(self) -> int:
        return self.featurizer.state_size + self.core.state_size

    def step_logit(self, observation, elapsed, state):
        memory, core_state = state.split([self.featurizer.state_size, self.core.state_size], dim=-1)
        features, memory = self.featurizer.step(observation, elapsed, memory)
        core_state = self.core.step(features, core_state, elapsed)
        logit = self.head(self.dropout(self.core.output(core_state)))
        return logit, torch.cat([memory, core_state], dim=-1)

    def risk(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probability from the head's logits (monotone: ranking and AUROC unchanged)."""
        return torch.sigmoid(self.calibration[0] * logits + self.calibration[1])

    def step(self, observation, elapsed, state):
        """observation [B, 40], elapsed [B, 1], state [B, S] -> (risk [B, 1], next_state [B, S])."""
        logit, next_state = self.step_logit(observation, elapsed, state)
        return self.risk(logit), next_state

    def forward(self, observations, elapsed, mask=None):
        """observations [B, T, 40], elapsed [B, T], mask [B, T] -> logits [B, T] (new patients)."""
        features = self.featurizer.sequence(observations, elapsed)
        outputs, _ = self.core(features, elapsed, mask)
        return self.head(self.dropout(outputs)).squeeze(-1)

    def to_checkpoint(self) -> dict:
        return {"config": asdict(self.config), "mean": self.featurizer.mean.cpu(),
                "std": self.featurizer.std.cpu(), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "SepsisModel":
        # checkpoints from before measurement counts existed carry no "counts" key
        model = cls(ModelConfig(**{"counts": False, **checkpoint["config"]}), checkpoint["mean"], checkpoint["std"])
        # checkpoints from before calibration carry none: they keep the identity
        state = {"calibration": model.calibration, **checkpoint["state_dict"]}
        model.load_state_dict(state)
        return model.eval()


class StreamingStep(nn.Module):
    """The exported graph's signature: names and order match the ONNX contract in models/README.md."""

    def __init__(self, model: SepsisModel):
        super().__init__()
        self.model = model

    def forward(self, observation, elapsed_hours, state):
        return self.model.step(observation, elapsed_hours, state)
