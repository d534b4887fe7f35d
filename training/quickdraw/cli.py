"""`python -m training quickdraw {train,evaluate,stress}`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.loop import add_loop_args, loop_from_args
from training.quickdraw.data import QuickDrawFormatError
from training.stress import DROP_RATES


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
    for name in ("evaluate", "stress"):
        e = sub.add_parser(name, help=f"{name} a saved run on the test split")
        e.add_argument("--run", required=True, help="run directory holding model.pt")
        e.add_argument("--data", default=None, help="override the data path stored in the run")
        if name == "stress":
            e.add_argument("--rates", type=float, nargs="+", default=list(DROP_RATES))
            e.add_argument("--stress-seed", type=int, default=1234)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            from training.quickdraw.train import QuickDrawConfig, train

            loop = loop_from_args(args)
            out = args.out or f"results/quickdraw/{args.format}_{args.core}_s{loop.seed}"
            cfg = QuickDrawConfig(data=args.data, core=args.core, format=args.format, hidden=args.hidden,
                                  max_len=args.max_len, out=out, limit=args.limit, loop=loop)
            m = train(cfg)
            if m:
                print(json.dumps({"run": out, "test_accuracy": m["test_accuracy"],
                                  "seconds_per_epoch": m["seconds_per_epoch"]}))
            return 0
        from training.quickdraw.evaluate import evaluate

        if args.command == "evaluate":
            print(json.dumps(evaluate(Path(args.run), args.data)))
        else:
            print(json.dumps(evaluate(Path(args.run), args.data, args.rates, args.stress_seed,
                                      with_stress=True)))
        return 0
    except (QuickDrawFormatError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
