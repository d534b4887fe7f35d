"""`python -m training nmnist {train,evaluate,stress}`."""
from __future__ import annotations

import argparse

from training.loop import add_loop_args, loop_from_args
from training.nmnist.data import NMNISTFormatError
from training.task_cli import add_saved_run_commands, dispatch


def _parser() -> argparse.ArgumentParser:
    from training.nmnist.train import NMNISTConfig

    p = argparse.ArgumentParser(prog="python -m training nmnist")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run, test once, stress-test, write results")
    d = NMNISTConfig()
    t.add_argument("--data", default=d.data, help="nmnist_small.tar.xz, or a directory/archive "
                   "holding Train|Test/<digit>/*.bin")
    t.add_argument("--core", choices=["cfc", "lstm"], default=d.core)
    t.add_argument("--variant", choices=["fixed", "events"], default=d.variant)
    t.add_argument("--hidden", type=int, default=d.hidden)
    t.add_argument("--bins", type=int, default=d.n_bins)
    t.add_argument("--limit", type=int, default=None, help="first N samples per split only")
    t.add_argument("--out", default=None, help="run directory (default results/nmnist/<variant>_<core>_s<seed>)")
    add_loop_args(t, d.loop)
    add_saved_run_commands(sub)
    return p


def _train(args) -> dict | None:
    from training.nmnist.train import NMNISTConfig, train

    loop = loop_from_args(args)
    out = args.out or f"results/nmnist/{args.variant}_{args.core}_s{loop.seed}"
    cfg = NMNISTConfig(data=args.data, core=args.core, variant=args.variant, hidden=args.hidden,
                       n_bins=args.bins, out=out, limit=args.limit, loop=loop)
    m = train(cfg)
    return m and {"run": out, "test_accuracy": m["test_accuracy"], "seconds_per_epoch": m["seconds_per_epoch"]}


def main(argv: list[str] | None = None) -> int:
    from training.nmnist.evaluate import evaluate

    return dispatch(_parser().parse_args(argv), _train, evaluate, (NMNISTFormatError,))
