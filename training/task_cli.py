"""What the classification benchmarks' CLIs share: the `evaluate` and `stress` commands on a saved
run, and one dispatch that turns data errors into a message and exit code 2."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from training.stress import DROP_RATES


def add_saved_run_commands(sub) -> None:
    for name in ("evaluate", "stress"):
        e = sub.add_parser(name, help=f"{name} a saved run on the test split")
        e.add_argument("--run", required=True, help="run directory holding model.pt")
        e.add_argument("--data", default=None, help="override the data path stored in the run")
        if name == "stress":
            e.add_argument("--rates", type=float, nargs="+", default=list(DROP_RATES))
            e.add_argument("--stress-seed", type=int, default=1234)


def dispatch(args: argparse.Namespace, train: Callable[[argparse.Namespace], dict | None],
             evaluate: Callable, errors: tuple[type[Exception], ...]) -> int:
    """`train(args)` returns the printed summary (or None); evaluate(run, data, [rates, seed,
    with_stress=True]) serves the other two commands."""
    try:
        if args.command == "train":
            summary = train(args)
            if summary:
                print(json.dumps(summary))
        elif args.command == "evaluate":
            print(json.dumps(evaluate(Path(args.run), args.data)))
        else:
            print(json.dumps(evaluate(Path(args.run), args.data, args.rates, args.stress_seed, with_stress=True)))
        return 0
    except (*errors, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
