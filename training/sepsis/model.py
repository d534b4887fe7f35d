"""The sepsis model as one streaming step: (observation, elapsed hours, state) -> (risk, next state).

state = [featurizer memory (160) | recurrent core state (S_core)]; all zeros is a new patient.
`forward` runs the same function over padded batches for training; `step` is what is exported.

v3 adds two things between the featurizer and the head (both off for older checkpoints):
an hour-wise encoder (two layers) that turns the wide per-hour features into what the core reads,
and a head that reads the encoder's output beside the core's. The recurrence then only has to add
what one hour's inputs cannot say; with core "none" the same model is the per-hour MLP the ladder
compares against (no memory beyond the featurizer's).

`hold_silent` (v3): an observation that carries no vital sign or lab (only what the service derives
itself: ICULOS and the stored demographics) is no new evidence, so it does not move the risk: the
core keeps its state, the risk stays what it was, and the elapsed time is kept aside and handed to
the core with the next observation that measures something. The featurizer's memory still advances
(hours since each measurement), so that next step sees the whole gap. Before a patient's first
measured hour the risk comes from the inputs alone (the core's state still zero). state then ends
with three numbers: [held logit | 1 once a measured hour was seen | hours kept aside].

`start_at_first` (v4, needs `hold_silent`): a stay begins at its first measured hour. Before it
nothing advances (no memory of the demographics' rows, no clock) and that hour steps with 0
elapsed hours, as a stay's first row does. A stay stepped from ICU admission hour 1 through empty
hours (what the service does) and the same stay whose file starts at its first measured hour (what
the challenge's files and an evaluator do for one stay in five) then give the same risks: the
model cannot tell them apart, so served and evaluated agree by construction.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.cores import make_core
from models.contract import N_CLINICAL
from training.sepsis.features import Featurizer

HOLD_STATE = 3  # held logit, seen-a-measured-hour flag, hours kept aside


def informative(observation: torch.Tensor) -> torch.Tensor:
    """[..., 40] -> [...]: true where at least one vital sign or lab is measured."""
    return ~torch.isnan(observation[..., :N_CLINICAL]).all(dim=-1)


@dataclass
class ModelConfig:
    core: str = "cfc"          # "cfc" or "lstm"
    hidden_size: int = 128
    backbone_units: int = 128  # CfC only
    backbone_layers: int = 1   # CfC only
    dropout: float = 0.1       # before the risk head; off at inference
    counts: bool = True        # measurement counts among the features (v2 on)
    bins: int = 0              # piecewise-linear codes over this many quantile bins per input (v3: 16)
    encoder_units: int = 0     # hour-wise encoder width before the core (0: the core reads the features)
    skip: bool = False         # the head also reads the encoder's output (v3 on)
    hold_silent: bool = False  # an observation with no vital or lab holds the core and the risk (v3 on)
    start_at_first: bool = False  # nothing advances before the first measured hour (v4 on; needs hold_silent)


class SepsisModel(nn.Module):
    def __init__(self, config: ModelConfig, mean, std, edges=None):
        super().__init__()
        self.config = config
        if config.bins and edges is None:
            raise ValueError(f"bins={config.bins} needs quantile edges from the training split")
        if config.start_at_first and not config.hold_silent:
            raise ValueError("start_at_first needs hold_silent (its flag of a measured hour seen)")
        self.featurizer = Featurizer(mean, std, counts=config.counts, edges=edges if config.bins else None)
        width = self.featurizer.n_features
        self.encoder = None
        if config.encoder_units:
            u = config.encoder_units
            self.encoder = nn.Sequential(nn.Linear(width, u), nn.ReLU(), nn.Dropout(config.dropout),
                                         nn.Linear(u, u), nn.ReLU())
            width = u
        if config.core == "none" and not (self.encoder is not None and config.skip):
            raise ValueError("core 'none' (the per-hour MLP) needs encoder_units > 0 and skip")
        self.core = None
        head_in = width if config.skip else 0
        if config.core != "none":
            core_kwargs = {}
            if config.core == "cfc":
                core_kwargs = dict(backbone_units=config.backbone_units, backbone_layers=config.backbone_layers)
            self.core = make_core(config.core, width, config.hidden_size, **core_kwargs)
            head_in += config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(head_in, 1)
        # Platt calibration of the risk (fitted on validation after training; identity until then):
        # the loss weights positives, so the raw sigmoid overstates the probability of sepsis
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))
        self.length_chunk = 0  # stays per sub-batch of `forward` while training (0: the batch as it is)

    @property
    def core_state_size(self) -> int:
        return self.core.state_size if self.core is not None else 0

    @property
    def state_size(self) -> int:
        return self.featurizer.state_size + self.core_state_size + (HOLD_STATE if self.config.hold_silent else 0)

    def _encode(self, features):
        return self.encoder(features) if self.encoder is not None else features

    def _head(self, encoded, core_out):
        parts = ([encoded] if self.config.skip else []) + ([core_out] if core_out is not None else [])
        return self.head(self.dropout(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]))

    def step_logit(self, observation, elapsed, state):
        if self.config.hold_silent:
            return self._held_step_logit(observation, elapsed, state)
        if self.core is None:
            features, memory = self.featurizer.step(observation, elapsed, state)
            return self._head(self._encode(features), None), memory
        memory, core_state = state.split([self.featurizer.state_size, self.core.state_size], dim=-1)
        features, memory = self.featurizer.step(observation, elapsed, memory)
        encoded = self._encode(features)
        core_state = self.core.step(encoded, core_state, elapsed)
        logit = self._head(encoded, self.core.output(core_state))
        return logit, torch.cat([memory, core_state], dim=-1)

    def _held_step_logit(self, observation, elapsed, state):
        f, c = self.featurizer.state_size, self.core_state_size
        memory, core_state, hold = state.split([f, c, HOLD_STATE], dim=-1)
        held, seen, pending = hold.split(1, dim=-1)
        measured = informative(observation).unsqueeze(-1)
        if self.config.start_at_first:
            begun = seen > 0.5
            observation = torch.where(begun | measured, observation, torch.full_like(observation, float("nan")))
            elapsed = elapsed * begun.to(elapsed.dtype)
        features, memory = self.featurizer.step(observation, elapsed, memory)
        encoded = self._encode(features)
        core_out = None
        if self.core is not None:
            advanced = self.core.step(encoded, core_state, pending + elapsed)
            core_state = torch.where(measured, advanced, core_state)
            core_out = self.core.output(core_state)
        fresh = self._head(encoded, core_out)
        logit = torch.where(measured | (seen < 0.5), fresh, held)
        hold = torch.cat([torch.where(measured, fresh, held), torch.maximum(seen, measured.to(seen.dtype)),
                          torch.where(measured, torch.zeros_like(pending), pending + elapsed)], dim=-1)
        return logit, torch.cat([memory, core_state, hold], dim=-1)

    def _held_forward(self, observations, elapsed, mask):
        b, t = elapsed.shape
        measured = informative(observations)
        if mask is not None:
            measured = measured & mask
        if self.config.start_at_first:
            begun = torch.cumsum(measured.to(torch.int32), dim=1) > 0  # at or after the first measured hour
            observations = torch.where(begun.unsqueeze(-1), observations, torch.full_like(observations, float("nan")))
            before = torch.cat([torch.zeros_like(begun[:, :1]), begun[:, :-1]], dim=1)
            elapsed = elapsed * before.to(elapsed.dtype)
        encoded = self._encode(self.featurizer.sequence(observations, elapsed))
        steps = torch.arange(t, device=elapsed.device).expand(b, t)
        last = torch.where(measured, steps, torch.full_like(steps, -1)).cummax(dim=1).values
        before = torch.cat([torch.full_like(last[:, :1], -1), last[:, :-1]], dim=1)
        clock = torch.cumsum(elapsed, dim=1)
        # time since the previous measured hour (since admission before the first one)
        span = clock - torch.gather(clock, 1, before.clamp_min(0)) * (before >= 0)
        core_out = self.core(encoded, span, measured)[0] if self.core is not None else None
        fresh = self._head(encoded, core_out).squeeze(-1)
        held = torch.gather(fresh, 1, last.clamp_min(0))
        return torch.where(measured | (last < 0), fresh, held)

    def risk(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probability from the head's logits (monotone: ranking and AUROC unchanged)."""
        return torch.sigmoid(self.calibration[0] * logits + self.calibration[1])

    def step(self, observation, elapsed, state):
        """observation [B, 40], elapsed [B, 1], state [B, S] -> (risk [B, 1], next_state [B, S])."""
        logit, next_state = self.step_logit(observation, elapsed, state)
        return self.risk(logit), next_state

    def forward(self, observations, elapsed, mask=None):
        """observations [B, T, 40], elapsed [B, T], mask [B, T] -> logits [B, T] (new patients).

        With `length_chunk` set (training only: not part of the model or its checkpoint) and a mask
        given, the batch runs as sub-batches of stays of similar length (`by_length`): the same logits
        at every real step, 0 after a stay's last one."""
        if self.length_chunk and mask is not None and observations.shape[0] > self.length_chunk:
            return by_length(self._forward, observations, elapsed, mask, self.length_chunk)
        return self._forward(observations, elapsed, mask)

    def _forward(self, observations, elapsed, mask=None):
        if self.config.hold_silent:
            return self._held_forward(observations, elapsed, mask)
        encoded = self._encode(self.featurizer.sequence(observations, elapsed))
        outputs = self.core(encoded, elapsed, mask)[0] if self.core is not None else None
        return self._head(encoded, outputs).squeeze(-1)

    def to_checkpoint(self) -> dict:
        edges = self.featurizer.edges.cpu() if self.featurizer.bins else None
        return {"config": asdict(self.config), "mean": self.featurizer.mean.cpu(),
                "std": self.featurizer.std.cpu(), "edges": edges, "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "SepsisModel":
        # checkpoints from before measurement counts existed carry no "counts" key
        if "members" in checkpoint:
            raise ValueError("this checkpoint is an ensemble: load it with training.sepsis.ensemble.load_model")
        model = cls(ModelConfig(**{"counts": False, **checkpoint["config"]}), checkpoint["mean"], checkpoint["std"],
                    checkpoint.get("edges"))
        # checkpoints from before calibration carry none: they keep the identity
        state = {"calibration": model.calibration, **checkpoint["state_dict"]}
        model.load_state_dict(state)
        return model.eval()


def by_length(forward, observations, elapsed, mask, chunk: int) -> torch.Tensor:
    """forward(observations, elapsed, mask) -> logits [B, T], run on sub-batches of `chunk` stays of
    similar length, each cut after its last real step; logits after a stay's last real step are 0.

    Why: a batch of stays drawn at random is padded to its longest stay (up to 336 hours against a
    mean of 38), and a recurrent core steps every row through every hour, padding included. The model
    is causal, so cutting a stay after its last real step changes nothing before it: the loss and its
    gradient are the batch's own, at a fraction of the work (bench/sepsis_train_step.py)."""
    b, t = elapsed.shape
    steps = torch.arange(1, t + 1, device=mask.device)
    ends = (mask * steps).amax(dim=1)  # one past each stay's last real step (0: none)
    order = torch.argsort(ends, descending=True, stable=True)
    out = torch.zeros(b, t, dtype=observations.dtype, device=observations.device)
    for rows in torch.split(order, chunk):
        end = int(ends[rows[0]])  # the longest of these stays: they are sorted
        if end == 0:
            break
        logits = forward(observations[rows, :end], elapsed[rows, :end], mask[rows, :end])
        out = out.index_put((rows[:, None], steps[None, :end] - 1), logits)
    return torch.where(steps[None, :] <= ends[:, None], out, torch.zeros_like(out))


class StreamingStep(nn.Module):
    """The exported graph's signature: names and order match the ONNX contract in models/README.md."""

    def __init__(self, model: SepsisModel):
        super().__init__()
        self.model = model

    def forward(self, observation, elapsed_hours, state):
        return self.model.step(observation, elapsed_hours, state)
