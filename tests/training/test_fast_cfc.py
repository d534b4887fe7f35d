"""The fast CfC path computes what driving ncps's CfCCell step by step computes, forward and backward."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ncps.torch import CfCCell

from training.cores.base import RecurrentCore
from training.cores.cfc import CfCCore
from training.cores.cfc_route import (COMPILED, EAGER, PERSISTENT, REFERENCE, TRITON, RouteFacts, RouteLog,
                                      choose_route)
from training.cores.cfc_tuning import Knobs, Tiles
from training.cores.fast_cfc import FastOptions, cfc_sequence

REPO = Path(__file__).resolve().parents[2]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def make_core(mode="default", layers=1, activation="lecun_tanh", hidden=9, units=11, inputs=7,
              dtype=torch.float64, device="cpu", seed=0):
    torch.manual_seed(seed)
    core = CfCCore(inputs, hidden, mode=mode, backbone_units=units, backbone_layers=layers,
                   activation=activation).to(device=device, dtype=dtype)
    if mode == "pure":  # ncps starts these at constants; random values exercise every gradient term
        with torch.no_grad():
            core.cell.A.normal_()
            core.cell.w_tau.normal_()
    return core


def run_both(core, batch=5, steps=30, dtype=torch.float64, device="cpu", masked=True, seed=1):
    """Outputs, final state and the gradients of a loss on both, for the reference loop and the fast path."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, core.input_size, generator=gen, dtype=dtype).to(device).requires_grad_()
    dt = (2 * torch.rand(batch, steps, generator=gen, dtype=dtype)).to(device).requires_grad_()
    mask = (torch.rand(batch, steps, generator=gen) > 0.3).to(device) if masked else None
    h0 = torch.randn(batch, core.hidden_size, generator=gen, dtype=dtype).to(device).requires_grad_()
    weights = torch.linspace(-1, 1, core.hidden_size, dtype=dtype, device=device)
    results = []
    for fast in (False, True):
        core.fast = fast
        out, final = core(x, dt, mask, h0)
        loss = (out * weights).sum() + (final ** 2).sum()
        grads = torch.autograd.grad(loss, [x, dt, h0, *core.parameters()])
        results.append([out, final, *grads])
    return results


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
def test_matches_ncps_cell_in_float64_forward_and_backward(mode):
    ref, fast = run_both(make_core(mode))
    for got, want in zip(fast, ref):
        assert rel_err(got, want) <= 1e-6


@pytest.mark.parametrize("layers,activation", [(0, "lecun_tanh"), (2, "silu"), (3, "relu"), (1, "gelu"), (1, "tanh")])
def test_matches_other_backbones(layers, activation):
    ref, fast = run_both(make_core("default", layers, activation), steps=12)
    for got, want in zip(fast, ref):
        assert rel_err(got, want) <= 1e-6


CUDA_ROUTES = {"persistent": FastOptions(), "triton+graphs": FastOptions(graphs=True),
               "compile+graphs": FastOptions(triton_gemms=False), "triton eager": FastOptions(graphs=False, persistent=False)}
CUDA_ROUTE_NAMES = {"persistent": "persistent (ieee)", "triton+graphs": "triton steps + graphs (tf32x3)",
                    "compile+graphs": "compiled steps + graphs", "triton eager": "triton steps (tf32x3)"}


@pytest.mark.parametrize("device,route", [("cpu", "eager")] + [("cuda", r) for r in CUDA_ROUTES if "cuda" in DEVICES])
def test_float32_over_336_steps_within_1e4(device, route):
    core = make_core(hidden=16, units=16, inputs=41, dtype=torch.float32, device=device)
    if device == "cuda":  # the default (persistent Triton kernels) and the other routes
        core.fast_options = CUDA_ROUTES[route]
    ref, fast = run_both(core, batch=4, steps=336, dtype=torch.float32, device=device)
    for got, want in zip(fast, ref):
        assert rel_err(got, want) <= 1e-4
    assert core.last_route.name == CUDA_ROUTE_NAMES.get(route, "eager steps")  # the route that ran


@pytest.mark.parametrize("layers", [1, 0])
def test_inputs_that_disagree_with_x_or_the_cell_are_refused_by_name(layers):
    """A wrong shape must be a clear error, not a silent misread: the kernels index by shape (a
    short dt or mask would be read past its end on a GPU, extra features would meet wrong weights)."""
    core = make_core(layers=layers)  # 7 inputs, 9 hidden
    core.fast = True
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    cases = {"x must be": dict(x=torch.randn(3, 7, dtype=torch.float64)),
             "features": dict(x=torch.randn(3, 5, 8, dtype=torch.float64)),
             "dt must be": dict(dt=torch.ones(3, 4, dtype=torch.float64)),
             "mask must be": dict(mask=torch.ones(3, 6, dtype=torch.bool)),
             "state must be": dict(state=torch.zeros(3, 8, dtype=torch.float64))}
    for message, bad in cases.items():
        args = {"x": x, **bad}
        with pytest.raises(ValueError, match=message):
            core(args.pop("x"), **args)
    out, final = core(x, torch.ones(3, 5, 1, dtype=torch.float64), torch.ones(3, 5, dtype=torch.bool),
                      torch.zeros(3, 9, dtype=torch.float64))
    assert out.shape == (3, 5, 9) and final.shape == (3, 9)


def test_padded_batch_equals_each_sequence_alone():
    core = make_core()
    core.fast = True
    torch.manual_seed(3)
    lengths = [9, 4, 1]
    xs = [torch.randn(n, core.input_size, dtype=torch.float64) for n in lengths]
    dts = [torch.rand(n, dtype=torch.float64) + 0.5 for n in lengths]
    x = torch.zeros(3, 9, core.input_size, dtype=torch.float64)
    dt = torch.zeros(3, 9, dtype=torch.float64)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    for i, n in enumerate(lengths):
        x[i, :n], dt[i, :n], mask[i, :n] = xs[i], dts[i], True
    out, final = core(x, dt, mask)
    for i, n in enumerate(lengths):
        alone, alone_final = core(xs[i][None], dts[i][None])
        torch.testing.assert_close(out[i, :n], alone[0])
        torch.testing.assert_close(final[i], alone_final[0])
        # padded steps hold the state: the output there repeats the last real one
        torch.testing.assert_close(out[i, n:], alone[0, -1].expand(9 - n, -1))


def test_time_span_defaults_to_one_and_accepts_b_t_1():
    core = make_core()
    core.fast = True
    x = torch.randn(2, 6, core.input_size, dtype=torch.float64)
    ones = torch.ones(2, 6, dtype=torch.float64)
    torch.testing.assert_close(core(x)[0], core(x, ones)[0])
    torch.testing.assert_close(core(x, ones.unsqueeze(-1))[0], core(x, ones)[0])


def test_empty_sequence_returns_initial_state():
    core = make_core()
    core.fast = True
    h0 = torch.randn(2, core.hidden_size, dtype=torch.float64)
    out, final = core(torch.zeros(2, 0, core.input_size, dtype=torch.float64), state=h0)
    assert out.shape == (2, 0, core.hidden_size)
    torch.testing.assert_close(final, h0)


def test_fast_path_is_auto_on_cuda_only_and_keeps_parameters():
    core = CfCCore(5, 8)
    assert core.fast is None
    assert not core.uses_fast_path(torch.zeros(1, 1, 5))
    core.fast = True
    assert core.uses_fast_path(torch.zeros(1, 1, 5))
    if torch.cuda.is_available():
        assert CfCCore(5, 8).uses_fast_path(torch.zeros(1, 1, 5, device="cuda"))
    # checkpoints stay loadable both ways: the parameters are exactly the ncps cell's
    plain = CfCCell(5, 8)
    assert list(core.state_dict()) == [f"cell.{k}" for k in plain.state_dict()]
    plain.load_state_dict({k[len("cell."):]: v for k, v in core.state_dict().items()})


def test_step_is_unchanged_by_the_fast_flag():
    core = make_core()
    x, h = torch.randn(3, core.input_size, dtype=torch.float64), torch.randn(3, core.hidden_size, dtype=torch.float64)
    dt = torch.rand(3, 1, dtype=torch.float64)
    want, _ = core.cell(x, h, dt)
    core.fast = True
    torch.testing.assert_close(core.step(x, h, dt), want)


def test_backbone_dropout_in_training_falls_back_to_the_reference_loop():
    core = CfCCore(4, 6, backbone_layers=2, backbone_dropout=0.5, fast=True)
    x = torch.randn(2, 3, 4)
    assert not core.uses_fast_path(x)
    with pytest.raises(ValueError, match="dropout"):
        cfc_sequence(core.cell, x)
    core.eval()  # dropout is off at inference, so the fast path computes the same function again
    assert core.uses_fast_path(x)
    torch.testing.assert_close(core(x)[0], RecurrentCore.forward(core, x)[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode,layers,steps,masked", [("default", 1, 13, True), ("pure", 2, 8, False), ("no_gate", 0, 3, True)])
def test_chunked_graph_route_matches_ncps_cell(device, mode, layers, steps, masked):
    """Sequences run as replays of fixed 4-step chunks (captured CUDA graphs on GPU, plain calls on CPU),
    including lengths that are not a multiple of the chunk."""
    dtype = torch.float64 if device == "cpu" else torch.float32
    core = make_core(mode, layers, dtype=dtype, device=device)
    core.fast_options = FastOptions(graphs=True, graph_chunk=4)
    ref, fast = run_both(core, steps=steps, dtype=dtype, device=device, masked=masked)
    for got, want in zip(fast, ref):
        assert rel_err(got, want) <= (1e-6 if dtype == torch.float64 else 1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_backward_after_a_second_forward_uses_its_own_inputs():
    core = make_core(hidden=16, units=16, dtype=torch.float32, device="cuda")
    core.fast, core.fast_options = True, FastOptions(graphs=True)
    xs = [torch.randn(4, 20, core.input_size, device="cuda", requires_grad=True) for _ in range(2)]
    outs = [core(x)[0] for x in xs]  # both replay the same captured graphs
    got = torch.autograd.grad(outs[0].sum(), xs[0])[0]
    core.fast = False
    want = torch.autograd.grad(core(xs[0])[0].sum(), xs[0])[0]
    assert rel_err(got, want) <= 1e-4


def test_benchmark_runs_on_cpu_and_writes_its_numbers(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cfc_speed.py"), "--device", "cpu", "--shapes", "3x5x4x6",
         "--repeats", "1", "--warmup", "0", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "nn.LSTM" in proc.stdout and "fast eager" in proc.stdout
    report = json.loads(out.read_text())
    (entry,) = report["shapes"]
    assert (entry["batch"], entry["steps"], entry["inputs"], entry["units"]) == (3, 5, 4, 6)
    results = entry["results"]
    assert set(results) >= {"ncps CfCCell loop", "fast eager", "nn.LSTM"}
    assert results["nn.LSTM"]["fwd_bwd_vs_lstm"] == 1.0
    assert all(r["forward_ms"] > 0 and r["fwd_bwd_ms"] > 0 for r in results.values())
    assert results["fast eager"]["max_rel_err_vs_ncps"] <= 1e-4


def test_benchmark_rejects_a_malformed_shape(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cfc_speed.py"), "--shapes", "3x5x4", "--out", str(tmp_path / "x.json")],
        capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode != 0
    assert "BATCHxSTEPSxINPUTSxUNITS" in proc.stderr


def test_inference_keeps_no_trace_for_a_backward_that_never_comes(monkeypatch):
    """Under torch.no_grad the fast path must not keep per-step activations: evaluation batches of
    long stays would otherwise hold [T, B, 4H] buffers (GiBs on a GPU) for nothing."""
    import training.cores.fast_cfc as fast

    seen = []
    original = fast.EagerRunner.forward

    def spy(self, u, dt, keep, h0, w, save):
        seen.append(save)
        return original(self, u, dt, keep, h0, w, save)

    monkeypatch.setattr(fast.EagerRunner, "forward", spy)
    core = CfCCore(5, 8, fast=True)
    x = torch.randn(2, 6, 5)
    with torch.no_grad():
        core(x)
    out, _ = core(x)
    out.sum().backward()
    assert seen == [False, True]
    assert core.cell.ff1.weight.grad is not None


INTERPRETER_CHECK = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from test_fast_cfc import make_core, run_both, rel_err
from training.cores.cfc_tuning import Knobs
from training.cores.fast_cfc import FastOptions
errors, ran = {{}}, {{}}
persistent = FastOptions(fuse=True, persistent=True, knobs=Knobs(hold={hold!r}))
ROUTES = {{"steps": FastOptions(fuse=True, persistent=False, graphs=False),
          "steps+graphs": FastOptions(fuse=True, persistent=False, graphs=True, graph_chunk=4),
          "persistent": persistent, "persistent sparse": persistent, "persistent forward refused": persistent,
          "persistent backward refused": persistent}}
from training.cores import cfc_persistent
kernels = {{"forward": cfc_persistent._forward, "backward": cfc_persistent._backward}}

class Refused:  # what the driver does when the programs cannot all be resident
    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            raise RuntimeError("Triton Error [CUDA]: too many blocks in cooperative launch")
        return launch

for mode, act, hidden, units, batch, masked, route in {cases!r}:
    core = make_core(mode, 1, act, hidden=hidden, units=units, dtype=torch.float32)
    core.fast_options = ROUTES[route]
    if route.endswith("sparse"):  # a wired cell: ff1 and ff2 act through a 0/1 mask
        core.cell.sparsity_mask = (torch.rand(hidden, units) > 0.5).float()
    for name, kernel in kernels.items():
        setattr(cfc_persistent, "_" + name, Refused() if route == f"persistent {{name}} refused" else kernel)
    ref, fast = run_both(core, batch=batch, steps=10, dtype=torch.float32, masked=masked)
    key = f"{{mode}} {{act}} H={{hidden}} U={{units}} B={{batch}} {{route}}"
    ran[key] = core.last_route.name
    with torch.no_grad():  # inference: the kernels keep no trace (persistent: z and y not stored)
        x = torch.randn(batch, 10, core.input_size)
        core.fast = True
        out_fast = core(x)[0]
        core.fast = False
        assert rel_err(out_fast, core(x)[0]) <= 1e-4, route
    if route == "persistent":  # the trace outlives a backward that keeps the graph
        core.fast = True
        out = core(torch.randn(batch, 10, core.input_size))[0].sum()
        first = torch.autograd.grad(out, core.cell.ff1.weight, retain_graph=True)[0]
        assert torch.equal(first, torch.autograd.grad(out, core.cell.ff1.weight)[0]), "second backward"
    errors[key] = max(rel_err(g, w) for g, w in zip(fast, ref))
print(json.dumps({{"errors": errors, "ran": ran}}))
"""

# what each case's forward must have run (a refused backward shows only as its warning)
INTERPRETER_RAN = {"steps": "triton steps (tf32x3)", "steps+graphs": "triton steps + graphs (tf32x3)",
                   "persistent": "persistent (ieee)", "persistent sparse": "persistent (ieee)",
                   "persistent forward refused": "triton steps (tf32x3)",
                   "persistent backward refused": "persistent (ieee)"}


@pytest.mark.parametrize("hold", [False, True], ids=["reread-weights", "hold-weights"])
def test_triton_kernels_match_ncps_cell_under_the_triton_interpreter(hold):
    """The Triton kernels themselves (per-step and persistent), run on CPU by Triton's interpreter:
    partial row tiles (batch 19, 5, 17, 3, 33 against tiles of 16), state and backbone widths that
    are not a multiple of the tiles, masked steps, both gated modes, every backbone activation, with
    and without the chunked route; outputs and all gradients. The interpreter runs the persistent
    kernels with one program per row block (no barrier); the split across programs is checked on
    CUDA. Triton 3.6's interpreter fails on these kernels (TypeError inside the interpreter; the
    compiled kernels pass the CUDA tests on that version), 3.9's runs them. The persistent kernels
    either hold their weight slices for the whole scan or re-read them each step (wide layers). A
    cooperative launch the driver refuses, forward or backward, must cost speed, not the result:
    the per-step kernels take over. A wired cell (sparsity mask on ff1, ff2) runs the same function."""
    pytest.importorskip("triton", minversion="3.9")
    cases = [("default", "lecun_tanh", 9, 11, 19, True, "steps+graphs"), ("no_gate", "silu", 40, 20, 5, False, "steps"),
             ("default", "gelu", 33, 130, 17, True, "steps+graphs"), ("default", "tanh", 16, 16, 16, True, "steps"),
             ("no_gate", "relu", 16, 16, 3, True, "steps+graphs"),
             ("default", "lecun_tanh", 9, 11, 19, True, "persistent"), ("no_gate", "silu", 40, 20, 5, False, "persistent"),
             ("default", "gelu", 33, 130, 33, True, "persistent"), ("no_gate", "tanh", 16, 16, 3, True, "persistent"),
             ("default", "relu", 20, 70, 16, True, "persistent"),
             ("no_gate", "tanh", 20, 24, 17, True, "persistent sparse"),
             ("default", "lecun_tanh", 9, 11, 19, True, "persistent forward refused"),
             ("no_gate", "silu", 40, 20, 5, True, "persistent backward refused")]
    if hold:
        cases = [c for c in cases if c[-1].startswith("persistent")]
    script = INTERPRETER_CHECK.format(tests=str(Path(__file__).parent), cases=cases, hold=hold)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "TRITON_INTERPRET": "1",
                               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    errors, ran = report["errors"], report["ran"]
    assert len(errors) == len(cases)
    assert all(err <= 1e-4 for err in errors.values()), errors
    assert {key: ran[key] for key in errors} == {
        f"{m} {a} H={h} U={u} B={b} {r}": INTERPRETER_RAN[r] for m, a, h, u, b, _, r in cases}


PERSISTENT_CASES = [  # (mode, activation, hidden, units, batch, masked): several programs per row block, partial
    ("default", "lecun_tanh", 128, 128, 256, True),   # tiles, batches beyond one launch (1100 rows)
    ("no_gate", "silu", 100, 40, 20, True), ("default", "gelu", 256, 128, 33, False),
    ("default", "tanh", 256, 200, 1100, True)]


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs CUDA: the interpreter runs one program per row block")
@pytest.mark.parametrize("case", PERSISTENT_CASES, ids=lambda c: "-".join(map(str, c)))
def test_persistent_kernels_split_across_programs_match_ncps_cell(case):
    from training.cores import cfc_persistent

    mode, act, hidden, units, batch, masked = case
    core = make_core(mode, 1, act, hidden=hidden, units=units, inputs=41, dtype=torch.float32, device="cuda")
    core.fast_options = FastOptions(persistent=True)
    assert cfc_persistent.plan(batch, hidden, units, torch.device("cuda")).columns > 1
    ref, fast = run_both(core, batch=batch, steps=40, dtype=torch.float32, device="cuda", masked=masked)
    for got, want in zip(fast, ref):
        assert rel_err(got, want) <= 1e-4


def test_persistent_plan_fits_one_program_per_sm_and_holds_weights_only_where_they_fit(monkeypatch):
    """The launch plan on an H100-sized GPU (132 SMs): programs per row block times row blocks stay
    within one per SM (the barrier needs them all resident), wider batches grow the row blocks and
    then split into launches, and the persistent kernels are the default only for widths whose
    weight slices a program holds in registers (4 warps, or 8 for H=256)."""
    pytest.importorskip("triton")
    from types import SimpleNamespace

    from training.cores import cfc_persistent as cp

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(multi_processor_count=132))
    gpu = torch.device("cuda")
    p = cp.plan(256, 128, 128, gpu)
    assert (p.columns, p.block_b, p.block_h, p.block_u, p.num_warps, p.hold) == (8, 16, 16, 16, 4, True)
    assert (256 // p.block_b) * p.columns <= 132
    p = cp.plan(256, 256, 128, gpu)
    assert (p.columns, p.block_h, p.num_warps, p.hold) == (8, 32, 8, True)
    p = cp.plan(1100, 256, 200, gpu)
    assert p.block_b == 64 and p.rows_per_launch == 1024  # 132 // 8 row blocks of 64: two launches
    assert len(list(cp._slices(1100, p))) == 2
    h100 = dict(GPU, sm_count=132)
    assert route(h100, hidden=128, units=128).kernels == PERSISTENT
    assert route(h100, hidden=256, units=128).kernels == PERSISTENT
    assert route(h100, hidden=1024, units=1024).kernels == TRITON


def test_only_a_refused_cooperative_launch_falls_back(monkeypatch):
    """A refusal warns and hands over (end to end in the interpreter test above); any other launch
    error is a real fault and propagates instead of silently changing the route."""
    pytest.importorskip("triton")
    from training.cores import cfc_persistent as cp

    def kernel(message):
        def launch(*args, **kwargs):
            raise RuntimeError(message)
        return type("Kernel", (), {"__getitem__": lambda self, grid: launch})()

    b, t, h, u = 2, 3, 4, 5
    w = cp.Weights.of(6, torch.randn(u, 6 + h), torch.randn(u), [torch.randn(h, u) for _ in range(4)],
                      [torch.randn(h) for _ in range(4)])
    args = (torch.randn(b, t, u), None, None, None, w, "default", "lecun_tanh", "ieee", True)
    monkeypatch.setattr(cp, "_forward", kernel("Triton Error [CUDA]: too many blocks in cooperative launch"))
    with pytest.warns(UserWarning, match="refused"):
        assert cp.forward_scan(*args) is None
    monkeypatch.setattr(cp, "_forward", kernel("Triton Error [CUDA]: an illegal memory access was encountered"))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        cp.forward_scan(*args)


# Facts as the GPU machine (an H200: sm_90, 132 SMs) and this CPU would report them, for a
# one-layer float32 cell the Triton kernels cover; each route test changes what it is about.
GPU = dict(device_type="cuda", capability=(9, 0), sm_count=132, interpreting=False, triton=True, hidden=128,
           units=128, kernel_gap=None, cell_gap=None)
CPU = dict(GPU, device_type="cpu", capability=None, sm_count=None)


def route(facts: dict, options: FastOptions = FastOptions(), fast=True, **changes):
    flags = {k: changes.pop(k) for k in ("persistent_refused", "compile_failed") if k in changes}
    return choose_route(RouteFacts(**{**facts, **changes}), options, fast, **flags)


ROUTE_CASES = [  # (id, facts, options, fast, fact changes / flags, kernels, graphs, precision, reason contains)
    ("fast off", GPU, FastOptions(), False, {}, REFERENCE, False, None, "fast=False"),
    ("auto off cpu", CPU, FastOptions(), None, {}, REFERENCE, False, None, "default on CUDA only"),
    ("auto on cuda", GPU, FastOptions(), None, {}, PERSISTENT, False, "ieee", "holds its weight slices"),
    ("cell the fast path cannot run", GPU, FastOptions(), True, {"cell_gap": "backbone dropout in training mode"},
     REFERENCE, False, None, "backbone dropout"),
    ("fuse off", GPU, FastOptions(fuse=False), True, {}, EAGER, True, None, "fuse=False"),
    ("fuse auto on cpu", CPU, FastOptions(), True, {}, EAGER, False, None, "fused kernels are the default on CUDA"),
    ("fuse auto without triton", GPU, FastOptions(), True, {"triton": False}, EAGER, True, None,
     "Triton is not installed"),
    ("triton gemms off", GPU, FastOptions(triton_gemms=False), True, {}, COMPILED, True, None, "triton_gemms=False"),
    ("fuse asked without triton", GPU, FastOptions(fuse=True), True, {"triton": False}, COMPILED, True, None,
     "Triton is not installed"),
    ("cell the kernels do not cover", GPU, FastOptions(), True, {"kernel_gap": "mode 'pure'"}, COMPILED, True, None,
     "do not cover mode 'pure'"),
    ("cpu without the interpreter", CPU, FastOptions(fuse=True), True, {}, COMPILED, False, None,
     "TRITON_INTERPRET=1"),
    ("pre-Ampere GPU", GPU, FastOptions(), True, {"capability": (7, 5)}, COMPILED, True, None, "older than Ampere"),
    ("compiled kernels failed", GPU, FastOptions(), True, {"kernel_gap": "dtype torch.float64",
                                                           "compile_failed": True},
     EAGER, True, None, "failed their check"),
    ("persistent asked", GPU, FastOptions(persistent=True), True, {"hidden": 1024, "units": 1024}, PERSISTENT,
     False, "ieee", "persistent=True"),
    ("persistent asked, precision given", GPU, FastOptions(persistent=True, precision="tf32x3"), True, {},
     PERSISTENT, False, "tf32x3", "persistent=True"),
    ("persistent off", GPU, FastOptions(persistent=False), True, {}, TRITON, True, "tf32x3", "persistent=False"),
    ("graphs asked", GPU, FastOptions(graphs=True), True, {}, TRITON, True, "tf32x3", "graphs=True asks"),
    ("steps without graphs", GPU, FastOptions(persistent=False, graphs=False, precision="tf32"), True, {}, TRITON,
     False, "tf32", "graphs=False"),
    ("weights do not fit", GPU, FastOptions(), True, {"hidden": 1024, "units": 1024}, TRITON, True, "tf32x3",
     "do not fit in registers"),
    ("refused launch", GPU, FastOptions(precision="ieee"), True, {"persistent_refused": True}, TRITON, True,
     "tf32x3", "refused"),
    ("refused launch, no graphs", GPU, FastOptions(persistent=True, graphs=False), True,
     {"persistent_refused": True}, TRITON, False, "tf32x3", "refused"),
    ("interpreter, persistent auto", CPU, FastOptions(fuse=True), True, {"interpreting": True}, TRITON, False,
     "tf32x3", "persistent=None on cpu"),
    ("interpreter, persistent asked", CPU, FastOptions(fuse=True, persistent=True), True, {"interpreting": True},
     PERSISTENT, False, "ieee", "persistent=True"),
    ("interpreter, chunks", CPU, FastOptions(fuse=True, persistent=False, graphs=True), True, {"interpreting": True},
     TRITON, True, "tf32x3", "no capture"),
]


@pytest.mark.parametrize("facts,options,fast,changes,kernels,graphs,precision,why",
                         [c[1:] for c in ROUTE_CASES], ids=[c[0] for c in ROUTE_CASES])
def test_choose_route_for_every_reason(facts, options, fast, changes, kernels, graphs, precision, why):
    """Every branch of the one decision, from fabricated facts (the GPU ones included) on any machine."""
    got = route(facts, options, fast, **changes)
    assert (got.kernels, got.graphs, got.precision) == (kernels, graphs, precision), got
    assert why in got.reason, got.reason


def test_options_that_contradict_or_misspell_are_refused():
    with pytest.raises(ValueError, match="no CUDA graphs"):
        FastOptions(persistent=True, graphs=True)
    with pytest.raises(ValueError, match="precision"):
        FastOptions(precision="fp8")


def test_route_facts_read_the_cell_and_the_input():
    from training.cores.fast_cfc import route_facts

    x = torch.zeros(2, 3, 7, dtype=torch.float64)
    facts = route_facts(make_core(hidden=9, units=11).cell, x)
    assert (facts.device_type, facts.capability, facts.sm_count, facts.hidden, facts.units) == ("cpu", None, None,
                                                                                                 9, 11)
    assert "float32" in facts.kernel_gap and facts.cell_gap is None
    assert "backbone layers" in route_facts(make_core(layers=2).cell, x).kernel_gap
    assert "pure" in route_facts(make_core("pure").cell, x).kernel_gap
    assert route_facts(make_core(dtype=torch.float32).cell, x.float()).kernel_gap is None
    dropout = CfCCore(4, 6, backbone_layers=2, backbone_dropout=0.5)
    assert "dropout" in route_facts(dropout.cell, torch.zeros(1, 1, 4)).cell_gap


def test_the_route_that_ran_is_recorded_and_logged_once_per_shape(monkeypatch, caplog):
    monkeypatch.setattr("training.cores.fast_cfc.ROUTES", RouteLog())  # nothing seen yet
    core, other = make_core(), make_core(hidden=5)
    assert core.last_route is None
    x = torch.randn(2, 4, core.input_size, dtype=torch.float64)
    with caplog.at_level(logging.INFO, logger="training.cores.cfc_route"):
        core.fast = True
        core(x)
        core(x)
        assert len(caplog.records) == 1 and "B=2 H=9 U=11" in caplog.messages[0]
        assert "eager steps" in caplog.messages[0]
        core(torch.randn(3, 4, core.input_size, dtype=torch.float64))  # a new shape
        assert len(caplog.records) == 2 and "B=3 H=9" in caplog.messages[1]
        core.fast_options = FastOptions(graphs=True, graph_chunk=2)  # same shape, another route
        core(x)
        assert len(caplog.records) == 3 and "eager steps + graphs" in caplog.messages[2]
        core.fast = False
        core(x)
        assert core.last_route.kernels == REFERENCE and "reference" in caplog.messages[3]
        other.fast = True
        other(torch.randn(2, 4, other.input_size, dtype=torch.float64))
    assert len(caplog.records) == 5
    assert other.last_route.name == "eager steps" and core.last_route.kernels == REFERENCE  # each its own


def test_compiled_kernels_that_fail_their_check_run_and_record_the_eager_route(monkeypatch):
    import training.cores.fast_cfc as fast

    def broken(*args):
        raise RuntimeError("compiled step kernel disagrees with the eager one")

    monkeypatch.setattr(fast, "_self_test", broken)
    monkeypatch.setattr(fast, "_KERNELS", {})
    core = make_core()
    core.fast, core.fast_options = True, FastOptions(fuse=True)  # on this CPU, without the interpreter: compiled
    assert core.route(torch.zeros(1, 1, core.input_size, dtype=torch.float64)).kernels == COMPILED
    with pytest.warns(UserWarning, match="torch.compile"):
        ref, got = run_both(core, steps=6)
    assert core.last_route.kernels == EAGER and "failed their check" in core.last_route.reason
    for g, w in zip(got, ref):
        assert rel_err(g, w) <= 1e-6


class _Launched(Exception):
    pass


def _recording_kernel(seen: list):
    """A stand-in for a Triton kernel: records the launch's keyword arguments, then stops the run."""
    def launch(*args, **kwargs):
        seen.append(kwargs)
        raise _Launched()
    return type("Kernel", (), {"__getitem__": lambda self, grid: launch})()


def test_launch_settings_reach_the_kernels_as_arguments(monkeypatch):
    """FastOptions.tiles and .knobs travel to the launches (no module globals); run under the
    interpreter's route on this CPU, with the kernels replaced by recorders."""
    pytest.importorskip("triton")
    from training.cores import cfc_persistent, cfc_triton

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    seen: list = []
    monkeypatch.setattr(cfc_triton, "_backbone_forward", _recording_kernel(seen))
    monkeypatch.setattr(cfc_persistent, "_forward", _recording_kernel(seen))
    core = make_core(dtype=torch.float32)
    core.fast = True
    x = torch.randn(3, 4, core.input_size)
    tiles = Tiles(block_b=32, block_n=64, block_k=16, num_warps=2, num_stages=1)
    cases = [(FastOptions(fuse=True, persistent=False), dict(BLOCK_B=16, BLOCK_N=32, BLOCK_K=32, num_warps=4,
                                                             num_stages=3, PREC="tf32x3")),
             (FastOptions(fuse=True, persistent=False, tiles=tiles, precision="ieee"),
              dict(BLOCK_B=32, BLOCK_N=64, BLOCK_K=16, num_warps=2, num_stages=1, PREC="ieee")),
             (FastOptions(fuse=True, persistent=True), dict(HOLD=True, PREC="ieee")),
             (FastOptions(fuse=True, persistent=True, knobs=Knobs(hold=False)), dict(HOLD=False, PREC="ieee"))]
    for options, want in cases:
        core.fast_options = options
        with pytest.raises(_Launched):
            core(x)
        assert {k: seen[-1][k] for k in want} == want, options


def test_profile_runs_on_cpu_and_writes_its_rows(tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cfc_profile.py"), "--device", "cpu", "--shape", "3x5x4x6",
         "--warmup", "1", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["shape"] == "B=3 T=5 F=4 H=6" and report["wall_ms"] > 0
    assert report["rows"] and all(r["calls"] >= 1 and r["total_ms"] > 0 for r in report["rows"])
    assert report["rows"] == sorted(report["rows"], key=lambda r: -r["total_ms"])
    assert any("mm" in r["name"] for r in report["rows"])  # the scan's matmuls show up by name
