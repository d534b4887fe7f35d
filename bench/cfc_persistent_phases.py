"""Where a persistent CfC scan's time goes: each kernel alone, and each phase of a step inside it.

    python bench/cfc_persistent_phases.py --out results/gpu/persistent_phases.json     # needs CUDA

For each launch setting (`cfc_persistent.Knobs`) and shape this times the forward kernel and the
backward-loop kernel alone (CUDA events, median), next to the whole fast core's forward+backward,
so the rest (input projection, bulk weight gradients, allocations) shows as the difference. Then it
runs each kernel once more with clock stamps (the PROFILE build of the same kernel) at four points
of every step and reports, per step and as the median over programs and steps, the time between
them in microseconds (SM clock cycles converted by each program's own clock rate against
%globaltimer over the whole launch):

    forward   compute_1  top of step -> first barrier: the state's read (issued at the end of the
                         previous step), the backbone product, the stores
              exchange_1 the first barrier (backbone activations complete)
              compute_2  the activations' read, heads products, gate, stores
              exchange_2 the second barrier (new state complete), and the state's read issued
    backward  compute_1  gate gradient, dy stores
              exchange_1 the first barrier (dy complete)
              compute_2  dy's read, the dz products, stores
              exchange_2 the second barrier (dz complete), dz's read and the carry product

`skew_us` is, per exchange, the median over row blocks and steps of the last program's arrival
minus the first's: the part of a wait that is other programs' work rather than the exchange itself.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cfc_speed import BACKBONE_UNITS, DEFAULT_SHAPES, Shape, median_ms, write_report  # noqa: E402
from training.cores import cfc_persistent  # noqa: E402
from training.cores.cfc import CfCCore  # noqa: E402
from training.cores.cfc_tuning import Knobs  # noqa: E402
from training.cores.fast_cfc import FastOptions  # noqa: E402

SETTINGS = {
    "default": Knobs(),
    "c4 w8": Knobs(columns=4, num_warps=8),
    "c16": Knobs(columns=16),
}
PHASES = ("compute_1", "exchange_1", "compute_2", "exchange_2")


def scan_inputs(shape: Shape, device, seed: int = 0):
    """Random operands of one persistent scan: u [B, T, U], dt, keep [B, T], h0, and the weights."""
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(device)

    n, b, h, u, f = shape.steps, shape.batch, shape.units, BACKBONE_UNITS, shape.inputs
    w = cfc_persistent.Weights.of(f, rnd(u, f + h, scale=(f + h) ** -0.5), rnd(u, scale=0.1),
                                  [rnd(h, u, scale=u ** -0.5) for _ in range(4)], [rnd(h, scale=0.1) for _ in range(4)])
    return (rnd(b, n, u, scale=0.5), rnd(b, n).abs() + 0.1, torch.rand(b, n, generator=g).to(device) > 0.1,
            rnd(b, h, scale=0.1), w)


def phase_times(stamps: torch.Tensor, columns: int) -> dict:
    """stamps [programs, 4 + 4T] int64 from one launch -> per-phase microsecond medians and skew."""
    s = stamps.double().cpu()
    g0, c0, g1, c1 = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
    cycles_per_us = ((c1 - c0) / ((g1 - g0) / 1e3)).clamp_min(1.0)            # [programs]
    marks = s[:, 4:].view(s.shape[0], -1, 4)                                   # [programs, T, 4]
    nxt = torch.cat([marks[:, 1:, 0], c1[:, None]], dim=1)                      # next step's top (or the end)
    bounds = torch.cat([marks, nxt[..., None]], dim=2)                         # [programs, T, 5]
    us = (bounds[..., 1:] - bounds[..., :-1]) / cycles_per_us[:, None, None]   # [programs, T, 4]
    # arrivals on a common clock: globaltimer at launch start plus the program's own elapsed cycles
    arrive = g0[:, None, None] / 1e3 + (marks[..., [1, 3]] - c0[:, None, None]) / cycles_per_us[:, None, None]
    blocks = arrive.view(-1, columns, *arrive.shape[1:])                       # [row blocks, columns, T, 2]
    skew = (blocks.amax(1) - blocks.amin(1))                                   # [row blocks, T, 2]
    out = {name: statistics.median(us[..., i].flatten().tolist()) for i, name in enumerate(PHASES)}
    out["step_us"] = statistics.median(us.sum(-1).flatten().tolist())
    out["skew_us"] = {"exchange_1": statistics.median(skew[..., 0].flatten().tolist()),
                      "exchange_2": statistics.median(skew[..., 1].flatten().tolist())}
    out["sm_mhz"] = statistics.median(cycles_per_us.tolist())
    return out


def measure(shape: Shape, knobs: Knobs, device, warmup: int, repeats: int) -> dict:
    u, dt, keep, h0, w = scan_inputs(shape, device)
    how = ("default", "lecun_tanh", "ieee")

    def forward(save=True, profile=None):
        return cfc_persistent.forward_scan(u, dt, keep, h0, w, *how, save, profile=profile, knobs=knobs)

    out, trace = forward()
    grad = torch.randn_like(out)

    def backward(profile=None):
        return cfc_persistent.backward_scan(grad, trace, dt, keep, w, *how, profile=profile, knobs=knobs)

    row = {"plan": asdict(cfc_persistent.plan(shape.batch, shape.units, BACKBONE_UNITS, device, knobs)),
           "forward_kernel_ms": median_ms(forward, device, warmup, repeats),
           "forward_kernel_no_save_ms": median_ms(lambda: forward(False), device, warmup, repeats),
           "backward_kernel_ms": median_ms(backward, device, warmup, repeats)}
    # the whole core (input projection, bulk gradients, autograd) with the same knobs
    torch.manual_seed(0)
    x = torch.randn(shape.batch, shape.steps, shape.inputs, device=device, requires_grad=True)
    options = FastOptions(persistent=True, knobs=knobs)
    core = CfCCore(shape.inputs, shape.units, fast=True, fast_options=options).to(device)
    params = list(core.parameters())

    def fwd_bwd():
        out = core(x)[0]
        torch.autograd.grad(out.sum(), [x, *params])

    row["core_fwd_bwd_ms"] = median_ms(fwd_bwd, device, warmup, repeats)
    row["core_route"] = core.last_route.name
    prof_f, prof_b = [], []
    forward(profile=prof_f)
    backward(prof_b)
    torch.cuda.synchronize(device)
    cols = row["plan"]["columns"]
    row["forward_phases"] = phase_times(prof_f[0], cols)
    row["backward_phases"] = phase_times(prof_b[0], cols)
    return row


def lstm_ms(shape: Shape, device, warmup: int, repeats: int) -> float:
    """cuDNN's LSTM forward+backward at the same shape, for the ratio within this run."""
    torch.manual_seed(0)
    x = torch.randn(shape.batch, shape.steps, shape.inputs, device=device, requires_grad=True)
    lstm = torch.nn.LSTM(shape.inputs, shape.units, batch_first=True).to(device)
    params = list(lstm.parameters())

    def fwd_bwd():
        torch.autograd.grad(lstm(x)[0].sum(), [x, *params])

    return median_ms(fwd_bwd, device, warmup, repeats)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", type=Shape.parse,
                        default=[Shape.parse(s) for s in DEFAULT_SHAPES])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("the persistent kernels' phases are measured on a CUDA device")
    device = torch.device("cuda")
    report = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "shapes": []}
    for shape in args.shapes:
        rows = {"nn.LSTM": {"core_fwd_bwd_ms": lstm_ms(shape, device, args.warmup, args.repeats)}}
        print(f"{shape} nn.LSTM f+b {rows['nn.LSTM']['core_fwd_bwd_ms']:.3f} ms", flush=True)
        for name in args.settings:
            try:
                rows[name] = measure(shape, SETTINGS[name], device, args.warmup, args.repeats)
            except Exception as err:  # one setting failing (e.g. refused launch) should not lose the others
                rows[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
            r = rows[name]
            if "error" in r:
                print(f"{shape} {name}: {r['error']}", flush=True)
                continue
            f, b = r["forward_phases"], r["backward_phases"]
            print(f"{shape} {name}: fwd kernel {r['forward_kernel_ms']:.3f} ms,"
                  f" bwd kernel {r['backward_kernel_ms']:.3f} ms,"
                  f" core f+b {r['core_fwd_bwd_ms']:.3f} ms | fwd step " + " ".join(f"{f[p]:.2f}" for p in PHASES)
                  + f" us (skew {f['skew_us']['exchange_1']:.2f}/{f['skew_us']['exchange_2']:.2f}) | bwd step "
                  + " ".join(f"{b[p]:.2f}" for p in PHASES)
                  + f" us (skew {b['skew_us']['exchange_1']:.2f}/{b['skew_us']['exchange_2']:.2f})"
                  + f" | {f['sm_mhz']:.0f} MHz | core: {r['core_route']}",
                  flush=True)
        report["shapes"].append({"shape": str(shape), "results": rows})
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
