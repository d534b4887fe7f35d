"""One configuration object for a sepsis training run; the `train` command's flags are its fields
(training/flags.py), so a parameter, its default and its help live here only."""
from __future__ import annotations

from dataclasses import dataclass, fields

from training.flags import flag
from training.loop import SCHEDULES, LoopConfig
from training.sepsis.model import ModelConfig

CFC_IMPLS = ("auto", "fast", "fast-steps", "fast-compile", "reference")  # how a CfC core runs; see train.set_cfc_impl
OBJECTIVES = ("hourly", "utility", "patient")
SPLITS = ("patient", "cross-A", "cross-B")

# The defaults below are the v3 recipe (results/sepsis/ladder/). ModelConfig itself keeps the older
# defaults, so that checkpoints from before v3 load as they were trained.
V3_MODEL = dict(bins=16, encoder_units=256, skip=True, hold_silent=True)

# flags of the ModelConfig fields (declared in model.py, which checkpoints load through)
MODEL_FLAGS = {
    "core": dict(choices=("cfc", "lstm", "none"),
                 help="recurrent core; none: the per-hour MLP (needs --encoder-units and --skip)"),
    "hidden_size": dict(name="hidden", help="recurrent state width"),
    "backbone_units": dict(help="CfC backbone width"),
    "backbone_layers": dict(help="CfC backbone layers"),
    "dropout": dict(help="dropout before the risk head (and inside the encoder)"),
    "counts": dict(help="measurement counts among the features"),
    "bins": dict(help="piecewise-linear codes over this many quantile bins (0: none)"),
    "encoder_units": dict(help="hour-wise encoder width (0: none)"),
    "skip": dict(help="the head also reads the encoder's output"),
    "hold_silent": dict(help="an observation with no vital or lab holds the core and the risk"),
    "start_at_first": dict(help="a stay begins at its first measured hour: nothing advances before it "
                           "(needs --hold-silent)"),
}


@dataclass
class TrainConfig:
    data: str = flag(help="PhysioNet 2019 archive (.tar.xz) or directory of .psv stays")
    model: ModelConfig = flag(default_factory=lambda: ModelConfig(**V3_MODEL), fields=MODEL_FLAGS)
    objective: str = flag("hourly", "hourly: SepsisLabel per hour; utility: the challenge's utility per hour as "
                          "target and weight; patient: last state -> septic stay", choices=OBJECTIVES)
    split: str = flag("patient", "patient: 70/15/15 stratified; cross-A: train A, test B; cross-B", choices=SPLITS)
    split_seed: int = flag(0, "fixed across model seeds so every run sees the same test stays")
    folds: int = flag(0, "cross-fitting: train on all but one of this many folds of the patient split's training + "
                      "validation stays, validate on that one (0: the 70/15/15 split); test stays unchanged", min=0)
    fold: int = flag(0, "the fold validated on (0 .. folds - 1)", min=0)
    seed: int = flag(0, "seed of the weights, the batch order and the silence runs")
    epochs: int = flag(40, "passes over the training stays at most", min=1)
    batch_size: int = flag(256, "stays per batch", min=1)
    lr: float = flag(2e-3, "peak learning rate, after the warm-up")
    schedule: str = flag("warmup-cosine", "learning rate over training: warm-up then cosine to 5%% of the peak, "
                         "or constant", choices=SCHEDULES)
    warmup_epochs: float = flag(1.0, "epochs of linear warm-up")
    weight_decay: float = flag(1e-4, "AdamW weight decay")
    grad_clip: float = flag(1.0, "clip the gradient norm to this (0: no clipping)")
    physiology_weight: float = flag(0.0, "weight of the penalty on a logit falling as a vital or lab turns "
                                    "abnormal (training/sepsis/physiology.py; 0: off)")
    physiology_stays: int = flag(64, "stays of each batch the physiology penalty is sampled on", min=1)
    physiology_carry_hours: float = flag(0.0, "also ask the penalty's margin at later hours while the changed "
                                         "value is carried, up to this many hours (0: at the changed hour only)", min=0)
    pos_weight: float = flag(8.0, "weight of positive hours in the loss (positives are ~1.8%% of hours)")
    ema: float | None = flag(0.995, "EMA decay of the validated and kept weights; 0 turns it off")
    patience: int = flag(10, "epochs without validation improvement before stopping", min=0)
    batching: str = flag("random", "random: any stays together (batches alike in label mix); length: stays of "
                         "similar length per batch (little padding)", choices=("random", "length"))
    select: str = flag("auroc", "the validation score early stopping follows (hourly objectives)",
                       choices=("auroc", "utility"))
    silence_rate: float = flag(0.25, "share of training stays given one run of withheld vitals and labs")
    silence_hours: int = flag(24, "longest such run (hours); see training/sepsis/silence.py")
    cfc_impl: str = flag("auto", "how a CfC core runs; see train.set_cfc_impl", choices=CFC_IMPLS)
    length_chunk: int = flag(0, "run each training batch as sub-batches of this many stays of similar length, "
                             "each cut after its last hour: the same loss and gradient with less padding "
                             "(model.by_length; 32: 3.4-5x faster per step on a 2-core CPU, bench/NOTES.md); 0: the batch as it is",
                             min=0)
    max_minutes: float | None = flag(None, "wall-clock budget for the epoch loop")
    max_train_stays: int | None = flag(None, "train on this many stays drawn from the training split")
    max_eval_stays: int | None = flag(None, "validate and test on the first this many stays of their splits")
    dropout_rates: tuple[float, ...] = flag((0.0, 0.3, 0.5, 0.7), "inference-time row-dropout rates tested")
    out: str = flag("results/sepsis", "results folder (metrics and plots under <out>/<run>)")
    checkpoints: str = flag("runs/sepsis", "checkpoint folder (best.pt and last.pt under <checkpoints>/<run>)")
    run: str | None = flag(None, "run name (default: core, width, objective, split and seed)")
    cache_dir: str = flag(".cache/sepsis", "parsed-archive cache")
    device: str = flag("auto", "auto (CUDA when present), cpu, cuda, cuda:N")
    progress: bool = flag(True, "progress bars")
    resume: bool = flag(False, "continue from <checkpoints>/<run>/last.pt to the same result as an "
                        "uninterrupted run")

    def __post_init__(self):
        self.ema = self.ema or None  # 0 means off

    @property
    def run_name(self) -> str:
        if self.run:
            return self.run
        m = self.model
        obj = "" if self.objective == "hourly" else f"-{self.objective}"
        split = "" if self.split == "patient" else f"-{self.split}"
        fold = f"-f{self.fold}of{self.folds}" if self.folds else ""
        return f"{m.core}{m.hidden_size}{obj}{split}{fold}-s{self.seed}"

    @property
    def loop(self) -> LoopConfig:
        """The shared loop's settings: every LoopConfig field this config also has (same name, same
        meaning); the rest (val_fraction, num_workers) keep LoopConfig's defaults, unused here."""
        own = {f.name for f in fields(self)}
        return LoopConfig(**{f.name: getattr(self, f.name) for f in fields(LoopConfig) if f.name in own})
