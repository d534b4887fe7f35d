"""The whole CfC scan as one Triton launch each way, columns split across programs that meet each phase.

The step kernels (`cfc_triton`) pay a kernel boundary for every phase of every step. Here one
launch runs all T steps. The batch is cut into blocks of rows (rows never interact in the
recurrence); each row block is served by `columns` programs, each owning a slice of the state's
columns and of the backbone units, and holding the matching weight slices in registers for the
whole scan (where they fit: `Plan.hold`; otherwise re-read each step from L1/L2). The programs of a
row block meet at a barrier (an atomic counter in global memory, one per row block) whenever the
next phase needs what the others wrote:

    forward, per step (two barriers):
        own units:     z = u_t + h_{t-1} @ W_h^T, a = act(z)          (stores z, a)
        barrier        (a complete)
        own columns:   y = a @ W_heads^T + b for the four heads, gate, hold masked rows -> h_t
        barrier        (h_t complete)
    backward, per step in reverse (two barriers):
        own columns:   g = grad_out_t + carry (carry kept in registers), gate gradient -> dy
        barrier        (dy complete)
        own units:     dz = act'(z) * (dy @ W_heads)
        barrier        (dz complete)
        own columns:   carry = passthrough(g) + dz @ W_h

Weight, time-span and input gradients stay bulk matmuls after the loop (`fast_cfc`).

The barrier needs every program of a row block resident at once, so the grid is kept within one
program per SM and launched cooperatively (the driver refuses a grid that cannot be co-resident
instead of letting it hang); larger batches run as several launches over slices of rows. Under
Triton's interpreter programs run one after another, so there a row block gets one program that
owns all columns and never waits: the same arithmetic without the barrier, which is what the CPU
suite checks. Every exchanged tensor has its own buffer per step (the activation a alternates
between two) and is read through L2 only (`.cg`), so no program can see a stale copy.

Products default to `ieee` (float32 FMAs) here: with a program's slice as small as [16, 128] x
[128, 16] they measured as fast as `tf32x3` at H=128 and, unlike it, did not spill at H=256
(bench/NOTES.md).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from training.cores import cfc_triton
from training.cores.cfc_triton import ACT_CODES, MODE_CODES, _act, _act_grad, _gate, _gate_grad, interpreting


@dataclass(frozen=True)
class Knobs:
    """What a GPU launch may be tuned by; bench/cfc_step_tiles.py sweeps them."""

    columns: int = 8              # programs per row block (fewer when the state is narrower than 16 each)
    num_warps: int | None = None  # None: 4, or 8 where 4 would not hold the weight slices
    num_stages: int = 2
    hold: bool | None = None      # weights in registers for the whole scan; None: where they fit


HOLD_FLOATS = 80  # weight floats per thread a program can hold without spilling (measured: 160 spills badly)
KNOBS = Knobs()  # read at each launch


@dataclass(frozen=True)
class Plan:
    """How one launch splits the work: block_b rows x block_h state columns per program."""

    block_b: int        # rows per program (tl.dot's M: at least 16)
    block_h: int        # state columns per program; columns = ceil(H / block_h) programs per row block
    block_u: int        # backbone units per program in the backward's dz phase
    columns: int
    rows_per_launch: int
    num_warps: int = 4
    num_stages: int = 2
    hold: bool = False


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def plan(batch: int, hidden: int, units: int, device: torch.device, knobs: Knobs | None = None) -> Plan:
    k = knobs or KNOBS
    if interpreting() or device.type != "cuda":
        # one program per row block: no barrier (the interpreter runs programs one at a time)
        return Plan(16, max(16, _pow2(hidden)), max(16, _pow2(units)), 1, max(batch, 1), hold=k.hold is not False)
    n_sm = torch.cuda.get_device_properties(device).multi_processor_count
    block_h = max(16, _pow2(triton.cdiv(hidden, k.columns)))
    cols = triton.cdiv(hidden, block_h)
    block_u = max(16, _pow2(triton.cdiv(units, cols)))
    block_b = 16
    while triton.cdiv(batch, block_b) * cols > n_sm and block_b < 64:
        block_b *= 2  # more rows per program before more launches
    row_blocks = max(n_sm // cols, 1)
    hp, up = max(16, _pow2(hidden)), max(16, _pow2(units))
    floats = max(hp * block_u + 4 * up * block_h, 4 * hp * block_u + up * block_h)  # forward, backward slices
    warps = k.num_warps or (4 if floats <= HOLD_FLOATS * 32 * 4 else 8)
    hold = k.hold if k.hold is not None else floats <= HOLD_FLOATS * 32 * warps
    return Plan(block_b, block_h, block_u, cols, row_blocks * block_b, warps, k.num_stages, hold)


def chosen_for(hidden: int, units: int, device: torch.device) -> bool:
    """Whether the persistent kernels are the default for these widths: only where each program
    holds its weight slices in registers. Re-reading them, or holding more than fits, measured
    slower than the per-step kernels (bench/NOTES.md)."""
    return plan(256, hidden, units, device, Knobs()).hold


COUNTER_STRIDE = tl.constexpr(32)  # int32s between row blocks' counters: one 128-byte line each


@triton.jit
def _meet(counter_ptr, target):
    """Wait until `target` arrivals at this row block's counter, counting this program's."""
    tl.debug_barrier()  # this program's stores are issued before it announces them
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    # poll with plain loads: read-modify-writes from every waiting program would queue at the
    # counter's L2 slice behind (and ahead of) the arrivals
    seen = tl.load(counter_ptr, volatile=True)
    while seen < target:
        seen = tl.load(counter_ptr, volatile=True)
    tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")  # the others' writes happen-before our reads
    tl.debug_barrier()


@triton.jit
def _sync(counter_ptr, target, COLS: tl.constexpr):
    """Between phases: the row block's programs meet (COLS > 1), or this program's threads do."""
    if COLS > 1:
        _meet(counter_ptr, target)
    else:
        tl.debug_barrier()


@triton.jit
def _forward(u_ptr, dt_ptr, keep_ptr, hs_ptr, a_ptr, w_ht_ptr, w_yt_ptr, b_y_ptr, z_ptr, y_ptr, counter_ptr,
             T, B, H, U, ROW0, ROW_END,
             ACT: tl.constexpr, MODE: tl.constexpr, PREC: tl.constexpr, COLS: tl.constexpr,
             BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_U: tl.constexpr,
             HP: tl.constexpr, UP: tl.constexpr, HOLD: tl.constexpr, SAVE: tl.constexpr):
    """hs [T+1, B, H] with hs[0] = h0 on entry; a [2, B, U] scratch; u, z [T, B, U]; y [T, B, 4H];
    dt [T, B]; keep [T, B] u8; w_ht [H, U]; w_yt [U, 4H]; b_y [4H]. HP, UP: H, U rounded up to powers
    of 2. SAVE: store z and y for the backward (else they are not touched)."""
    pid_c = tl.program_id(1)
    rows = (ROW0 + tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = pid_c * BLOCK_H + tl.arange(0, BLOCK_H)
    units = pid_c * BLOCK_U + tl.arange(0, BLOCK_U)
    hk, uk = tl.arange(0, HP), tl.arange(0, UP)
    row_ok, col_ok, unit_ok, hk_ok, uk_ok = rows < ROW_END, cols < H, units < U, hk < H, uk < U
    ok, ok_u = row_ok[:, None] & col_ok[None, :], row_ok[:, None] & unit_ok[None, :]
    w_hp = w_ht_ptr + hk[:, None] * U + units[None, :]
    wh_ok = hk_ok[:, None] & unit_ok[None, :]
    w_y = w_yt_ptr + uk[:, None] * (4 * H) + cols[None, :]
    w_ok = uk_ok[:, None] & col_ok[None, :]
    if HOLD:  # this program's weight slices, read once for the whole scan
        w_h = tl.load(w_hp, mask=wh_ok, other=0.0)
        w1 = tl.load(w_y, mask=w_ok, other=0.0)
        w2 = tl.load(w_y + H, mask=w_ok, other=0.0)
        w3 = tl.load(w_y + 2 * H, mask=w_ok, other=0.0)
        w4 = tl.load(w_y + 3 * H, mask=w_ok, other=0.0)
    b1 = tl.load(b_y_ptr + cols, mask=col_ok, other=0.0)[None, :]
    b2 = tl.load(b_y_ptr + H + cols, mask=col_ok, other=0.0)[None, :]
    b3 = tl.load(b_y_ptr + 2 * H + cols, mask=col_ok, other=0.0)[None, :]
    b4 = tl.load(b_y_ptr + 3 * H + cols, mask=col_ok, other=0.0)[None, :]
    h_own = tl.load(hs_ptr + rows[:, None] * H + cols[None, :], mask=ok, other=0.0)
    counter = counter_ptr + tl.program_id(0) * COUNTER_STRIDE
    for t in range(T):
        # backbone: this program's units, from the whole previous state
        h = tl.load(hs_ptr + (t * B + rows[:, None]) * H + hk[None, :], mask=row_ok[:, None] & hk_ok[None, :],
                    other=0.0, cache_modifier=".cg")
        z = tl.load(u_ptr + (t * B + rows[:, None]) * U + units[None, :], mask=ok_u, other=0.0)
        if not HOLD:  # re-read each step (from L1/L2): fewer registers for wide layers
            w_h = tl.load(w_hp, mask=wh_ok, other=0.0)
        z += tl.dot(h, w_h, input_precision=PREC)
        if SAVE:
            tl.store(z_ptr + (t * B + rows[:, None]) * U + units[None, :], z, mask=ok_u)
        a_t = a_ptr + ((t % 2) * B + rows[:, None]) * U
        tl.store(a_t + units[None, :], _act(z, ACT), mask=ok_u)
        _sync(counter, COLS * (2 * t + 1), COLS)
        # heads: this program's state columns, from all backbone units
        a = tl.load(a_t + uk[None, :], mask=row_ok[:, None] & uk_ok[None, :], other=0.0, cache_modifier=".cg")
        if not HOLD:
            w1 = tl.load(w_y, mask=w_ok, other=0.0)
            w2 = tl.load(w_y + H, mask=w_ok, other=0.0)
            w3 = tl.load(w_y + 2 * H, mask=w_ok, other=0.0)
            w4 = tl.load(w_y + 3 * H, mask=w_ok, other=0.0)
        y1 = tl.dot(a, w1, input_precision=PREC) + b1
        y2 = tl.dot(a, w2, input_precision=PREC) + b2
        y3 = tl.dot(a, w3, input_precision=PREC) + b3
        y4 = tl.dot(a, w4, input_precision=PREC) + b4
        dt = tl.load(dt_ptr + t * B + rows, mask=row_ok, other=0.0)[:, None]
        keep = tl.load(keep_ptr + t * B + rows, mask=row_ok, other=0)[:, None] != 0
        h_own = tl.where(keep, _gate(y1, y2, y3, y4, dt, MODE), h_own)
        tl.store(hs_ptr + ((t + 1) * B + rows[:, None]) * H + cols[None, :], h_own, mask=ok)
        if SAVE:
            y = y_ptr + (t * B + rows[:, None]) * (4 * H) + cols[None, :]
            tl.store(y, y1, mask=ok)
            tl.store(y + H, y2, mask=ok)
            tl.store(y + 2 * H, y3, mask=ok)
            tl.store(y + 3 * H, y4, mask=ok)
        _sync(counter, COLS * (2 * t + 2), COLS)


@triton.jit
def _backward(g_ptr, carry_ptr, y_ptr, z_ptr, dt_ptr, keep_ptr, w_y_ptr, w_h_ptr, dy_ptr, dz_ptr, counter_ptr,
              T, B, H, U, ROW0, ROW_END,
              ACT: tl.constexpr, MODE: tl.constexpr, PREC: tl.constexpr, COLS: tl.constexpr,
              BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_U: tl.constexpr,
              HP: tl.constexpr, UP: tl.constexpr, HOLD: tl.constexpr):
    """g [T, B, H] output gradients; carry [B, H] in: gradient after the last step, out: before the
    first; y, dy [T, B, 4H]; z, dz [T, B, U]; w_y [4H, U]; w_h [U, H]."""
    pid_c = tl.program_id(1)
    rows = (ROW0 + tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = pid_c * BLOCK_H + tl.arange(0, BLOCK_H)
    units = pid_c * BLOCK_U + tl.arange(0, BLOCK_U)
    hk, uk = tl.arange(0, HP), tl.arange(0, UP)
    row_ok, col_ok, unit_ok, hk_ok, uk_ok = rows < ROW_END, cols < H, units < U, hk < H, uk < U
    ok, ok_u = row_ok[:, None] & col_ok[None, :], row_ok[:, None] & unit_ok[None, :]
    ok_hk, ok_uk = row_ok[:, None] & hk_ok[None, :], row_ok[:, None] & uk_ok[None, :]
    w_y = w_y_ptr + hk[:, None] * U + units[None, :]
    wy_ok = hk_ok[:, None] & unit_ok[None, :]
    w_hp = w_h_ptr + uk[:, None] * H + cols[None, :]
    wh_ok = uk_ok[:, None] & col_ok[None, :]
    if HOLD:
        wy1 = tl.load(w_y, mask=wy_ok, other=0.0)
        wy2 = tl.load(w_y + H * U, mask=wy_ok, other=0.0)
        wy3 = tl.load(w_y + 2 * H * U, mask=wy_ok, other=0.0)
        wy4 = tl.load(w_y + 3 * H * U, mask=wy_ok, other=0.0)
        w_h = tl.load(w_hp, mask=wh_ok, other=0.0)
    carry = tl.load(carry_ptr + rows[:, None] * H + cols[None, :], mask=ok, other=0.0)
    counter = counter_ptr + tl.program_id(0) * COUNTER_STRIDE
    for i in range(T):
        t = T - 1 - i
        # gate gradient for this program's state columns
        g = tl.load(g_ptr + (t * B + rows[:, None]) * H + cols[None, :], mask=ok, other=0.0) + carry
        dt = tl.load(dt_ptr + t * B + rows, mask=row_ok, other=0.0)[:, None]
        keep = tl.load(keep_ptr + t * B + rows, mask=row_ok, other=0)[:, None] != 0
        dc = tl.where(keep, g, 0.0)
        y = y_ptr + (t * B + rows[:, None]) * (4 * H) + cols[None, :]
        dy1, dy2, dy3, dq = _gate_grad(dc, tl.load(y, mask=ok, other=0.0), tl.load(y + H, mask=ok, other=0.0),
                                       tl.load(y + 2 * H, mask=ok, other=0.0), tl.load(y + 3 * H, mask=ok, other=0.0),
                                       dt, MODE)
        dy = dy_ptr + (t * B + rows[:, None]) * (4 * H)
        tl.store(dy + cols[None, :], dy1, mask=ok)
        tl.store(dy + H + cols[None, :], dy2, mask=ok)
        tl.store(dy + 2 * H + cols[None, :], dy3, mask=ok)
        tl.store(dy + 3 * H + cols[None, :], dq, mask=ok)
        _sync(counter, COLS * (2 * i + 1), COLS)
        # dz for this program's backbone units, from the whole of dy's row
        if HOLD:
            d1 = tl.load(dy + hk[None, :], mask=ok_hk, other=0.0, cache_modifier=".cg")
            d2 = tl.load(dy + H + hk[None, :], mask=ok_hk, other=0.0, cache_modifier=".cg")
            d3 = tl.load(dy + 2 * H + hk[None, :], mask=ok_hk, other=0.0, cache_modifier=".cg")
            d4 = tl.load(dy + 3 * H + hk[None, :], mask=ok_hk, other=0.0, cache_modifier=".cg")
            da = tl.dot(d1, wy1, input_precision=PREC)
            da += tl.dot(d2, wy2, input_precision=PREC)
            da += tl.dot(d3, wy3, input_precision=PREC)
            da += tl.dot(d4, wy4, input_precision=PREC)
        else:  # one head at a time, its weights re-read (from L1/L2): fewer registers for wide layers
            da = tl.zeros([BLOCK_B, BLOCK_U], dtype=tl.float32)
            for j in tl.static_range(4):
                d = tl.load(dy + j * H + hk[None, :], mask=ok_hk, other=0.0, cache_modifier=".cg")
                da += tl.dot(d, tl.load(w_y + j * H * U, mask=wy_ok, other=0.0), input_precision=PREC)
        zt = tl.load(z_ptr + (t * B + rows[:, None]) * U + units[None, :], mask=ok_u, other=0.0)
        dz = dz_ptr + (t * B + rows[:, None]) * U
        tl.store(dz + units[None, :], _act_grad(zt, da, ACT), mask=ok_u)
        _sync(counter, COLS * (2 * i + 2), COLS)
        # the state gradient for this program's columns, from the whole of dz's row
        d = tl.load(dz + uk[None, :], mask=ok_uk, other=0.0, cache_modifier=".cg")
        if not HOLD:
            w_h = tl.load(w_hp, mask=wh_ok, other=0.0)
        carry = tl.where(keep, 0.0, g) + tl.dot(d, w_h, input_precision=PREC)
    tl.store(carry_ptr + rows[:, None] * H + cols[None, :], carry, mask=ok)


_STEP_PRECISION = "tf32x3"  # the per-step kernels' default, for the fallback


def _refused(err: RuntimeError) -> None:
    """A cooperative launch the driver refuses (programs that cannot all be resident, e.g. other
    work holding SMs) costs speed, not the result: the per-step kernels take over. Anything else
    is a real error and propagates."""
    if "cooperative" not in str(err).lower():
        raise err
    warnings.warn(f"fast CfC: persistent kernels refused ({err}); running the per-step Triton kernels instead")


def _launch_kwargs(p: Plan, hidden: int, units: int) -> dict:
    kw = dict(COLS=p.columns, BLOCK_B=p.block_b, BLOCK_H=p.block_h, BLOCK_U=p.block_u,
              HP=max(16, _pow2(hidden)), UP=max(16, _pow2(units)), HOLD=p.hold, num_warps=p.num_warps,
              num_stages=p.num_stages)
    if p.columns > 1:
        kw["launch_cooperative_grid"] = True  # refused, not hung, if the programs cannot all be resident
    return kw


def _slices(batch: int, p: Plan):
    for row0 in range(0, batch, p.rows_per_launch):
        rows = min(p.rows_per_launch, batch - row0)
        yield row0, row0 + rows, triton.cdiv(rows, p.block_b)


def scan_forward(u, dt, keep, h0, w_h, w_heads, b_heads, mode: str, activation: str, precision: str,
                 save: bool = True):
    """u [T, B, U], dt [T, B, 1], keep [T, B, 1] bool, h0 [B, H], w_h [U, H], w_heads [4H, U].
    Returns (hs [T, B, H], z [T, B, U], y [T, B, 4H]), z and y None unless `save` (inference keeps
    only the output); one launch per slice of rows."""
    n, b, units = u.shape
    hid = h0.shape[1]
    hs = u.new_empty(n + 1, b, hid)
    hs[0] = h0
    z = u.new_empty(n, b, units) if save else u.new_empty(1)
    y = u.new_empty(n, b, 4 * hid) if save else u.new_empty(1)
    u, dt = u.contiguous(), dt.contiguous()
    keep = keep.contiguous().view(torch.uint8)
    w_ht, w_yt, b_y = w_h.t().contiguous(), w_heads.t().contiguous(), b_heads.contiguous()
    a = u.new_empty(2, b, units)
    p = plan(b, hid, units, u.device)
    kw = _launch_kwargs(p, hid, units)
    try:
        for row0, row_end, blocks in _slices(b, p):
            counters = torch.zeros(blocks * COUNTER_STRIDE.value, dtype=torch.int32, device=u.device)
            _forward[(blocks, p.columns)](u, dt, keep, hs, a, w_ht, w_yt, b_y, z, y, counters, n, b, hid, units, row0,
                                          row_end, ACT=ACT_CODES[activation], MODE=MODE_CODES[mode], PREC=precision,
                                          SAVE=save, **kw)
    except RuntimeError as err:
        _refused(err)
        return cfc_triton.scan_forward(u, dt, keep.view(torch.bool), h0, w_h, w_heads, b_heads, mode, activation,
                                       _STEP_PRECISION)
    return (hs[1:], z, y) if save else (hs[1:], None, None)


def scan_backward_loop(grad_hs, carry, dt, keep, z, y, w_h, w_heads, mode: str, activation: str, precision: str):
    """Reverse scan: returns (dy [T, B, 4H], dz [T, B, U], carry [B, H]); `carry` (the gradient
    arriving from after the last step) is updated in place and returned."""
    n, b, hid = grad_hs.shape
    units = z.shape[-1]
    dy = grad_hs.new_empty(n, b, 4 * hid)
    dz = grad_hs.new_empty(n, b, units)
    g, dt = grad_hs.contiguous(), dt.contiguous()
    keep = keep.contiguous().view(torch.uint8)
    z, y, w_y, w_hc = z.contiguous(), y.contiguous(), w_heads.contiguous(), w_h.contiguous()
    assert carry.is_contiguous()
    p = plan(b, hid, units, g.device)
    kw = _launch_kwargs(p, hid, units)
    start = carry.clone()  # a refused launch may leave it half written
    try:
        for row0, row_end, blocks in _slices(b, p):
            counters = torch.zeros(blocks * COUNTER_STRIDE.value, dtype=torch.int32, device=g.device)
            _backward[(blocks, p.columns)](g, carry, y, z, dt, keep, w_y, w_hc, dy, dz, counters, n, b, hid, units,
                                           row0, row_end, ACT=ACT_CODES[activation], MODE=MODE_CODES[mode],
                                           PREC=precision, **kw)
    except RuntimeError as err:
        _refused(err)
        carry.copy_(start)
        return cfc_triton.scan_backward_loop(grad_hs, carry, dt, keep.view(torch.bool), z, y, w_h, w_heads, mode,
                                             activation, _STEP_PRECISION)
    return dy, dz, carry
