"""`python -m training iam {generate,train,evaluate,stress}`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.iam.data import IAMFormatError
from training.loop import add_loop_args, loop_from_args


def _parser() -> argparse.ArgumentParser:
    from training.iam.train import IAMConfig

    p = argparse.ArgumentParser(prog="python -m training iam")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write generated handwriting-like lines in the IAM layout")
    g.add_argument("--out", required=True)
    g.add_argument("--lines", type=int, default=2000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=1)
    t = sub.add_parser("train", help="train one run, test once, write results")
    d = IAMConfig()
    t.add_argument("--data", required=True, help="IAM directory with lines.txt, or parquet file(s)")
    t.add_argument("--core", choices=["cfc", "lstm", "bilstm"], default=d.core)
    t.add_argument("--hidden", type=int, default=d.hidden)
    t.add_argument("--max-width", type=int, default=d.max_width)
    t.add_argument("--real-iam", action="store_true", help="label results as IAM, not generated")
    t.add_argument("--limit", type=int, default=None)
    t.add_argument("--out", default=None, help="run directory (default results/iam/<core>_s<seed>)")
    add_loop_args(t, d.loop)
    e = sub.add_parser("evaluate", help="CER/WER of a saved run on the test forms")
    e.add_argument("--run", required=True)
    e.add_argument("--data", default=None)
    s = sub.add_parser("stress", help="re-run the column-dropout stress test of a saved run")
    s.add_argument("--run", required=True)
    s.add_argument("--data", default=None)
    s.add_argument("--stress-seed", type=int, default=1234)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            from training.iam.generate import generate

            print(generate(args.out, args.lines, args.seed, workers=args.workers))
            return 0
        if args.command == "train":
            from training.iam.train import IAMConfig, train

            loop = loop_from_args(args)
            out = args.out or f"results/iam/{args.core}_s{loop.seed}"
            m = train(IAMConfig(data=args.data, core=args.core, hidden=args.hidden,
                                max_width=args.max_width, generated=not args.real_iam, out=out,
                                limit=args.limit, loop=loop))
            if m:
                print(json.dumps({"run": out, "test_cer": m["test_cer"], "test_wer": m["test_wer"]}))
            return 0
        if args.command == "evaluate":
            from training.iam.evaluate import evaluate

            print(json.dumps(evaluate(Path(args.run), args.data)))
            return 0
        from training.iam.evaluate import evaluate

        print(json.dumps(evaluate(Path(args.run), args.data, stress_seed=args.stress_seed)))
        return 0
    except (IAMFormatError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
