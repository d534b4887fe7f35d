"""`python -m training nmnist {train,evaluate,stress}`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.loop import add_loop_args, loop_from_args
from training.nmnist.data import NMNISTFormatError
from training.stress import DROP_RATES


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
            from training.nmnist.train import NMNISTConfig, train

            loop = loop_from_args(args)
            out = args.out or f"results/nmnist/{args.variant}_{args.core}_s{loop.seed}"
            cfg = NMNISTConfig(data=args.data, core=args.core, variant=args.variant, hidden=args.hidden,
                               n_bins=args.bins, out=out, limit=args.limit, loop=loop)
            m = train(cfg)
            if m:
                print(json.dumps({"run": out, "test_accuracy": m["test_accuracy"],
                                  "seconds_per_epoch": m["seconds_per_epoch"]}))
            return 0
        from training.nmnist.evaluate import evaluate

        if args.command == "evaluate":
            print(json.dumps(evaluate(Path(args.run), args.data)))
        else:
            print(json.dumps(evaluate(Path(args.run), args.data, args.rates, args.stress_seed,
                                      with_stress=True)))
        return 0
    except (NMNISTFormatError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
