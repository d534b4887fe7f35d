"""`python -m training quickdraw {train,evaluate,stress}`."""
from __future__ import annotations

import argparse

from training.loop import add_loop_args, loop_from_args
from training.quickdraw.data import QuickDrawFormatError
from training.task_cli import add_saved_run_commands, dispatch


def _parser() -> argparse.ArgumentParser:
    from training.quickdraw.train import QuickDrawConfig

    p = argparse.ArgumentParser(prog="python -m training quickdraw")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run, test once, stress-test, write results")
    d = QuickDrawConfig()
    t.add_argument("--data", default=d.data, help="quickdraw_small.tar.xz, or a directory of "
                   "<category>.ndjson files")
    t.add_argument("--core", choices=["cfc", "lstm"], default=d.core)
    t.add_argument("--format", choices=["simplified", "raw"], default=d.format)
    t.add_argument("--hidden", type=int, default=d.hidden)
    t.add_argument("--max-len", type=int, default=d.max_len)
    t.add_argument("--limit", type=int, default=None, help="first N samples per split only")
    t.add_argument("--out", default=None, help="run directory (default results/quickdraw/<format>_<core>_s<seed>)")
    add_loop_args(t, d.loop)
    add_saved_run_commands(sub)
    return p


def _train(args) -> dict | None:
    from training.quickdraw.train import QuickDrawConfig, train

    loop = loop_from_args(args)
    out = args.out or f"results/quickdraw/{args.format}_{args.core}_s{loop.seed}"
    cfg = QuickDrawConfig(data=args.data, core=args.core, format=args.format, hidden=args.hidden,
                          max_len=args.max_len, out=out, limit=args.limit, loop=loop)
    m = train(cfg)
    return m and {"run": out, "test_accuracy": m["test_accuracy"], "seconds_per_epoch": m["seconds_per_epoch"]}


def main(argv: list[str] | None = None) -> int:
    from training.quickdraw.evaluate import evaluate

    return dispatch(_parser().parse_args(argv), _train, evaluate, (QuickDrawFormatError,))
