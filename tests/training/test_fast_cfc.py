"""The fast CfC path computes what driving ncps's CfCCell step by step computes, forward and backward."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ncps.torch import CfCCell

from training.cores.base import RecurrentCore
from training.cores.cfc import CfCCore
from training.cores.fast_cfc import FastOptions, ScanSpec, cfc_sequence, step_kernels, triton_available

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


@pytest.mark.parametrize("device,route", [("cpu", "eager")] + [("cuda", r) for r in CUDA_ROUTES if "cuda" in DEVICES])
def test_float32_over_336_steps_within_1e4(device, route):
    core = make_core(hidden=16, units=16, inputs=41, dtype=torch.float32, device=device)
    if device == "cuda":  # the default (persistent Triton kernels) and the other routes
        core.fast_options = CUDA_ROUTES[route]
    ref, fast = run_both(core, batch=4, steps=336, dtype=torch.float32, device=device)
    for got, want in zip(fast, ref):
        assert rel_err(got, want) <= 1e-4


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
from training.cores.fast_cfc import FastOptions
errors = {{}}
persistent = FastOptions(fuse=True, persistent=True)
ROUTES = {{"steps": FastOptions(fuse=True, persistent=False, graphs=False),
          "steps+graphs": FastOptions(fuse=True, persistent=False, graphs=True, graph_chunk=4),
          "persistent": persistent, "persistent sparse": persistent, "persistent forward refused": persistent,
          "persistent backward refused": persistent}}
from training.cores import cfc_persistent
cfc_persistent.KNOBS = cfc_persistent.Knobs(hold={hold!r})
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
    errors[f"{{mode}} {{act}} H={{hidden}} U={{units}} B={{batch}} {{route}}"] = max(
        rel_err(g, w) for g, w in zip(fast, ref))
print(json.dumps(errors))
"""


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
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(errors) == len(cases)
    assert all(err <= 1e-4 for err in errors.values()), errors


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
    assert cp.chosen_for(128, 128, gpu) and cp.chosen_for(256, 128, gpu)
    assert not cp.chosen_for(1024, 1024, gpu)


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


def test_persistent_kernels_take_no_graphs_and_are_the_cuda_default():
    from training.cores.fast_cfc import _resolve

    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert _resolve(FastOptions(), gpu)[1] is True
    assert _resolve(FastOptions(graphs=True), gpu)[1] is False  # asking for graphs keeps the per-step kernels
    assert _resolve(FastOptions(), cpu)[1] is False
    with pytest.raises(ValueError, match="no CUDA graphs"):
        _resolve(FastOptions(persistent=True, graphs=True), gpu)


def test_which_step_kernels_run():
    spec = ScanSpec("default", "lecun_tanh", 1)
    cpu = torch.device("cpu")
    # without a GPU (and outside the interpreter) fusing means torch.compile'd elementwise work
    assert step_kernels(spec, False, cpu, torch.float32).triton_precision is None
    with pytest.raises(ValueError, match="precision"):
        step_kernels(spec, True, cpu, torch.float32, precision="fp8")
    if torch.cuda.is_available() and triton_available():
        gpu = torch.device("cuda")
        assert step_kernels(spec, True, gpu, torch.float32).triton_precision == "tf32x3"
        persistent = step_kernels(spec, True, gpu, torch.float32, persistent=True)
        assert persistent.persistent and persistent.triton_precision == "ieee"
        assert step_kernels(spec, True, gpu, torch.float32, triton_gemms=False).triton_precision is None
        # what the Triton kernels do not cover keeps the compiled elementwise steps by itself
        for other, dtype in [(ScanSpec("pure", "lecun_tanh", 1), torch.float32),
                             (ScanSpec("default", "lecun_tanh", 2), torch.float32), (spec, torch.float64)]:
            assert step_kernels(other, True, gpu, dtype).triton_precision is None


def test_triton_step_kernels_need_an_ampere_or_newer_gpu(monkeypatch):
    """Older GPUs have no TF32 tensor cores: the scan keeps the compiled elementwise steps there."""
    pytest.importorskip("triton")
    from training.cores import cfc_triton

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    spec = ScanSpec("default", "lecun_tanh", 1)
    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert "Ampere" in cfc_triton.supports(spec, torch.float32, gpu)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert cfc_triton.supports(spec, torch.float32, gpu) is None
    assert "float32" in cfc_triton.supports(spec, torch.float64, gpu)
    assert "backbone layers" in cfc_triton.supports(ScanSpec("default", "lecun_tanh", 2), torch.float32, gpu)
    assert "pure" in cfc_triton.supports(ScanSpec("pure", "lecun_tanh", 1), torch.float32, gpu)
    assert "not on CUDA" in cfc_triton.supports(spec, torch.float32, torch.device("cpu"))


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
