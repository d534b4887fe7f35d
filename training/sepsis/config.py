"""One configuration object for a sepsis training run."""
from __future__ import annotations

from dataclasses import dataclass, field

from training.sepsis.model import ModelConfig

CFC_IMPLS = ("auto", "fast", "fast-steps", "fast-compile", "reference")  # how a CfC core runs; see train.set_cfc_impl


@dataclass
class TrainConfig:
    data: str
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: str = "hourly"        # "hourly" (SepsisLabel per hour), "utility" (the challenge's utility per
                                     # hour as target and weight) or "patient" (last state -> septic stay)
    split: str = "patient"           # "patient" (70/15/15 stratified), "cross-A" (train A, test B), "cross-B"
    split_seed: int = 0              # fixed across model seeds so every run sees the same test stays
    seed: int = 0
    epochs: int = 40
    batch_size: int = 256
    lr: float = 2e-3                 # peak, after one epoch of linear warm-up; cosine to 5% after
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    pos_weight: float = 8.0          # positives are ~1.8% of hours
    ema: float | None = 0.995        # evaluate and keep an exponential moving average of the weights
    patience: int = 10               # epochs without validation improvement before stopping
    batching: str = "length"         # "length": stays of similar length per batch (little padding);
                                     # "random": any stays together (more padding, batches alike in label mix)
    select: str = "utility"          # what early stopping follows on validation: "utility" or "auroc"
    silence_rate: float = 0.0        # share of training stays given one run of withheld vitals and labs
    silence_hours: int = 24          # longest such run (hours); see training/sepsis/silence.py
    cfc_impl: str = "auto"           # one of CFC_IMPLS; see train.set_cfc_impl
    max_minutes: float | None = None # wall-clock budget for the epoch loop
    max_train_stays: int | None = None
    max_eval_stays: int | None = None
    dropout_rates: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7)
    out: str = "results/sepsis"
    checkpoints: str = "runs/sepsis"
    run: str | None = None
    cache_dir: str = ".cache/sepsis"
    device: str = "auto"
    progress: bool = True

    @property
    def run_name(self) -> str:
        if self.run:
            return self.run
        m = self.model
        obj = "" if self.objective == "hourly" else f"-{self.objective}"
        split = "" if self.split == "patient" else f"-{self.split}"
        return f"{m.core}{m.hidden_size}{obj}{split}-s{self.seed}"
