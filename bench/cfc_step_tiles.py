"""Launch settings of the Triton CfC kernels: forward+backward time per configuration.

Two families: the per-step kernels' tile sizes with the CUDA-graph chunk length ("b16 n32 ..."),
and the persistent kernels' programs per row block, reduction chunk, warps and pipeline stages
("persist c8 k32 ...").

    python bench/cfc_step_tiles.py --out results/gpu/cfc_step_tiles.json      # needs CUDA
    python bench/cfc_step_tiles.py --configs persist  --out ...               # one family (name prefix)

Each configuration is timed on the issue's shapes in one run, nn.LSTM alongside for the ratio, and
checked against the ncps-free reference route (fast eager, float32: same function to ~1e-6).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cfc_speed import Shape, max_rel_err, time_model, write_report  # noqa: E402
from training.cores.cfc import CfCCore  # noqa: E402
from training.cores.cfc_tuning import Knobs, Tiles  # noqa: E402
from training.cores.fast_cfc import FastOptions  # noqa: E402

CONFIGS = {  # name: (tiles, graph chunk)
    "b16 n32 k32 w4 s3 c8": (Tiles(16, 32, 32, 4, 3), 8),
    "b16 n32 k32 w4 s3 c16": (Tiles(16, 32, 32, 4, 3), 16),
    "b16 n32 k32 w4 s3 c32": (Tiles(16, 32, 32, 4, 3), 32),
    "b16 n32 k64 w4 s3 c8": (Tiles(16, 32, 64, 4, 3), 8),
    "b16 n32 k128 w4 s3 c8": (Tiles(16, 32, 128, 4, 3), 8),
    "b16 n64 k64 w4 s3 c8": (Tiles(16, 64, 64, 4, 3), 8),
    "b16 n64 k32 w4 s3 c8": (Tiles(16, 64, 32, 4, 3), 8),
    "b16 n16 k64 w2 s3 c8": (Tiles(16, 16, 64, 2, 3), 8),
    "b16 n16 k32 w2 s3 c8": (Tiles(16, 16, 32, 2, 3), 8),
    "b16 n32 k32 w2 s3 c8": (Tiles(16, 32, 32, 2, 3), 8),
    "b16 n32 k32 w4 s1 c8": (Tiles(16, 32, 32, 4, 1), 8),
    "b32 n32 k32 w4 s3 c8": (Tiles(32, 32, 32, 4, 3), 8),
}
PERSISTENT = {  # name: (knobs, tl.dot precision); warps None: 4, or 8 where 4 would not hold the weights
    "persist c8": (Knobs(8), "ieee"),
    "persist c4 w8": (Knobs(4, 8), "ieee"),
    "persist c16": (Knobs(16), "ieee"),
    "persist c8 w8": (Knobs(8, 8), "ieee"),
    "persist c8 tf32x3": (Knobs(8), "tf32x3"),
}


def select(prefixes: list[str]) -> list[str]:
    names = list(CONFIGS) + list(PERSISTENT)
    chosen = [n for n in names if any(n.startswith(p) for p in prefixes)]
    if not chosen:
        raise SystemExit(f"--configs {prefixes}: no configuration starts with these; known: {names}")
    return chosen


def options_for(name: str) -> tuple[FastOptions, dict]:
    """The options that run configuration `name` (its launch settings travel in them to the kernels;
    captured graphs are keyed by them too), and the settings to report."""
    if name in PERSISTENT:
        knobs, precision = PERSISTENT[name]
        return (FastOptions(persistent=True, precision=precision, knobs=knobs),
                {"knobs": asdict(knobs), "precision": precision})
    tiles, chunk = CONFIGS[name]
    return FastOptions(graph_chunk=chunk, persistent=False, tiles=tiles), {"tiles": asdict(tiles), "graph_chunk": chunk}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", type=Shape.parse,
                        default=[Shape.parse(s) for s in ("256x72x41x128", "256x336x41x256", "32x72x41x128")])
    parser.add_argument("--configs", nargs="+", default=["b", "persist"],
                        help="configuration names or name prefixes (default: all)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("the Triton step kernels are tuned on a CUDA device")
    device = torch.device("cuda")
    names = select(args.configs)
    report = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "shapes": []}
    for shape in args.shapes:
        torch.manual_seed(0)
        x = torch.randn(shape.batch, shape.steps, shape.inputs, device=device, requires_grad=True)
        core = CfCCore(shape.inputs, shape.units, fast=True, fast_options=FastOptions(fuse=False, graphs=False)).to(device)
        lstm = nn.LSTM(shape.inputs, shape.units, batch_first=True).to(device)

        def fwd_bwd(run, params):
            out = run(x)
            return out, torch.autograd.grad(out.sum(), [x, *params])

        def timings(run, params) -> dict:
            return time_model(run, params, x, device, args.warmup, args.repeats)

        cfc_params = list(core.parameters())
        ref_out, ref_grads = fwd_bwd(lambda x: core(x)[0], cfc_params)
        rows = {"nn.LSTM": timings(lambda x: lstm(x)[0], list(lstm.parameters()))}
        for name in names:
            core.fast_options, settings = options_for(name)
            try:
                out, grads = fwd_bwd(lambda x: core(x)[0], cfc_params)
                err = max([max_rel_err(out, ref_out)] + [max_rel_err(g, r) for g, r in zip(grads, ref_grads)])
                timed = timings(lambda x: core(x)[0], cfc_params)
                rows[name] = {**timed, "max_rel_err": err, "route": core.last_route.name, **settings}
            except Exception as exc:  # a tile that does not fit (registers, shared memory) is a result too
                rows[name] = {"error": repr(exc)[:300]}
        base = rows["nn.LSTM"]["fwd_bwd_ms"]
        print(f"\n{shape}  (nn.LSTM fwd+bwd {base:.2f} ms)")
        for name, r in rows.items():
            if "error" in r:
                print(f"  {name:<24} failed: {r['error'][:120]}")
                continue
            r["fwd_bwd_vs_lstm"] = r["fwd_bwd_ms"] / base
            err = r.get("max_rel_err")
            print(f"  {name:<24} fwd {r['forward_ms']:7.2f} ms  f+b {r['fwd_bwd_ms']:7.2f} ms  "
                  f"{r['fwd_bwd_vs_lstm']:5.2f}x LSTM  {'' if err is None else f'err {err:.1e}'}  {r.get('route', '')}")
        report["shapes"].append({"shape": str(shape), "results": rows})
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
