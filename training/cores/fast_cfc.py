"""The ncps CfC cell over whole sequences, with a hand-written backward, for speed on GPUs.

Driving `CfCCell` one step at a time costs ~15 small kernels per step forward and as many autograd
nodes backward. This module computes the same function from the same `CfCCell` weights with:

1. the input half of the backbone's first Linear applied to all steps as one matmul before the loop
   (it does not depend on the state), so a step is one addmm against the state;
2. the heads (ff1, ff2, time_a, time_b) as one matmul on concatenated weights;
3. a scan with its own backward (`_CfCScan`): per step backward is two small matmuls and two
   elementwise passes; weight gradients are deferred and done as one large matmul per weight;
4. optionally, fused steps: for one backbone layer in float32, the whole layer handed to
   `cfc_persistent` (its own autograd function around one persistent Triton launch per scan each
   way; the CUDA default where its weight slices fit in registers, and the route when a launch is
   refused is everything below), or each step as two Triton GEMM kernels each way with the
   elementwise work inside (`cfc_triton`); for other cells, the elementwise work fused by
   `torch.compile` (needs Triton on GPU);
5. optionally, the forward and the backward loop over a chunk of steps each captured once as a CUDA
   graph, so one replay launches a chunk's kernels without Python in between.

Which of these runs is decided in one place, `cfc_route.choose_route`, from facts that
`route_facts` reads off the cell, the input and its device; `last_route(cell)` says what ran, and
each distinct shape's route is logged once (logger `training.cores.cfc_route`, INFO). Launch
settings (`FastOptions.tiles`, `.knobs`) are passed down to the kernels as arguments.

Layout inside the scan is time-major ([T, B, ...]) so each step reads a contiguous slice.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from training.cores import cfc_tuning
from training.cores.cfc_route import COMPILED, PERSISTENT, ROUTES, TRITON, FastOptions, Route, RouteFacts, choose_route
from training.cores.cfc_tuning import Tiles

LECUN_SCALE, LECUN_SLOPE = 1.7159, 0.666  # ncps's LeCun tanh: 1.7159 * tanh(0.666 x)

_ACTIVATIONS = {"LeCun": "lecun_tanh", "Tanh": "tanh", "ReLU": "relu", "SiLU": "silu", "GELU": "gelu"}

__all__ = ["FastOptions", "Route", "cfc_sequence", "route_for", "last_route", "unsupported_reason"]


@dataclass(frozen=True)
class ScanSpec:
    mode: str          # "default", "no_gate" or "pure"
    activation: str    # backbone activation name as ncps spells it
    layers: int        # backbone layers; 0 means the heads read [x, h] directly


@dataclass
class ScanWeights:
    """The recurrent part of the cell. w_h [U, H] is the state half of the first Linear."""

    w_h: torch.Tensor
    w_heads: torch.Tensor | None        # [heads, U_last]; None when layers == 0 (first Linear is the heads)
    b_heads: torch.Tensor | None
    pure_a: torch.Tensor | None         # [1, H], pure mode only
    pure_tau: torch.Tensor | None
    hidden: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # backbone layers 2..L as (weight, bias)

    def flat(self) -> list[torch.Tensor | None]:
        return [self.w_h, self.w_heads, self.b_heads, self.pure_a, self.pure_tau,
                *[p for layer in self.hidden for p in layer]]

    @classmethod
    def from_flat(cls, flat) -> "ScanWeights":
        rest = flat[5:]
        hidden = tuple((rest[i], rest[i + 1]) for i in range(0, len(rest), 2))
        return cls(*flat[:5], hidden)


# ----------------------------------------------------------------------------------------------
# Elementwise pieces of one step: pure functions, written so that torch.compile fuses each one.


def _act(kind: str) -> Callable:
    if kind == "lecun_tanh":
        return lambda z: LECUN_SCALE * torch.tanh(LECUN_SLOPE * z)
    if kind == "tanh":
        return torch.tanh
    if kind == "relu":
        return torch.relu
    if kind == "silu":
        return F.silu
    if kind == "gelu":
        return F.gelu
    raise ValueError(f"unknown activation {kind!r}")


def _act_grad(kind: str) -> Callable:
    """(z, g) -> g * act'(z)."""
    if kind == "lecun_tanh":
        def grad(z, g):
            t = torch.tanh(LECUN_SLOPE * z)
            return g * (LECUN_SCALE * LECUN_SLOPE) * (1.0 - t * t)
    elif kind == "tanh":
        def grad(z, g):
            t = torch.tanh(z)
            return g * (1.0 - t * t)
    elif kind == "relu":
        def grad(z, g):
            return torch.where(z > 0, g, torch.zeros_like(g))
    elif kind == "silu":
        def grad(z, g):
            s = torch.sigmoid(z)
            return g * s * (1.0 + z * (1.0 - s))
    elif kind == "gelu":
        def grad(z, g):
            cdf = 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0))))
            pdf = torch.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
            return g * (cdf + z * pdf)
    else:
        raise ValueError(f"unknown activation {kind!r}")
    return grad


def _gate(mode: str) -> Callable:
    """(y, dt, keep, h, a, tau) -> next state; padded steps (keep false) hold h."""

    def gate(y, dt, keep, h, a, tau):
        if mode == "pure":
            e = torch.exp(-dt * (torch.abs(tau) + torch.abs(y)))
            c = -a * e * y + a
        else:
            y1, y2, y3, y4 = y.chunk(4, dim=-1)
            f1, f2 = torch.tanh(y1), torch.tanh(y2)
            s = torch.sigmoid(y3 * dt + y4)
            c = f1 + s * f2 if mode == "no_gate" else f1 * (1.0 - s) + s * f2
        return c if keep is None else torch.where(keep, c, h)

    return gate


def _gate_grad(mode: str) -> Callable:
    """(y, dt, keep, g_out, carry, a, tau) -> (dy, dc, passthrough).

    g = g_out + carry is the gradient of the state after this step; dc is its share that reaches
    the new candidate state and passthrough the share that goes straight to the previous state.
    """

    def grad(y, dt, keep, g_out, carry, a, tau):
        g = g_out + carry
        if keep is None:
            dc, passthrough = g, None
        else:
            zero = torch.zeros_like(g)
            dc, passthrough = torch.where(keep, g, zero), torch.where(keep, zero, g)
        if mode == "pure":
            e = torch.exp(-dt * (torch.abs(tau) + torch.abs(y)))
            dy = dc * (-a * e * (1.0 - dt * torch.abs(y)))
            return dy, dc, passthrough
        y1, y2, y3, y4 = y.chunk(4, dim=-1)
        f1, f2 = torch.tanh(y1), torch.tanh(y2)
        s = torch.sigmoid(y3 * dt + y4)
        if mode == "no_gate":
            df1, ds = dc, dc * f2
        else:
            df1, ds = dc * (1.0 - s), dc * (f2 - f1)
        df2 = dc * s
        dq = ds * s * (1.0 - s)
        dy = torch.cat([df1 * (1.0 - f1 * f1), df2 * (1.0 - f2 * f2), dq * dt, dq], dim=-1)
        return dy, None, passthrough

    return grad


@dataclass(frozen=True)
class StepKernels:
    act: Callable
    act_grad: Callable
    gate: Callable
    gate_grad: Callable
    triton_precision: str | None = None  # set: each step is cfc_triton's fused GEMM kernels instead
    tiles: Tiles | None = None           # with triton_precision: their launch settings


_KERNELS: dict = {}
_KERNELS_LOCK = threading.Lock()


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def step_kernels(spec: ScanSpec, route: Route, device: torch.device, dtype: torch.dtype,
                 tiles: Tiles = Tiles()) -> StepKernels | None:
    """The step functions a step route names: cfc_triton's GEMM kernels (TRITON), the elementwise
    functions compiled (COMPILED; None when the compiled ones disagree with the eager ones here, or
    fail to build), else eager functions. Built once per key."""
    triton = route.kernels == TRITON
    key = (spec, route.kernels, route.precision, tiles if triton else None, device.type, dtype)
    with _KERNELS_LOCK:
        if key in _KERNELS:
            return _KERNELS[key]
    eager = StepKernels(_act(spec.activation), _act_grad(spec.activation), _gate(spec.mode), _gate_grad(spec.mode))
    kernels = eager
    if triton:
        kernels = StepKernels(eager.act, eager.act_grad, eager.gate, eager.gate_grad, route.precision, tiles)
    elif route.kernels == COMPILED:
        compiled = StepKernels(*(torch.compile(f, fullgraph=True, dynamic=True) for f in
                                 (eager.act, eager.act_grad, eager.gate, eager.gate_grad)))
        try:
            _self_test(spec, eager, compiled, device, dtype)
            kernels = compiled
        except Exception as err:  # a broken toolchain must cost speed, not correctness
            warnings.warn(f"fast CfC: torch.compile of the step kernels failed ({err!r}); using eager kernels")
            kernels = None
    with _KERNELS_LOCK:
        _KERNELS[key] = kernels
    return kernels


def _self_test(spec, eager: StepKernels, compiled: StepKernels, device, dtype) -> None:
    """Run each compiled kernel once against the eager one (this also compiles them before any capture)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    b, h = 3, 4
    heads = h if spec.mode == "pure" else 4 * h

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

    y, dt, hh, g, carry, z = rnd(b, heads), rnd(b, 1).abs(), rnd(b, h), rnd(b, h), rnd(b, h), rnd(b, h)
    keep = torch.tensor([True, False, True], device=device)[:, None]
    a, tau = rnd(1, h), rnd(1, h)
    tol = 1e-4 if dtype != torch.float64 else 1e-10
    for k in (None, keep):
        pairs = [(eager.gate(y, dt, k, hh, a, tau), compiled.gate(y, dt, k, hh, a, tau))]
        pairs += list(zip(eager.gate_grad(y, dt, k, g, carry, a, tau), compiled.gate_grad(y, dt, k, g, carry, a, tau)))
        pairs += [(eager.act(z), compiled.act(z)), (eager.act_grad(z, g), compiled.act_grad(z, g))]
        for want, got in pairs:
            if (want is None) != (got is None) or (want is not None and not torch.allclose(want, got, atol=tol, rtol=tol)):
                raise RuntimeError("compiled step kernel disagrees with the eager one")


# ----------------------------------------------------------------------------------------------
# The scan: forward and backward loops over time. Both run inside no-grad (autograd.Function).


@dataclass
class ScanTrace:
    hs: torch.Tensor                 # [T, B, H] states after each step (what the outputs are)
    zs: list[torch.Tensor]           # per backbone layer, pre-activations [T, B, U]
    y: torch.Tensor | None           # [T, B, heads] head pre-activations


@dataclass
class ScanGrads:
    u: torch.Tensor
    dt: torch.Tensor
    h0: torch.Tensor
    weights: list[torch.Tensor | None]


def _at(keep, t):
    return None if keep is None else keep[t]


def _ones_keep(like: torch.Tensor) -> torch.Tensor:
    return torch.ones(*like.shape[:2], 1, dtype=torch.bool, device=like.device)


def scan_forward(spec: ScanSpec, k: StepKernels, u, dt, keep, h0, w: ScanWeights, save: bool) -> ScanTrace:
    if k.triton_precision is not None:
        from training.cores import cfc_triton

        keep = _ones_keep(u) if keep is None else keep
        hs, z, y = cfc_triton.steps_forward(u, dt, keep, h0, w.w_h, w.w_heads, w.b_heads, spec.mode,
                                            spec.activation, k.triton_precision, k.tiles)
        return ScanTrace(hs, [z], y) if save else ScanTrace(hs, [], None)
    n = u.shape[0]
    w_h_t = w.w_h.t()
    hidden_t = [(wt.t(), b) for wt, b in w.hidden]
    w_heads_t = None if w.w_heads is None else w.w_heads.t()
    zs_steps: list[list] = [[] for _ in range(spec.layers)]
    ys, hs = [], []
    h = h0
    for t in range(n):
        z = torch.addmm(u[t], h, w_h_t)
        if spec.layers == 0:
            y = z
        else:
            if save:
                zs_steps[0].append(z)
            a = k.act(z)
            for i, (wt, b) in enumerate(hidden_t):
                z = torch.addmm(b, a, wt)
                if save:
                    zs_steps[i + 1].append(z)
                a = k.act(z)
            y = torch.addmm(w.b_heads, a, w_heads_t)
        h = k.gate(y, dt[t], _at(keep, t), h, w.pure_a, w.pure_tau)
        hs.append(h)
        if save:
            ys.append(y)
    hs_all = torch.stack(hs) if hs else h0.new_zeros(0, *h0.shape)
    if not save:
        return ScanTrace(hs_all, [], None)
    return ScanTrace(hs_all, [torch.stack(s) for s in zs_steps], torch.stack(ys))


@dataclass
class LoopGrads:
    """What the backward loop over time produces; weight gradients come after it, in bulk."""

    dy: torch.Tensor                 # [T, B, heads]
    dc: torch.Tensor | None          # [T, B, H] candidate-state gradients, pure mode only
    dzs: list[torch.Tensor]          # per backbone layer [T, B, U]
    carry: torch.Tensor              # [B, H] gradient of the state before the first step


def scan_backward_loop(spec: ScanSpec, k: StepKernels, zs, y, dt, keep, w: ScanWeights, grad_hs, carry) -> LoopGrads:
    if k.triton_precision is not None:
        from training.cores import cfc_triton

        keep = _ones_keep(grad_hs) if keep is None else keep
        dy, dz, carry = cfc_triton.steps_backward(grad_hs, carry, dt, keep, zs[0], y, w.w_h, w.w_heads, spec.mode,
                                                  spec.activation, k.triton_precision, k.tiles)
        return LoopGrads(dy, None, [dz], carry)
    n = grad_hs.shape[0]
    dys, dcs = [None] * n, [None] * n
    dzs = [[None] * n for _ in range(spec.layers)]
    for t in reversed(range(n)):
        dy, dc, passthrough = k.gate_grad(y[t], dt[t], _at(keep, t), grad_hs[t], carry, w.pure_a, w.pure_tau)
        dys[t], dcs[t] = dy, dc
        if spec.layers == 0:
            dz = dy
        else:
            da = dy @ w.w_heads
            for i in reversed(range(1, spec.layers)):
                dz = k.act_grad(zs[i][t], da)
                dzs[i][t] = dz
                da = dz @ w.hidden[i - 1][0]
            dz = k.act_grad(zs[0][t], da)
            dzs[0][t] = dz
        carry = dz @ w.w_h if passthrough is None else torch.addmm(passthrough, dz, w.w_h)
    dc_all = torch.stack(dcs) if spec.mode == "pure" else None
    return LoopGrads(torch.stack(dys), dc_all, [torch.stack(d) for d in dzs], carry)


def scan_backward_bulk(spec: ScanSpec, trace: ScanTrace, dt, h0, w: ScanWeights, lg: LoopGrads) -> ScanGrads:
    """Weight, time-span and input gradients for all steps at once: a few large matmuls and reductions."""
    act = _act(spec.activation)

    def flat(x):
        return x.reshape(-1, x.shape[-1])

    h_prev = torch.cat([h0[None], trace.hs[:-1]])
    if spec.layers == 0:
        du = lg.dy
        grads_heads = [None, None]
    else:
        du = lg.dzs[0]
        grads_heads = [flat(lg.dy).t() @ flat(act(trace.zs[-1])), lg.dy.sum((0, 1))]
    grad_w_h = flat(du).t() @ flat(h_prev)
    grad_hidden = []
    for i in range(1, spec.layers):
        grad_hidden += [flat(lg.dzs[i]).t() @ flat(act(trace.zs[i - 1])), lg.dzs[i].sum((0, 1))]

    y = trace.y
    grad_a = grad_tau = None
    if spec.mode == "pure":
        e = torch.exp(-dt * (torch.abs(w.pure_tau) + torch.abs(y)))
        afe = w.pure_a * y * e
        grad_dt = (lg.dc * afe * (torch.abs(w.pure_tau) + torch.abs(y))).sum(-1, keepdim=True)
        grad_a = (lg.dc * (1.0 - e * y)).sum((0, 1))[None]
        grad_tau = (lg.dc * afe * dt).sum((0, 1))[None] * torch.sign(w.pure_tau)
    else:
        hid = y.shape[-1] // 4
        grad_dt = (lg.dy[..., 3 * hid:] * y[..., 2 * hid:3 * hid]).sum(-1, keepdim=True)
    return ScanGrads(du, grad_dt, lg.carry, [grad_w_h, *grads_heads, grad_a, grad_tau, *grad_hidden])


def scan_backward(spec: ScanSpec, k: StepKernels, trace: ScanTrace, dt, keep, h0, w: ScanWeights, grad_hs) -> ScanGrads:
    lg = scan_backward_loop(spec, k, trace.zs, trace.y, dt, keep, w, grad_hs, torch.zeros_like(h0))
    return scan_backward_bulk(spec, trace, dt, h0, w, lg)


# ----------------------------------------------------------------------------------------------
# Runners: eager (any device) and CUDA-graphed (fixed chunks of steps, CUDA only).


class EagerRunner:
    def __init__(self, spec: ScanSpec, kernels: StepKernels):
        self.spec, self.kernels = spec, kernels

    def forward(self, u, dt, keep, h0, w, save) -> ScanTrace:
        return scan_forward(self.spec, self.kernels, u, dt, keep, h0, w, save)

    def backward(self, trace, dt, keep, h0, w, grad_hs) -> ScanGrads:
        return scan_backward(self.spec, self.kernels, trace, dt, keep, h0, w, grad_hs)


class ChunkGraphRunner:
    """The forward and the backward loop over `chunk` steps, each captured once as a CUDA graph.

    A sequence (padded to a multiple of `chunk` with held steps) is a series of replays that carry
    the state (forward) or its gradient (backward) from chunk to chunk. Graphs are keyed only by
    batch size and chunk length, so sequences of any length reuse them; what a replay writes is
    copied out at once, so activations saved for backward are ordinary tensors.
    """

    def __init__(self, spec: ScanSpec, kernels: StepKernels, chunk: int, batch: int, hidden: int,
                 u_width: int, w: ScanWeights, like: torch.Tensor):
        self.spec, self.kernels, self.chunk = spec, kernels, chunk
        self.s_u = like.new_zeros(chunk, batch, u_width)
        self.s_dt = like.new_zeros(chunk, batch, 1)
        self.s_keep = torch.ones(chunk, batch, 1, dtype=torch.bool, device=like.device)
        self.s_h = like.new_zeros(batch, hidden)
        self.s_grad = like.new_zeros(chunk, batch, hidden)
        self.s_carry = like.new_zeros(batch, hidden)
        self.s_w = [None if p is None else p.detach().clone() for p in w.flat()]
        sw = ScanWeights.from_flat(self.s_w)

        def fwd():
            return scan_forward(spec, kernels, self.s_u, self.s_dt, self.s_keep, self.s_h, sw, True)

        def bwd(trace):
            return scan_backward_loop(spec, kernels, trace.zs, trace.y, self.s_dt, self.s_keep, sw,
                                      self.s_grad, self.s_carry)

        self._fwd, self._bwd = fwd, bwd
        self.capture = like.device.type == "cuda"
        if not self.capture:  # CPU: same chunking, plain calls (so the chunk logic is testable anywhere)
            self.trace = fwd()
            self.loop = bwd(self.trace)
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuBLAS handles, compiled kernels, allocator
            for _ in range(2):
                bwd(fwd())
        torch.cuda.current_stream().wait_stream(side)
        self.g_fwd, self.g_bwd = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.g_fwd):
            self.trace = fwd()  # its outputs double as the backward graph's static inputs
        with torch.cuda.graph(self.g_bwd, pool=self.g_fwd.pool()):
            self.loop = bwd(self.trace)

    def _run_fwd(self):
        if self.capture:
            self.g_fwd.replay()
        else:
            self.trace = self._fwd()

    def _run_bwd(self):
        if self.capture:
            self.g_bwd.replay()
        else:
            self.loop = self._bwd(self.trace)

    def _load_weights(self, w: ScanWeights):
        for s, p in zip(self.s_w, w.flat()):
            if s is not None:
                s.copy_(p)

    def forward(self, u, dt, keep, h0, w, save) -> ScanTrace:
        k, n = self.chunk, u.shape[0]
        self._load_weights(w)
        hs = u.new_empty(n, *h0.shape)
        zs = [u.new_empty(n, *z.shape[1:]) for z in self.trace.zs] if save else []
        y = u.new_empty(n, *self.trace.y.shape[1:]) if save else None
        self.s_h.copy_(h0)
        for c in range(0, n, k):
            self.s_u.copy_(u[c:c + k])
            self.s_dt.copy_(dt[c:c + k])
            self.s_keep.copy_(keep[c:c + k])
            self._run_fwd()
            hs[c:c + k].copy_(self.trace.hs)
            if save:
                for dst, src in zip(zs, self.trace.zs):
                    dst[c:c + k].copy_(src)
                y[c:c + k].copy_(self.trace.y)
            self.s_h.copy_(self.trace.hs[-1])
        return ScanTrace(hs, zs, y)

    def backward(self, trace, dt, keep, h0, w, grad_hs) -> ScanGrads:
        k, n = self.chunk, grad_hs.shape[0]
        self._load_weights(w)
        dy = grad_hs.new_empty(n, *self.loop.dy.shape[1:])
        dc = None if self.loop.dc is None else grad_hs.new_empty(n, *self.loop.dc.shape[1:])
        dzs = [grad_hs.new_empty(n, *d.shape[1:]) for d in self.loop.dzs]
        self.s_carry.zero_()
        for c in reversed(range(0, n, k)):
            for dst, src in zip(self.trace.zs, trace.zs):
                dst.copy_(src[c:c + k])
            self.trace.y.copy_(trace.y[c:c + k])
            self.s_dt.copy_(dt[c:c + k])
            self.s_keep.copy_(keep[c:c + k])
            self.s_grad.copy_(grad_hs[c:c + k])
            self._run_bwd()
            dy[c:c + k].copy_(self.loop.dy)
            if dc is not None:
                dc[c:c + k].copy_(self.loop.dc)
            for dst, src in zip(dzs, self.loop.dzs):
                dst[c:c + k].copy_(src)
            self.s_carry.copy_(self.loop.carry)
        lg = LoopGrads(dy, dc, dzs, self.s_carry.clone())
        return scan_backward_bulk(self.spec, trace, dt, h0, w, lg)


_GRAPHS: OrderedDict = OrderedDict()
_GRAPHS_LOCK = threading.Lock()


def chunk_graph_runner(spec, kernels, chunk, u, h0, w: ScanWeights, cache_size: int) -> ChunkGraphRunner:
    batch, hidden = h0.shape
    key = (spec, kernels, chunk, batch, hidden, u.shape[-1], u.dtype, u.device,
           tuple(None if p is None else tuple(p.shape) for p in w.flat()))
    with _GRAPHS_LOCK:
        runner = _GRAPHS.get(key)
        if runner is not None:
            _GRAPHS.move_to_end(key)
            return runner
    with torch.no_grad():
        runner = ChunkGraphRunner(spec, kernels, chunk, batch, hidden, u.shape[-1], w, u)
    with _GRAPHS_LOCK:
        _GRAPHS[key] = runner
        while len(_GRAPHS) > max(cache_size, 1):
            _GRAPHS.popitem(last=False)
    return runner


class _CfCScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, runner, save, u, dt, keep, h0, *flat_w):
        # `save` comes from outside: inside forward grad mode is always off, and needs_input_grad is
        # true for parameters even under torch.no_grad, which made evaluation keep a full trace
        w = ScanWeights.from_flat(list(flat_w))
        trace = runner.forward(u, dt, keep, h0, w, save)
        ctx.runner, ctx.trace = runner, trace
        ctx.save_for_backward(dt, keep, h0, *flat_w)
        return trace.hs

    @staticmethod
    def backward(ctx, grad_hs):
        dt, keep, h0, *flat_w = ctx.saved_tensors
        w = ScanWeights.from_flat(flat_w)
        g = ctx.runner.backward(ctx.trace, dt, keep, h0, w, grad_hs.contiguous())
        need = ctx.needs_input_grad
        weights = [gw if need[6 + i] else None for i, gw in enumerate(g.weights)]
        return (None, None, g.u if need[2] else None, g.dt if need[3] else None, None,
                g.h0 if need[5] else None, *weights)


# ----------------------------------------------------------------------------------------------
# Public entry points.


def cell_spec(cell: nn.Module) -> ScanSpec:
    if cell.backbone_layers == 0:
        name = "lecun_tanh"  # unused without a backbone
    else:
        name = _ACTIVATIONS.get(type(cell.backbone[1]).__name__)
        if name is None:
            raise ValueError(f"fast CfC: unsupported backbone activation {type(cell.backbone[1]).__name__}")
    return ScanSpec(cell.mode, name, cell.backbone_layers)


def unsupported_reason(cell: nn.Module) -> str | None:
    """Why the fast path cannot compute exactly this cell's function now, or None when it can."""
    if cell.backbone_layers > 0:
        if type(cell.backbone[1]).__name__ not in _ACTIVATIONS:
            return f"backbone activation {type(cell.backbone[1]).__name__}"
        if cell.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in cell.backbone):
            return "backbone dropout in training mode"
    return None


def _heads(cell) -> tuple[tuple, tuple]:
    """The heads' weights and biases as the cell applies them: ff1, ff2 (masked where the wiring is
    sparse), time_a, time_b; ff1 alone in pure mode."""
    def masked(layer):
        return layer.weight if cell.sparsity_mask is None else layer.weight * cell.sparsity_mask

    if cell.mode == "pure":
        return (masked(cell.ff1),), (cell.ff1.bias,)
    return ((masked(cell.ff1), masked(cell.ff2), cell.time_a.weight, cell.time_b.weight),
            (cell.ff1.bias, cell.ff2.bias, cell.time_a.bias, cell.time_b.bias))


def _head_weights(cell) -> tuple[torch.Tensor, torch.Tensor]:
    """The heads as one weight [heads * H, U] and one bias."""
    weights, biases = _heads(cell)
    if len(weights) == 1:
        return weights[0], biases[0]
    return torch.cat(weights), torch.cat(biases)


def route_facts(cell: nn.Module, x: torch.Tensor) -> RouteFacts:
    """What the route for running `cell` over `x` depends on, read from the cell, the input and its device."""
    cuda = x.device.type == "cuda"
    props = torch.cuda.get_device_properties(x.device) if cuda else None
    cell_gap = unsupported_reason(cell)
    return RouteFacts(
        device_type=x.device.type, capability=(props.major, props.minor) if cuda else None,
        sm_count=props.multi_processor_count if cuda else None, interpreting=cfc_tuning.interpreting(),
        triton=triton_available(), hidden=cell.hidden_size,
        units=cell.backbone[0].out_features if cell.backbone_layers > 0 else 0,
        kernel_gap=None if cell_gap is not None else cfc_tuning.kernel_gap(cell_spec(cell), x.dtype),
        cell_gap=cell_gap)


def route_for(cell: nn.Module, x: torch.Tensor, options: FastOptions = FastOptions(),
              fast: bool | None = True) -> Route:
    """The route a sequence x takes through `cell` (fast: CfCCore's flag; see cfc_route.choose_route)."""
    return choose_route(route_facts(cell, x), options, fast)


def last_route(cell: nn.Module) -> Route | None:
    """The route the last sequence through `cell` ran (None before the first)."""
    return ROUTES.last(cell)


def record_route(cell: nn.Module, x: torch.Tensor, route: Route) -> None:
    """Note what ran: the cell's last route, and a log line the first time for this shape and route."""
    act = type(cell.backbone[1]).__name__ if cell.backbone_layers > 0 else "no backbone"
    units = cell.backbone[0].out_features if cell.backbone_layers > 0 else 0
    shape = (f"B={x.shape[0]} H={cell.hidden_size} U={units} {cell.mode} {act} x{cell.backbone_layers} "
             f"{str(x.dtype).removeprefix('torch.')} on {x.device}")
    ROUTES.record(cell, shape, route)


def cfc_sequence(
    cell: nn.Module,
    x: torch.Tensor,
    dt: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    options: FastOptions = FastOptions(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `cell` (an ncps CfCCell) over x [B, T, F] with time spans dt [B, T] or [B, T, 1] (1 when None)
    and mask [B, T] (true on real steps; padded steps hold the state). Returns (outputs [B, T, H],
    final state [B, H]), the same as driving the cell step by step. The route it took: `last_route(cell)`."""
    reason = unsupported_reason(cell)
    if reason is not None:
        raise ValueError(f"fast CfC cannot run this cell: {reason}")
    _check_shapes(cell, x, dt, mask, state)
    # The scan mixes its own dtypes; under autocast the matmuls would silently change precision.
    with torch.autocast(x.device.type, enabled=False):
        return _cfc_sequence(cell, x, dt, mask, state, options)


def _check_shapes(cell, x, dt, mask, state) -> None:
    """Shapes that disagree with x or the cell are the caller's mistake, said as such: the kernels
    read by shape and would otherwise use the wrong weights or read past a tensor's end."""
    if x.dim() != 3:
        raise ValueError(f"fast CfC: x must be [batch, steps, features], got shape {tuple(x.shape)}")
    b, n, features = x.shape
    hid = cell.hidden_size
    first = cell.backbone[0] if cell.backbone_layers > 0 else cell.ff1
    if features + hid != first.in_features:
        raise ValueError(f"fast CfC: x has {features} features per step; the cell takes {first.in_features - hid}")
    if dt is not None and tuple(dt.shape) not in ((b, n), (b, n, 1)):
        raise ValueError(f"fast CfC: dt must be [{b}, {n}] or [{b}, {n}, 1] like x, got {tuple(dt.shape)}")
    if mask is not None and tuple(mask.shape) != (b, n):
        raise ValueError(f"fast CfC: mask must be [{b}, {n}] like x, got {tuple(mask.shape)}")
    if state is not None and tuple(state.shape) != (b, hid):
        raise ValueError(f"fast CfC: state must be [{b}, {hid}] (batch, hidden), got {tuple(state.shape)}")


def _device(x: torch.Tensor):
    # kernels and graphs belong to the current device: make it the input's (under DDP, rank 1
    # computes on cuda:1 while the current device may still be cuda:0)
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _cfc_sequence(cell, x, dt, mask, state, options):
    b, n, _ = x.shape
    hid = cell.hidden_size
    if n == 0:
        return x.new_zeros(b, 0, hid), x.new_zeros(b, hid) if state is None else state
    spec = cell_spec(cell)
    facts = route_facts(cell, x)
    route = choose_route(facts, options)
    if route.kernels == PERSISTENT:  # the whole layer, projection and gradients included, in cfc_persistent
        from training.cores import cfc_persistent

        steps = choose_route(facts, options, persistent_refused=True)  # what takes over a refused launch
        with _device(x):
            first = cell.backbone[0]
            out = cfc_persistent.persistent_sequence(
                x, dt, mask, state, first.weight, first.bias, *_heads(cell), spec.mode, spec.activation,
                route.precision, knobs=options.knobs, steps_precision=steps.precision, steps_tiles=options.tiles)
        if out is not None:
            record_route(cell, x, route)
            return out, out[:, -1]
        route = steps
    kernels = step_kernels(spec, route, x.device, x.dtype, options.tiles)
    if kernels is None:
        route = choose_route(facts, options, compile_failed=True)
        kernels = step_kernels(spec, route, x.device, x.dtype, options.tiles)
    if state is None:
        state = x.new_zeros(b, hid)
    dt = x.new_ones(b, n, 1) if dt is None else (dt.unsqueeze(-1) if dt.dim() == 2 else dt)

    if spec.layers == 0:
        first_w, first_b = _head_weights(cell)
        heads_w = heads_b = None
        hidden = ()
    else:
        first = cell.backbone[0]
        first_w, first_b = first.weight, first.bias
        heads_w, heads_b = _head_weights(cell)
        linears = [m for m in cell.backbone if isinstance(m, nn.Linear)][1:]
        hidden = tuple((m.weight, m.bias) for m in linears)
    n_in = x.shape[-1]
    x_tm = x.transpose(0, 1)
    u = F.linear(x_tm, first_w[:, :n_in], first_b).contiguous()  # input half, all steps at once
    dt_tm = dt.transpose(0, 1).to(u.dtype).contiguous()
    keep = None if mask is None else mask.transpose(0, 1).to(torch.bool).unsqueeze(-1).contiguous()
    pure_a, pure_tau = (cell.A, cell.w_tau) if spec.mode == "pure" else (None, None)
    w = ScanWeights(first_w[:, n_in:], heads_w, heads_b, pure_a, pure_tau, hidden)

    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, dt_tm, state, *w.flat()))
    with _device(x):
        if route.graphs:
            hs = _graphed_scan(spec, kernels, options, save, u, dt_tm, keep, state, w)
        else:
            hs = _CfCScan.apply(EagerRunner(spec, kernels), save, u, dt_tm, keep, state, *w.flat())
    record_route(cell, x, route)
    return hs.transpose(0, 1), hs[-1]


def _graphed_scan(spec, kernels, options, save, u, dt_tm, keep, state, w):
    n = u.shape[0]
    chunk = max(options.graph_chunk, 1)
    pad = (-n) % chunk
    if keep is None:  # the captured graphs always take a mask
        keep = _ones_keep(u)
    if pad:  # extra steps are held, so the outputs up to n are unchanged
        u = F.pad(u, (0, 0, 0, 0, 0, pad))
        dt_tm = F.pad(dt_tm, (0, 0, 0, 0, 0, pad))
        keep = F.pad(keep, (0, 0, 0, 0, 0, pad), value=False)
    runner = chunk_graph_runner(spec, kernels, chunk, u, state, w, options.graph_cache)
    return _CfCScan.apply(runner, save, u, dt_tm, keep, state, *w.flat())[:n]
