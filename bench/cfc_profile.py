"""Where the fast CfC's time goes: per-kernel device time for one forward+backward, per step.

    python bench/cfc_profile.py --shape 256x72x41x128 --out results/gpu/cfc_profile.json   # GPU
    python bench/cfc_profile.py --device cpu --shape 8x10x5x16 --out /tmp/cfc_profile.json

Runs the fast core's default route (after warm-up, so compiling and graph capture are not counted)
under torch.profiler and prints each kernel's total and per-step time and call count, sorted by
total, next to the wall time of the same forward+backward: if the kernels add up to much less than
the wall time, launches and gaps dominate; otherwise the named kernels do.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cfc_speed import Shape, sync, write_report  # noqa: E402
from training.cores.cfc import CfCCore  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", type=Shape.parse, default=Shape.parse("256x72x41x128"))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="rows to print")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    shape = args.shape
    torch.manual_seed(0)
    x = torch.randn(shape.batch, shape.steps, shape.inputs, device=device, requires_grad=True)
    core = CfCCore(shape.inputs, shape.units, fast=True).to(device)
    params = list(core.parameters())

    def fwd_bwd():
        out = core(x)[0]
        torch.autograd.grad(out.sum(), [x, *params])

    for _ in range(args.warmup):
        fwd_bwd()
    sync(device)
    start = time.perf_counter()
    fwd_bwd()
    sync(device)
    wall_ms = (time.perf_counter() - start) * 1e3

    gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        fwd_bwd()
        sync(device)
    rows = []
    for e in prof.key_averages():
        total_us = e.device_time_total if gpu else e.self_cpu_time_total
        if total_us <= 0 or (gpu and e.device_type != torch.autograd.DeviceType.CUDA):
            continue
        rows.append({"name": e.key, "calls": e.count, "total_ms": total_us / 1e3,
                     "per_call_us": total_us / max(e.count, 1), "per_step_us": total_us / shape.steps})
    rows.sort(key=lambda r: -r["total_ms"])
    kernel_ms = sum(r["total_ms"] for r in rows)
    report = {"device": torch.cuda.get_device_name(device) if gpu else "cpu", "torch": torch.__version__,
              "shape": str(shape), "route": core.last_route.name, "route_reason": core.last_route.reason,
              "wall_ms": wall_ms, "kernels_total_ms": kernel_ms,
              "what": "device kernels" if gpu else "CPU ops (self time)", "rows": rows}
    print(f"{shape}, route {report['route']}: forward+backward wall {wall_ms:.2f} ms, {report['what']} add up to "
          f"{kernel_ms:.2f} ms")
    print(f"{'total ms':>9} {'calls':>6} {'us/call':>8} {'us/step':>8}  name")
    for r in rows[:args.top]:
        print(f"{r['total_ms']:>9.3f} {r['calls']:>6} {r['per_call_us']:>8.1f} {r['per_step_us']:>8.1f}  {r['name'][:90]}")
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
