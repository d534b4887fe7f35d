"""One CfC step as two Triton GEMMs with the elementwise work fused in, forward and backward.

A step of the scan (one backbone layer) is otherwise four kernels each way: a cuBLAS GEMM, an
elementwise pass, a second GEMM and a second elementwise pass. Inside a CUDA graph each of those
costs ~6 us at these sizes, mostly launch latency and cuBLAS's few large tiles (a [256, 512] output
is 8 CTAs of 128x128). Here each step is two kernels each way, on small tiles (16 batch rows) so
that even batch 256 spreads over ~64 CTAs:

    forward   backbone:  z = u_t + h @ W_h^T, a = act(z)                      (stores z, a)
              heads:     y = a @ W_heads^T + b, gate, hold masked rows        (stores y, h_t)
    backward  heads:     dy = gate'(y, g), dz = act'(z) * (dy @ W_heads)      (stores dy, dz)
              state:     carry = passthrough(g) + dz @ W_h                    (in place)

where g = grad_out_t + carry. Weight, time-span and input gradients stay bulk matmuls after the
loop (`fast_cfc.scan_backward_bulk`).

Scope: one backbone layer, modes "default" and "no_gate", float32 (`cfc_tuning.kernel_gap`); other
cells keep the other kernels. Matmuls use `tf32x3` (three TF32 tensor-core products: float32
accuracy; the suite holds the path to 1e-4 of the ncps cell over 336 steps); "tf32" is faster and
looser, "ieee" exact and slow.

On a CPU the kernels run under Triton's interpreter (`TRITON_INTERPRET=1` before import), which is
how the suite checks them without a GPU. Tile sizes come in as a `Tiles` argument (defaults in
`cfc_tuning`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from training.cores.cfc_tuning import ACT_CODES, MODE_CODES, Tiles


@triton.jit
def _tanh(x):
    # through exp of a non-positive argument: no overflow, and no libdevice (runs in the interpreter)
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == 0:
        return 1.7159 * _tanh(0.666 * z)
    elif ACT == 1:
        return _tanh(z)
    elif ACT == 2:
        return tl.maximum(z, 0.0)
    elif ACT == 3:
        return z * tl.sigmoid(z)
    else:
        return 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))


@triton.jit
def _act_grad(z, g, ACT: tl.constexpr):
    if ACT == 0:
        t = _tanh(0.666 * z)
        return g * (1.7159 * 0.666) * (1.0 - t * t)
    elif ACT == 1:
        t = _tanh(z)
        return g * (1.0 - t * t)
    elif ACT == 2:
        return tl.where(z > 0, g, 0.0)
    elif ACT == 3:
        s = tl.sigmoid(z)
        return g * s * (1.0 + z * (1.0 - s))
    else:
        cdf = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
        pdf = tl.exp(-0.5 * z * z) * 0.3989422804014327
        return g * (cdf + z * pdf)


@triton.jit
def _gate(y1, y2, y3, y4, dt, MODE: tl.constexpr):
    """The new state from the four heads' pre-activations (ff1, ff2, time_a, time_b)."""
    f1 = _tanh(y1)
    f2 = _tanh(y2)
    s = tl.sigmoid(y3 * dt + y4)
    if MODE == 0:
        c = f1 * (1.0 - s) + s * f2
    else:
        c = f1 + s * f2
    return c


@triton.jit
def _gate_grad(dc, y1, y2, y3, y4, dt, MODE: tl.constexpr):
    """Gradients of the four heads' pre-activations from dc, the gradient of the new state."""
    f1 = _tanh(y1)
    f2 = _tanh(y2)
    s = tl.sigmoid(y3 * dt + y4)
    if MODE == 0:
        df1 = dc * (1.0 - s)
        ds = dc * (f2 - f1)
    else:
        df1 = dc
        ds = dc * f2
    dq = ds * s * (1.0 - s)
    return df1 * (1.0 - f1 * f1), dc * s * (1.0 - f2 * f2), dq * dt, dq


@triton.jit
def _backbone_forward(u_ptr, h_ptr, w_ht_ptr, z_ptr, a_ptr, B, H, U,
                      ACT: tl.constexpr, PREC: tl.constexpr,
                      BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """z = u + h @ w_ht, a = act(z). u, z, a [B, U]; h [B, H]; w_ht [H, U]."""
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < B, cols < U
    ok = row_ok[:, None] & col_ok[None, :]
    acc = tl.load(u_ptr + rows[:, None] * U + cols[None, :], mask=ok, other=0.0)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < H
        h = tl.load(h_ptr + rows[:, None] * H + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ht_ptr + ks[:, None] * U + cols[None, :], mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.dot(h, w, input_precision=PREC)
    tl.store(z_ptr + rows[:, None] * U + cols[None, :], acc, mask=ok)
    tl.store(a_ptr + rows[:, None] * U + cols[None, :], _act(acc, ACT), mask=ok)


@triton.jit
def _heads_forward(a_ptr, w_yt_ptr, b_y_ptr, dt_ptr, keep_ptr, h_prev_ptr, y_ptr, h_ptr, B, H, U,
                   MODE: tl.constexpr, PREC: tl.constexpr,
                   BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y = a @ w_yt + b (four heads), h = gate(y) where keep else h_prev.
    a [B, U]; w_yt [U, 4H]; y [B, 4H]; dt [B]; keep [B] uint8; h_prev, h [B, H]."""
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < B, cols < H
    ok = row_ok[:, None] & col_ok[None, :]
    y1 = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32) + tl.load(b_y_ptr + cols, mask=col_ok, other=0.0)[None, :]
    y2 = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32) + tl.load(b_y_ptr + H + cols, mask=col_ok, other=0.0)[None, :]
    y3 = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32) + tl.load(b_y_ptr + 2 * H + cols, mask=col_ok, other=0.0)[None, :]
    y4 = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32) + tl.load(b_y_ptr + 3 * H + cols, mask=col_ok, other=0.0)[None, :]
    for k0 in range(0, U, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < U
        a = tl.load(a_ptr + rows[:, None] * U + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w_ok = k_ok[:, None] & col_ok[None, :]
        w = w_yt_ptr + ks[:, None] * (4 * H) + cols[None, :]
        y1 += tl.dot(a, tl.load(w, mask=w_ok, other=0.0), input_precision=PREC)
        y2 += tl.dot(a, tl.load(w + H, mask=w_ok, other=0.0), input_precision=PREC)
        y3 += tl.dot(a, tl.load(w + 2 * H, mask=w_ok, other=0.0), input_precision=PREC)
        y4 += tl.dot(a, tl.load(w + 3 * H, mask=w_ok, other=0.0), input_precision=PREC)
    dt = tl.load(dt_ptr + rows, mask=row_ok, other=0.0)[:, None]
    keep = tl.load(keep_ptr + rows, mask=row_ok, other=0)[:, None] != 0
    c = _gate(y1, y2, y3, y4, dt, MODE)
    h_prev = tl.load(h_prev_ptr + rows[:, None] * H + cols[None, :], mask=ok, other=0.0)
    tl.store(h_ptr + rows[:, None] * H + cols[None, :], tl.where(keep, c, h_prev), mask=ok)
    y = y_ptr + rows[:, None] * (4 * H) + cols[None, :]
    tl.store(y, y1, mask=ok)
    tl.store(y + H, y2, mask=ok)
    tl.store(y + 2 * H, y3, mask=ok)
    tl.store(y + 3 * H, y4, mask=ok)


@triton.jit
def _heads_backward(g_ptr, carry_ptr, y_ptr, dt_ptr, keep_ptr, w_y_ptr, z_ptr, dy_ptr, dz_ptr, B, H, U,
                    MODE: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """dy = gate'(y) applied to g = g_out + carry (masked rows: 0); dz = act'(z) * (dy @ w_y).
    The tile is (rows, backbone columns); dy is recomputed by every column tile, stored by the first.
    g, carry [B, H]; y, dy [B, 4H]; w_y [4H, U]; z, dz [B, U]."""
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < B, cols < U
    first = tl.program_id(1) == 0
    dt = tl.load(dt_ptr + rows, mask=row_ok, other=0.0)[:, None]
    keep = tl.load(keep_ptr + rows, mask=row_ok, other=0)[:, None] != 0
    da = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < H
        rk_ok = row_ok[:, None] & k_ok[None, :]
        g = tl.load(g_ptr + rows[:, None] * H + ks[None, :], mask=rk_ok, other=0.0)
        g += tl.load(carry_ptr + rows[:, None] * H + ks[None, :], mask=rk_ok, other=0.0)
        dc = tl.where(keep, g, 0.0)
        y = y_ptr + rows[:, None] * (4 * H) + ks[None, :]
        dy1, dy2, dy3, dq = _gate_grad(dc, tl.load(y, mask=rk_ok, other=0.0), tl.load(y + H, mask=rk_ok, other=0.0),
                                       tl.load(y + 2 * H, mask=rk_ok, other=0.0),
                                       tl.load(y + 3 * H, mask=rk_ok, other=0.0), dt, MODE)
        if first:
            dy = dy_ptr + rows[:, None] * (4 * H) + ks[None, :]
            tl.store(dy, dy1, mask=rk_ok)
            tl.store(dy + H, dy2, mask=rk_ok)
            tl.store(dy + 2 * H, dy3, mask=rk_ok)
            tl.store(dy + 3 * H, dq, mask=rk_ok)
        w_ok = k_ok[:, None] & col_ok[None, :]
        w = w_y_ptr + ks[:, None] * U + cols[None, :]
        da += tl.dot(dy1, tl.load(w, mask=w_ok, other=0.0), input_precision=PREC)
        da += tl.dot(dy2, tl.load(w + H * U, mask=w_ok, other=0.0), input_precision=PREC)
        da += tl.dot(dy3, tl.load(w + 2 * H * U, mask=w_ok, other=0.0), input_precision=PREC)
        da += tl.dot(dq, tl.load(w + 3 * H * U, mask=w_ok, other=0.0), input_precision=PREC)
    ok = row_ok[:, None] & col_ok[None, :]
    z = tl.load(z_ptr + rows[:, None] * U + cols[None, :], mask=ok, other=0.0)
    tl.store(dz_ptr + rows[:, None] * U + cols[None, :], _act_grad(z, da, ACT), mask=ok)


@triton.jit
def _state_backward(g_ptr, carry_ptr, keep_ptr, dz_ptr, w_h_ptr, B, H, U, PREC: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """carry <- (g_out + carry where the step was held, else 0) + dz @ w_h, in place: each tile
    reads and writes only its own elements. g, carry [B, H]; dz [B, U]; w_h [U, H]."""
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < B, cols < H
    ok = row_ok[:, None] & col_ok[None, :]
    keep = tl.load(keep_ptr + rows, mask=row_ok, other=0)[:, None] != 0
    g = tl.load(g_ptr + rows[:, None] * H + cols[None, :], mask=ok, other=0.0)
    g += tl.load(carry_ptr + rows[:, None] * H + cols[None, :], mask=ok, other=0.0)
    acc = tl.where(keep, 0.0, g)
    for k0 in range(0, U, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < U
        dz = tl.load(dz_ptr + rows[:, None] * U + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_h_ptr + ks[:, None] * H + cols[None, :], mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.dot(dz, w, input_precision=PREC)
    tl.store(carry_ptr + rows[:, None] * H + cols[None, :], acc, mask=ok)


def _grid(batch: int, width: int, tiles: Tiles) -> tuple[int, int]:
    return triton.cdiv(batch, tiles.block_b), triton.cdiv(width, tiles.block_n)


def _launch(tiles: Tiles) -> dict:
    return dict(BLOCK_B=tiles.block_b, BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
                num_warps=tiles.num_warps, num_stages=tiles.num_stages)


def steps_forward(u, dt, keep, h0, w_h, w_heads, b_heads, mode: str, activation: str, precision: str,
                  tiles: Tiles = Tiles()):
    """The forward scan as per-step launches, time-major: u [T, B, U], dt [T, B, 1], keep [T, B, 1]
    bool, h0 [B, H], w_h [U, H], w_heads [4H, U]. Returns (hs [T, B, H], z [T, B, U], y [T, B, 4H]);
    two launches per step."""
    n, b, units = u.shape
    hid = h0.shape[1]
    hs = u.new_empty(n, b, hid)
    z = u.new_empty(n, b, units)
    y = u.new_empty(n, b, 4 * hid)
    a = u.new_empty(b, units)
    u = u.contiguous()
    dt, keep = dt.contiguous(), keep.contiguous().view(torch.uint8)
    w_ht, w_yt, b_y = w_h.t().contiguous(), w_heads.t().contiguous(), b_heads.contiguous()
    h = h0.contiguous()
    act, gate = ACT_CODES[activation], MODE_CODES[mode]
    grid_u, grid_h, launch = _grid(b, units, tiles), _grid(b, hid, tiles), _launch(tiles)
    for t in range(n):
        _backbone_forward[grid_u](u[t], h, w_ht, z[t], a, b, hid, units, ACT=act, PREC=precision, **launch)
        _heads_forward[grid_h](a, w_yt, b_y, dt[t], keep[t], h, y[t], hs[t], b, hid, units, MODE=gate, PREC=precision,
                               **launch)
        h = hs[t]
    return hs, z, y


def steps_backward(grad_hs, carry, dt, keep, z, y, w_h, w_heads, mode: str, activation: str, precision: str,
                   tiles: Tiles = Tiles()):
    """The backward loop over time as per-step launches, time-major: returns (dy [T, B, 4H], dz [T, B, U],
    carry [B, H]); two launches per step. `carry` (the gradient arriving from after the last step) is
    updated in place and returned. Weight gradients are the caller's (bulk products after the loop)."""
    n, b, hid = grad_hs.shape
    units = z.shape[-1]
    dy = grad_hs.new_empty(n, b, 4 * hid)
    dz = grad_hs.new_empty(n, b, units)
    g, dt, keep = grad_hs.contiguous(), dt.contiguous(), keep.contiguous().view(torch.uint8)
    z, y, w_y, w_hc = z.contiguous(), y.contiguous(), w_heads.contiguous(), w_h.contiguous()
    act, gate = ACT_CODES[activation], MODE_CODES[mode]
    grid_u, grid_h, launch = _grid(b, units, tiles), _grid(b, hid, tiles), _launch(tiles)
    for t in reversed(range(n)):
        _heads_backward[grid_u](g[t], carry, y[t], dt[t], keep[t], w_y, z[t], dy[t], dz[t], b, hid, units,
                                MODE=gate, ACT=act, PREC=precision, **launch)
        _state_backward[grid_h](g[t], carry, keep[t], dz[t], w_hc, b, hid, units, PREC=precision, **launch)
    return dy, dz, carry
