"""CfC speed: the ncps CfCCell step loop vs the fast CfC core vs nn.LSTM, forward and forward+backward.

    python bench/cfc_speed.py --out results/cfc_speed.json            # GPU if present, else CPU
    python bench/cfc_speed.py --device cpu --repeats 3 --shapes 32x72x41x128

Times are medians over --repeats runs after --warmup runs, with torch.cuda.synchronize around each.
"forward" is inference (no_grad); "fwd+bwd" is forward with autograd plus backward of out.sum()
into the weights and the input. Each fast variant is also checked against the ncps loop, and the
route it ran (`CfCCore.last_route`, decided by `cfc_route.choose_route`) is printed and saved.
"""
from __future__ import annotations

import argparse
import inspect
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the repo

from training.cores.cfc import CfCCore  # noqa: E402
from training.cores.fast_cfc import FastOptions, triton_available  # noqa: E402

DEFAULT_SHAPES = ["256x72x41x128", "256x336x41x256", "32x72x41x128", "32x336x41x256"]
BACKBONE_UNITS = inspect.signature(CfCCore).parameters["backbone_units"].default  # every timed CfC's


@dataclass(frozen=True)
class Shape:
    batch: int
    steps: int
    inputs: int
    units: int

    @classmethod
    def parse(cls, text: str) -> "Shape":
        try:
            b, t, f, h = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"shape {text!r}: expected BATCHxSTEPSxINPUTSxUNITS, e.g. 256x72x41x128")
        return cls(b, t, f, h)

    def __str__(self) -> str:
        return f"B={self.batch} T={self.steps} F={self.inputs} H={self.units}"


def variants(device: torch.device, fuse_on_cpu: bool) -> dict[str, FastOptions]:
    """Each fast route separately, so the gain of each is visible."""
    if device.type == "cuda":
        out = {"fast eager": FastOptions(fuse=False, graphs=False),
               "fast +graphs": FastOptions(fuse=False, graphs=True)}
        if triton_available():
            out["fast +compile+graphs"] = FastOptions(fuse=True, graphs=True, triton_gemms=False)
            out["fast +fuse"] = FastOptions(fuse=True, graphs=False, persistent=False)
            out["fast +fuse+graphs"] = FastOptions(fuse=True, graphs=True)  # Triton step kernels in graphs
            out["fast persistent"] = FastOptions()  # the default: one launch per scan each way
            out["fast persistent tf32x3"] = FastOptions(precision="tf32x3")  # vs its default ieee
        return out
    out = {"fast eager": FastOptions(fuse=False, graphs=False)}
    if fuse_on_cpu:
        out["fast +fuse"] = FastOptions(fuse=True, graphs=False)
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_mib(fn, device) -> float | None:
    """Peak memory allocated above what was already held, over one call (CUDA only)."""
    if device.type != "cuda":
        return None
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def time_model(run, params, x, device, warmup, repeats) -> dict:
    def forward():
        with torch.no_grad():
            run(x)

    def forward_backward():
        out = run(x)
        grads = torch.autograd.grad(out.sum(), [x, *params])
        del grads

    return {"forward_ms": median_ms(forward, device, warmup, repeats),
            "fwd_bwd_ms": median_ms(forward_backward, device, warmup, repeats),
            "forward_peak_mib": peak_mib(forward, device), "fwd_bwd_peak_mib": peak_mib(forward_backward, device)}


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def bench_shape(shape: Shape, device, opts: dict[str, FastOptions], warmup, repeats) -> dict:
    torch.manual_seed(0)
    x = torch.randn(shape.batch, shape.steps, shape.inputs, device=device, requires_grad=True)
    core = CfCCore(shape.inputs, shape.units, fast=False).to(device)
    params = list(core.parameters())
    results = {}

    def cfc(x):
        return core(x)[0]

    def check(x):
        out = cfc(x)
        return out, torch.autograd.grad(out.sum(), [x, core.cell.backbone[0].weight])

    core.fast = False
    ref_out, ref_grads = check(x)
    results["ncps CfCCell loop"] = {**time_model(cfc, params, x, device, warmup, repeats),
                                    "route": core.last_route.name}
    for name, option in opts.items():
        core.fast, core.fast_options = True, option
        out, grads = check(x)
        errs = [max_rel_err(out, ref_out)] + [max_rel_err(g, r) for g, r in zip(grads, ref_grads)]
        timed = time_model(cfc, params, x, device, warmup, repeats)
        results[name] = {**timed, "max_rel_err_vs_ncps": max(errs), "route": core.last_route.name,
                         "route_reason": core.last_route.reason}

    lstm = nn.LSTM(shape.inputs, shape.units, batch_first=True).to(device)

    def run_lstm(x):
        return lstm(x)[0]

    results["nn.LSTM"] = time_model(run_lstm, list(lstm.parameters()), x, device, warmup, repeats)
    base = results["nn.LSTM"]
    for r in results.values():
        r["forward_vs_lstm"] = r["forward_ms"] / base["forward_ms"]
        r["fwd_bwd_vs_lstm"] = r["fwd_bwd_ms"] / base["fwd_bwd_ms"]
    return {"batch": shape.batch, "steps": shape.steps, "inputs": shape.inputs, "units": shape.units,
            "backbone_units": core.cell.backbone[0].out_features, "results": results}


def format_table(report: dict) -> str:
    lines = [f"{'shape':<28} {'implementation':<20} {'fwd ms':>9} {'fwd+bwd ms':>11} "
             f"{'fwd/LSTM':>9} {'f+b/LSTM':>9} {'rel err':>9} {'f+b MiB':>8}  route"]
    for entry in report["shapes"]:
        label = f"B={entry['batch']} T={entry['steps']} F={entry['inputs']} H={entry['units']}"
        for name, r in entry["results"].items():
            err, mib = r.get("max_rel_err_vs_ncps"), r.get("fwd_bwd_peak_mib")
            lines.append(f"{label:<28} {name:<20} {r['forward_ms']:>9.2f} {r['fwd_bwd_ms']:>11.2f} "
                         f"{r['forward_vs_lstm']:>8.1f}x {r['fwd_bwd_vs_lstm']:>8.1f}x "
                         f"{'' if err is None else f'{err:.1e}':>9} {'' if mib is None else f'{mib:.0f}':>8}"
                         f"  {r.get('route', '')}")
            label = ""
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", type=Shape.parse, default=None,
                        help="BATCHxSTEPSxINPUTSxUNITS ... (default: " + " ".join(DEFAULT_SHAPES) + ")")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per number (20 on GPU, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (5 on GPU, 1 on CPU)")
    parser.add_argument("--fuse-on-cpu", action="store_true", help="also time torch.compile'd kernels on CPU (slow to compile)")
    parser.add_argument("--tf32", action="store_true",
                        help="let cuBLAS matmuls use TF32 too (cuDNN's LSTM already does by default)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON of the numbers")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    gpu = device.type == "cuda"
    repeats = args.repeats or (20 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    shapes = args.shapes or [Shape.parse(s) for s in DEFAULT_SHAPES]
    opts = variants(device, args.fuse_on_cpu)

    report = {
        "device": torch.cuda.get_device_name(device) if gpu else f"cpu ({platform.processor() or platform.machine()}, "
                                                                  f"{torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "repeats": repeats, "warmup": warmup,
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "shapes": [],
    }
    try:
        from tqdm import tqdm
        shapes_iter = tqdm(shapes, desc="shapes", file=sys.stderr)
    except ImportError:
        shapes_iter = shapes
    for shape in shapes_iter:
        report["shapes"].append(bench_shape(shape, device, opts, warmup, repeats))
    print(f"device: {report['device']}  torch {report['torch']}  median of {repeats} after {warmup} warm-up")
    print(format_table(report))
    write_report(args.out, report)
    return report


def write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
