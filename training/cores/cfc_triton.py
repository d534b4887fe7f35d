"""The CfC scan's loops over time as two persistent Triton kernels: one launch per sequence each way.

Inside a CUDA graph the chunked scan still pays about 7 us for each of ~10 small kernels per step
(two dependent cuBLAS GEMMs and their elementwise work, forward and backward). Here a program owns
`BLOCK_B` rows of the batch for the whole sequence: rows never interact in the recurrence, so no
program waits for another. Per step it computes the backbone (`u_t + h @ W_h^T`, activation), the
four heads and the gate from weights read through L2 (they are shared by all programs and small),
and writes the new state to the output, which the next step reads back after a block barrier. The
backward kernel walks the steps in reverse the same way and leaves the weight, time-span and input
gradients to the bulk matmuls of `fast_cfc.scan_backward_bulk`, as the other runners do.

Scope: one backbone layer, modes "default" and "no_gate", float32. Other cells use the other
runners. Matmuls use `tf32x3` (three TF32 tensor-core products), which keeps float32 accuracy
(the suite holds it to 1e-4 of the ncps cell over 336 steps); "tf32" is faster and looser, "ieee" exact
and slowest.

On a CPU the kernels run under Triton's interpreter (`TRITON_INTERPRET=1` before import), which is
how the suite checks them without a GPU.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

ACT_CODES = {"lecun_tanh": 0, "tanh": 1, "relu": 2, "silu": 3, "gelu": 4}
MODE_CODES = {"default": 0, "no_gate": 1}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def supports(spec, dtype: torch.dtype, device: torch.device) -> str | None:
    """Why these kernels cannot run this scan, or None when they can."""
    if spec.layers != 1:
        return f"{spec.layers} backbone layers (kernels handle exactly 1)"
    if spec.mode not in MODE_CODES:
        return f"mode {spec.mode!r}"
    if spec.activation not in ACT_CODES:
        return f"activation {spec.activation!r}"
    if dtype != torch.float32:
        return f"dtype {dtype} (kernels are float32)"
    if device.type != "cuda" and not interpreting():
        return "not on CUDA (set TRITON_INTERPRET=1 to run the kernels on CPU)"
    return None


@triton.jit
def _tanh(x):
    # tanh through exp of a non-positive argument: no overflow, no libdevice (runs in the interpreter)
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
def _scan_forward_kernel(
    u_ptr, dt_ptr, keep_ptr, hs_ptr, z_ptr, y_ptr, w_ht_ptr, w_yt_ptr, b_y_ptr,
    T, B, H, U,
    SAVE: tl.constexpr, MODE: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, U_P: tl.constexpr,
):
    """hs [T+1, B, H] holds h0 in hs[0] and receives the state after each step in hs[t+1].

    u [T, B, U] is the input half of the backbone (bias included); w_ht [H, U] and w_yt [U, 4H] are
    the transposed state half of the backbone and the four heads; z [T, B, U] and y [T, B, 4H]
    (pre-activations, kept for backward) are written only when SAVE.
    """
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_ok = rows < B
    ucol = tl.arange(0, U_P)
    u_ok = ucol < U
    ru_ok = row_ok[:, None] & u_ok[None, :]
    for t in range(T):
        base = t * B + rows                       # [BLOCK_B] row index into [T, B, ...] tensors
        acc = tl.load(u_ptr + base[:, None] * U + ucol[None, :], mask=ru_ok, other=0.0)
        for k0 in range(0, H, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < H
            h_k = tl.load(hs_ptr + base[:, None] * H + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w_k = tl.load(w_ht_ptr + ks[:, None] * U + ucol[None, :], mask=k_ok[:, None] & u_ok[None, :], other=0.0)
            acc += tl.dot(h_k, w_k, input_precision=PREC)
        if SAVE:
            tl.store(z_ptr + base[:, None] * U + ucol[None, :], acc, mask=ru_ok)
        a = _act(acc, ACT)                        # padded columns: act(0) = 0 and their weights are 0
        dt = tl.load(dt_ptr + base, mask=row_ok, other=0.0)[:, None]
        keep = tl.load(keep_ptr + base, mask=row_ok, other=0)[:, None] != 0
        nxt = base + B
        for n0 in range(0, H, BLOCK_N):
            ns = n0 + tl.arange(0, BLOCK_N)
            n_ok = ns < H
            rn_ok = row_ok[:, None] & n_ok[None, :]
            w_ok = u_ok[:, None] & n_ok[None, :]
            w_col = w_yt_ptr + ucol[:, None] * (4 * H) + ns[None, :]
            y1 = tl.dot(a, tl.load(w_col, mask=w_ok, other=0.0), input_precision=PREC)
            y2 = tl.dot(a, tl.load(w_col + H, mask=w_ok, other=0.0), input_precision=PREC)
            y3 = tl.dot(a, tl.load(w_col + 2 * H, mask=w_ok, other=0.0), input_precision=PREC)
            y4 = tl.dot(a, tl.load(w_col + 3 * H, mask=w_ok, other=0.0), input_precision=PREC)
            y1 += tl.load(b_y_ptr + ns, mask=n_ok, other=0.0)[None, :]
            y2 += tl.load(b_y_ptr + H + ns, mask=n_ok, other=0.0)[None, :]
            y3 += tl.load(b_y_ptr + 2 * H + ns, mask=n_ok, other=0.0)[None, :]
            y4 += tl.load(b_y_ptr + 3 * H + ns, mask=n_ok, other=0.0)[None, :]
            f1 = _tanh(y1)
            f2 = _tanh(y2)
            s = tl.sigmoid(y3 * dt + y4)
            if MODE == 0:
                c = f1 * (1.0 - s) + s * f2
            else:
                c = f1 + s * f2
            h_prev = tl.load(hs_ptr + base[:, None] * H + ns[None, :], mask=rn_ok, other=0.0)
            tl.store(hs_ptr + nxt[:, None] * H + ns[None, :], tl.where(keep, c, h_prev), mask=rn_ok)
            if SAVE:
                y_row = y_ptr + base[:, None] * (4 * H) + ns[None, :]
                tl.store(y_row, y1, mask=rn_ok)
                tl.store(y_row + H, y2, mask=rn_ok)
                tl.store(y_row + 2 * H, y3, mask=rn_ok)
                tl.store(y_row + 3 * H, y4, mask=rn_ok)
        # the next step reads the state columns that other threads of this program just wrote
        tl.debug_barrier()


@triton.jit
def _scan_backward_kernel(
    g_ptr, dt_ptr, keep_ptr, z_ptr, y_ptr, w_y_ptr, w_h_ptr, dh_ptr, dy_ptr, dz_ptr,
    T, B, H, U,
    MODE: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, U_P: tl.constexpr,
):
    """dh [T+1, B, H]: dh[T] is zero on entry; dh[t] receives the gradient of the state before step t.

    g [T, B, H] is the gradient of the outputs; w_y [4H, U] and w_h [U, H] the untransposed weights.
    Writes dy [T, B, 4H] (heads pre-activations) and dz [T, B, U] (backbone pre-activation).
    """
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_ok = rows < B
    ucol = tl.arange(0, U_P)
    u_ok = ucol < U
    ru_ok = row_ok[:, None] & u_ok[None, :]
    for i in range(T):
        t = T - 1 - i
        base = t * B + rows
        nxt = base + B
        dt = tl.load(dt_ptr + base, mask=row_ok, other=0.0)[:, None]
        keep = tl.load(keep_ptr + base, mask=row_ok, other=0)[:, None] != 0
        da = tl.zeros([BLOCK_B, U_P], dtype=tl.float32)
        for n0 in range(0, H, BLOCK_N):
            ns = n0 + tl.arange(0, BLOCK_N)
            n_ok = ns < H
            rn_ok = row_ok[:, None] & n_ok[None, :]
            g = tl.load(g_ptr + base[:, None] * H + ns[None, :], mask=rn_ok, other=0.0)
            g += tl.load(dh_ptr + nxt[:, None] * H + ns[None, :], mask=rn_ok, other=0.0)
            dc = tl.where(keep, g, 0.0)
            y_row = y_ptr + base[:, None] * (4 * H) + ns[None, :]
            f1 = _tanh(tl.load(y_row, mask=rn_ok, other=0.0))
            f2 = _tanh(tl.load(y_row + H, mask=rn_ok, other=0.0))
            s = tl.sigmoid(tl.load(y_row + 2 * H, mask=rn_ok, other=0.0) * dt + tl.load(y_row + 3 * H, mask=rn_ok, other=0.0))
            if MODE == 0:
                df1 = dc * (1.0 - s)
                ds = dc * (f2 - f1)
            else:
                df1 = dc
                ds = dc * f2
            dq = ds * s * (1.0 - s)
            dy1 = df1 * (1.0 - f1 * f1)
            dy2 = dc * s * (1.0 - f2 * f2)
            dy3 = dq * dt
            dy_row = dy_ptr + base[:, None] * (4 * H) + ns[None, :]
            tl.store(dy_row, dy1, mask=rn_ok)
            tl.store(dy_row + H, dy2, mask=rn_ok)
            tl.store(dy_row + 2 * H, dy3, mask=rn_ok)
            tl.store(dy_row + 3 * H, dq, mask=rn_ok)
            w_ok = n_ok[:, None] & u_ok[None, :]
            w_row = w_y_ptr + ns[:, None] * U + ucol[None, :]
            da += tl.dot(dy1, tl.load(w_row, mask=w_ok, other=0.0), input_precision=PREC)
            da += tl.dot(dy2, tl.load(w_row + H * U, mask=w_ok, other=0.0), input_precision=PREC)
            da += tl.dot(dy3, tl.load(w_row + 2 * H * U, mask=w_ok, other=0.0), input_precision=PREC)
            da += tl.dot(dq, tl.load(w_row + 3 * H * U, mask=w_ok, other=0.0), input_precision=PREC)
        z = tl.load(z_ptr + base[:, None] * U + ucol[None, :], mask=ru_ok, other=0.0)
        dz = _act_grad(z, da, ACT)
        tl.store(dz_ptr + base[:, None] * U + ucol[None, :], dz, mask=ru_ok)
        for n0 in range(0, H, BLOCK_N):
            ns = n0 + tl.arange(0, BLOCK_N)
            n_ok = ns < H
            rn_ok = row_ok[:, None] & n_ok[None, :]
            g = tl.load(g_ptr + base[:, None] * H + ns[None, :], mask=rn_ok, other=0.0)
            g += tl.load(dh_ptr + nxt[:, None] * H + ns[None, :], mask=rn_ok, other=0.0)
            w = tl.load(w_h_ptr + ucol[:, None] * H + ns[None, :], mask=u_ok[:, None] & n_ok[None, :], other=0.0)
            dh = tl.where(keep, 0.0, g) + tl.dot(dz, w, input_precision=PREC)
            tl.store(dh_ptr + base[:, None] * H + ns[None, :], dh, mask=rn_ok)
        # the previous step reads the gradient columns that other threads of this program just wrote
        tl.debug_barrier()


def _blocks(batch: int, block_b: int | None) -> tuple[int, int]:
    # 16 rows is tl.dot's smallest M; 32 halves the weight traffic per row once there are enough
    # rows to keep the SMs busy anyway
    if block_b is None:
        block_b = 16 if batch <= 16 * 132 else 32
    return block_b, triton.cdiv(batch, block_b)


def _u_pad(units: int) -> int:
    return max(16, triton.next_power_of_2(units))


def scan_forward(u, dt, keep, h0, w_h, w_heads, b_heads, mode: str, activation: str, save: bool,
                 precision: str = "tf32x3", block_b: int | None = None):
    """u [T, B, U], dt [T, B, 1], keep [T, B, 1] bool, h0 [B, H], w_h [U, H], w_heads [4H, U].

    Returns (hs [T, B, H], z [T, B, U] or None, y [T, B, 4H] or None)."""
    n, b, units = u.shape
    hid = h0.shape[1]
    hs = u.new_empty(n + 1, b, hid)
    hs[0] = h0
    z = u.new_empty(n, b, units) if save else hs
    y = u.new_empty(n, b, 4 * hid) if save else hs
    block_b, grid = _blocks(b, block_b)
    _scan_forward_kernel[(grid,)](
        u.contiguous(), dt.contiguous(), keep.contiguous().view(torch.uint8), hs, z, y,
        w_h.t().contiguous(), w_heads.t().contiguous(), b_heads.contiguous(),
        n, b, hid, units,
        SAVE=save, MODE=MODE_CODES[mode], ACT=ACT_CODES[activation], PREC=precision,
        BLOCK_B=block_b, BLOCK_K=32, BLOCK_N=32, U_P=_u_pad(units), num_warps=4,
    )
    return hs[1:], (z if save else None), (y if save else None)


def scan_backward(grad_hs, dt, keep, z, y, w_h, w_heads, mode: str, activation: str,
                  precision: str = "tf32x3", block_b: int | None = None):
    """The loop over time of the backward pass. Returns (dy [T, B, 4H], dz [T, B, U], carry [B, H])."""
    n, b, hid = grad_hs.shape
    units = z.shape[-1]
    dh = grad_hs.new_empty(n + 1, b, hid)
    dh[n] = 0
    dy = grad_hs.new_empty(n, b, 4 * hid)
    dz = grad_hs.new_empty(n, b, units)
    block_b, grid = _blocks(b, block_b)
    _scan_backward_kernel[(grid,)](
        grad_hs.contiguous(), dt.contiguous(), keep.contiguous().view(torch.uint8), z.contiguous(), y.contiguous(),
        w_heads.contiguous(), w_h.contiguous(), dh, dy, dz,
        n, b, hid, units,
        MODE=MODE_CODES[mode], ACT=ACT_CODES[activation], PREC=precision,
        BLOCK_B=block_b, BLOCK_N=32, U_P=_u_pad(units), num_warps=4,
    )
    return dy, dz, dh[0]
