"""Flags derived from configuration dataclasses (training/flags.py): every field has its flag, the
defaults are the dataclass's, and the flags that scripts under bench/ pass still parse."""
from __future__ import annotations

import argparse
import shlex
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pytest

from training.flags import add_flags, flag, from_flags
from training.loop import LoopConfig, add_loop_args, loop_from_args
from training.sepsis.cli import build_parser, config_from_args
from training.sepsis.config import TrainConfig
from training.sepsis.model import ModelConfig

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Inner:
    width: int = flag(4, "inner width", name="w")
    on: bool = flag(False, "a switch")


@dataclass
class Example:
    path: str = flag(help="required: no default")
    count: int = flag(3, "at least one", min=1)
    rate: float | None = flag(None, "optional")
    mode: str = flag("a", "one of a, b", choices=("a", "b"))
    rates: tuple[float, ...] = flag((0.0, 0.5), "one or more")
    verbose: bool = flag(True, "on by default")
    inner: Inner = flag(default_factory=Inner, fields={"on": {"help": "from the parent", "name": "inner-on"}})


def parse(cls, argv, **kw):
    p = argparse.ArgumentParser(exit_on_error=False)
    add_flags(p, cls, **kw)
    return from_flags(cls, p.parse_args(argv))


def test_each_kind_of_field_becomes_its_flag():
    assert parse(Example, ["--path", "x"]) == Example(path="x")
    got = parse(Example, ["--path", "x", "--count", "2", "--rate", "0.1", "--mode", "b", "--rates", "1", "2",
                          "--no-verbose", "--w", "9", "--inner-on"])
    assert got == Example(path="x", count=2, rate=0.1, mode="b", rates=(1.0, 2.0), verbose=False, inner=Inner(9, True))


@pytest.mark.parametrize("argv", [[], ["--path", "x", "--count", "0"], ["--path", "x", "--mode", "c"],
                                  ["--path", "x", "--count", "two"]])
def test_missing_and_bad_values_are_refused(argv):
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parse(Example, argv)


def test_a_flag_error_names_the_flag_and_the_bound(capsys):
    p = argparse.ArgumentParser()
    add_loop_args(p, LoopConfig())
    with pytest.raises(SystemExit):
        p.parse_args(["--epochs", "0"])
    assert "--epochs: must be at least 1, got 0" in capsys.readouterr().err


def test_every_loop_field_has_a_flag_with_its_default():
    p = argparse.ArgumentParser()
    defaults = LoopConfig(epochs=7, batch_size=5, patience=2, val_fraction=0.3)
    add_loop_args(p, defaults)
    assert loop_from_args(p.parse_args([])) == defaults
    given = p.parse_args(["--epochs", "3", "--max-minutes", "1.5", "--schedule", "warmup-cosine", "--ema", "0.9",
                          "--no-progress", "--resume", "--grad-clip", "0"])
    assert asdict(loop_from_args(given)) == {**asdict(defaults), "epochs": 3, "max_minutes": 1.5, "progress": False,
                                             "schedule": "warmup-cosine", "ema": 0.9, "resume": True, "grad_clip": 0.0}


def test_every_sepsis_field_has_a_flag_and_the_defaults_are_the_dataclass_defaults():
    assert config_from_args(build_parser().parse_args(["train", "--data", "x"])) == TrainConfig(data="x")
    p = argparse.ArgumentParser()
    add_flags(p, TrainConfig)
    dests = {a.dest for a in p._actions}
    assert {f.name for f in fields(TrainConfig) if f.name != "model"} <= dests
    assert {f"model.{f.name}" for f in fields(ModelConfig)} <= dests


def test_the_v3_recipe_is_the_default_and_the_old_flags_still_work():
    cfg = config_from_args(build_parser().parse_args(["train", "--data", "x"]))
    assert (cfg.model.bins, cfg.model.encoder_units, cfg.model.skip, cfg.model.hold_silent) == (16, 256, True, True)
    assert (cfg.batching, cfg.select, cfg.silence_rate, cfg.schedule) == ("random", "auroc", 0.25, "warmup-cosine")
    assert ModelConfig().bins == 0 and not ModelConfig().skip  # checkpoints from before v3 load as trained
    old = config_from_args(build_parser().parse_args(
        shlex.split("train --data x --core lstm --hidden 64 --no-counts --no-skip --ema 0 --max-minutes 2 --no-progress")))
    assert (old.model.core, old.model.hidden_size, old.model.counts, old.model.skip) == ("lstm", 64, False, False)
    assert old.ema is None and old.max_minutes == 2.0 and not old.progress


def test_the_sepsis_loop_reads_every_same_named_setting():
    cfg = TrainConfig(data="x", epochs=3, lr=0.1, ema=0.9, patience=2, max_minutes=4.0, resume=True, seed=5,
                      schedule="constant", grad_clip=0.5, progress=False)
    loop = cfg.loop
    shared = {f.name for f in fields(LoopConfig)} & {f.name for f in fields(TrainConfig)}
    assert shared == {f.name for f in fields(LoopConfig)} - {"val_fraction", "num_workers"}
    assert all(getattr(loop, name) == getattr(cfg, name) for name in shared)


def run_lines():
    """Every `<run name> <train flags...>` line of the run files that bench/gpu_sepsis_ladder.sh reads."""
    for path in sorted((ROOT / "bench").glob("*runs*.txt")) + sorted((ROOT / "bench").glob("*rerun*.txt")):
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                yield pytest.param(line.split(None, 1)[1], id=f"{path.name}:{line.split()[0]}")


@pytest.mark.parametrize("flags", list(run_lines()))
def test_the_bench_run_files_still_parse(flags):
    args = build_parser().parse_args(["train", "--data", "x", "--run", "r", *shlex.split(flags), "--no-progress"])
    assert config_from_args(args).run == "r"
