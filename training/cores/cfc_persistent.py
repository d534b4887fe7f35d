"""A whole CfC layer over a sequence: one Triton launch each way, columns split across programs.

The step kernels (`cfc_triton`) pay a kernel boundary for every phase of every step. Here one
launch runs all T steps. The batch is cut into blocks of rows (rows never interact in the
recurrence); each row block is served by `columns` programs, each owning a slice of the state's
columns and of the backbone units, and holding the matching weight slices in registers for the
whole scan (where they fit: `cfc_tuning.Plan.hold`; otherwise re-read each step from L1/L2). The
programs of a row block meet at a barrier (an atomic counter in global memory, one per row block)
whenever the next phase needs what the others wrote:

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

Inputs that do not depend on the recurrence (u_t, dt, the mask, the output gradient, the saved
pre-activations) are read a phase or a step ahead, so that their memory latency overlaps the
barriers. Each program's held weight slices [K, N] are read contiguous along N: the forward gets
transposed copies of W_h and the heads, the backward the parameters as they are (read the other way,
the same kernels ran 2-3.5x slower: bench/NOTES.md).

The barrier needs every program of a row block resident at once, so the grid is kept within one
program per SM and launched cooperatively (the driver refuses a grid that cannot be co-resident
instead of letting it hang; the caller then runs the per-step kernels); larger batches run as
several launches over slices of rows. Under Triton's interpreter programs run one after another,
so there a row block gets one program that owns all columns and never waits: the same arithmetic
without the barrier, which is what the CPU suite checks. Exchanged tensors (the state, a, dy, dz)
alternate between buffers no program can overwrite before all have read them, and are read
through L2 only (`.cg`), so no program sees a stale copy.

Around the kernels, `_Scan` is the layer's autograd function: the input projection for all steps
is one matrix product before the forward launch, and after the backward launch every gradient
(input, time spans, initial state, all weights and biases) is a handful of bulk products. The cell's
parameters are read where they live (views, no concatenation), and the outputs are written
batch-major, so a training step issues a few kernels besides the two launches: at these sizes the
host's per-operation cost, not the GPU, had been half of the time (bench/NOTES.md).

Products default to `ieee` (float32 FMAs) here: with a program's slice as small as [16, 128] x
[128, 16] they measured as fast as `tf32x3` at H=128 and, unlike it, did not spill at H=256.
Launch settings come in as arguments (`cfc_tuning.Knobs`; the per-step kernels' precision and
tiles for a refused backward); whether these kernels run at all is `cfc_route.choose_route`'s call.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from training.cores import cfc_triton
from training.cores.cfc_triton import _act, _act_grad, _gate, _gate_grad
from training.cores.cfc_tuning import (ACT_CODES, MODE_CODES, STEP_PRECISION, Knobs, Plan, Tiles, gpu_plan,
                                       interpreter_plan, interpreting, pow2)


def plan(batch: int, hidden: int, units: int, device: torch.device, knobs: Knobs = Knobs()) -> Plan:
    """The launch plan for this device: `cfc_tuning.gpu_plan` with the GPU's SM count, or one program
    per row block under the interpreter."""
    if interpreting() or device.type != "cuda":
        return interpreter_plan(batch, hidden, units, knobs)
    return gpu_plan(batch, hidden, units, torch.cuda.get_device_properties(device).multi_processor_count, knobs)


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
def _clock():
    return tl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)


@triton.jit
def _globaltimer():
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)


@triton.jit
def _profile_start(prof_ptr, T, COLS: tl.constexpr, PROFILE: tl.constexpr):
    """This program's row of prof [programs, 4 + 4T]; with PROFILE, the launch's start time and
    clock go into its first two slots."""
    prof = prof_ptr + (tl.program_id(0) * COLS + tl.program_id(1)) * (4 + 4 * T)
    if PROFILE:
        tl.store(prof, _globaltimer())
        tl.store(prof + 1, _clock())
    return prof


@triton.jit
def _profile_end(prof, PROFILE: tl.constexpr):
    if PROFILE:
        tl.store(prof + 2, _globaltimer())
        tl.store(prof + 3, _clock())


@triton.jit
def _stamp(prof_ptr, i, PROFILE: tl.constexpr):
    """Profiling only (bench/cfc_persistent_phases.py): this program's SM clock at point i."""
    if PROFILE:
        tl.store(prof_ptr + i, _clock())


@triton.jit
def _dt_keep(dt_ptr, sdt_b, sdt_t, keep_ptr, sk_b, sk_t, t, rows, row_ok, BLOCK_B: tl.constexpr,
             HAS_DT: tl.constexpr, HAS_KEEP: tl.constexpr):
    """Step t's time spans [BLOCK_B, 1] (1 where absent) and kept-row flags (all where absent)."""
    if HAS_DT:
        dt = tl.load(dt_ptr + rows * sdt_b + t * sdt_t, mask=row_ok, other=0.0)[:, None]
    else:
        dt = tl.full([BLOCK_B, 1], 1.0, tl.float32)
    if HAS_KEEP:
        keep = tl.load(keep_ptr + rows * sk_b + t * sk_t, mask=row_ok, other=0)[:, None] != 0
    else:
        keep = tl.full([BLOCK_B, 1], 1, tl.int1)
    return dt, keep


@triton.jit
def _forward(u_ptr, su_b, su_t, dt_ptr, sdt_b, sdt_t, keep_ptr, sk_b, sk_t, h0_ptr, hx_ptr, out_ptr, hp_ptr,
             so_b, so_t, a_ptr, A_SLOTS, z_ptr, y_ptr, wh_ptr, s_wh_u, s_wh_k, w1_ptr, w2_ptr, w3_ptr, w4_ptr,
             s_y_c, s_y_u, b1_ptr, b2_ptr, b3_ptr, b4_ptr, counter_ptr, prof_ptr, T, B, H, U, ROW0, ROW_END,
             ACT: tl.constexpr, MODE: tl.constexpr, PREC: tl.constexpr, COLS: tl.constexpr,
             BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_U: tl.constexpr,
             HP: tl.constexpr, UP: tl.constexpr, HOLD: tl.constexpr, SAVE: tl.constexpr,
             HAS_DT: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_H0: tl.constexpr, PROFILE: tl.constexpr):
    """u: the input projection plus bias, any [B, T, U] strides; dt, keep [B, T] (or absent: 1,
    all kept); h0 [B, H] (or absent: zeros); out [B, T, H] (strides so_b, so_t). hx [2, B, H]: the
    state exchange, h_t in slot t % 2, read after the step's last barrier (h_0 straight from h0).
    a [A_SLOTS, B, U]: the activations (A_SLOTS = T keeps them all for the backward, 2 alternates).
    With SAVE also hp (each step's previous state, out's strides), z [T, B, U], y [T, B, 4H].
    Weights: W_h^T[k, unit] at wh + unit * s_wh_u + k * s_wh_k, head j's W_j^T[u, c] at
    w_j + c * s_y_c + u * s_y_u. HP, UP: H, U rounded up to powers of 2. PROFILE: clock stamps
    into prof [programs, 4 + 4T]."""
    pid_c = tl.program_id(1)
    prof = _profile_start(prof_ptr, T, COLS, PROFILE)
    rows = (ROW0 + tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = pid_c * BLOCK_H + tl.arange(0, BLOCK_H)
    units = pid_c * BLOCK_U + tl.arange(0, BLOCK_U)
    hk, uk = tl.arange(0, HP), tl.arange(0, UP)
    row_ok, col_ok, unit_ok, hk_ok, uk_ok = rows < ROW_END, cols < H, units < U, hk < H, uk < U
    ok, ok_u = row_ok[:, None] & col_ok[None, :], row_ok[:, None] & unit_ok[None, :]
    ok_hk, ok_uk = row_ok[:, None] & hk_ok[None, :], row_ok[:, None] & uk_ok[None, :]
    w_hp = wh_ptr + units[None, :] * s_wh_u + hk[:, None] * s_wh_k    # [HP, BLOCK_U]: W_h^T slice
    wh_ok = hk_ok[:, None] & unit_ok[None, :]
    w_y = cols[None, :] * s_y_c + uk[:, None] * s_y_u               # [UP, BLOCK_H]: W_j^T slice
    w_ok = uk_ok[:, None] & col_ok[None, :]
    if HOLD:  # this program's weight slices, read once for the whole scan
        w_h = tl.load(w_hp, mask=wh_ok, other=0.0)
        w1 = tl.load(w1_ptr + w_y, mask=w_ok, other=0.0)
        w2 = tl.load(w2_ptr + w_y, mask=w_ok, other=0.0)
        w3 = tl.load(w3_ptr + w_y, mask=w_ok, other=0.0)
        w4 = tl.load(w4_ptr + w_y, mask=w_ok, other=0.0)
    b1 = tl.load(b1_ptr + cols, mask=col_ok, other=0.0)[None, :]
    b2 = tl.load(b2_ptr + cols, mask=col_ok, other=0.0)[None, :]
    b3 = tl.load(b3_ptr + cols, mask=col_ok, other=0.0)[None, :]
    b4 = tl.load(b4_ptr + cols, mask=col_ok, other=0.0)[None, :]
    if HAS_H0:
        h_own = tl.load(h0_ptr + rows[:, None] * H + cols[None, :], mask=ok, other=0.0)
        h = tl.load(h0_ptr + rows[:, None] * H + hk[None, :], mask=ok_hk, other=0.0)
    else:
        h_own = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
        h = tl.zeros([BLOCK_B, HP], dtype=tl.float32)
    counter = counter_ptr + tl.program_id(0) * COUNTER_STRIDE
    # inputs that do not depend on the recurrence are read a phase or a step ahead, so that their
    # memory latency overlaps the barriers instead of lengthening the chain
    u_next = tl.load(u_ptr + rows[:, None] * su_b + units[None, :], mask=ok_u, other=0.0)
    for t in range(T):
        _stamp(prof, 4 + 4 * t, PROFILE)
        # backbone: this program's units, from the whole previous state h
        z = u_next
        dt, keep = _dt_keep(dt_ptr, sdt_b, sdt_t, keep_ptr, sk_b, sk_t, t, rows, row_ok, BLOCK_B, HAS_DT, HAS_KEEP)
        if not HOLD:  # re-read each step (from L1/L2): fewer registers for wide layers
            w_h = tl.load(w_hp, mask=wh_ok, other=0.0)
        z += tl.dot(h, w_h, input_precision=PREC)
        if SAVE:
            tl.store(z_ptr + (t * B + rows[:, None]) * U + units[None, :], z, mask=ok_u)
            tl.store(hp_ptr + rows[:, None] * so_b + t * so_t + cols[None, :], h_own, mask=ok)
        a_t = a_ptr + ((t % A_SLOTS) * B + rows[:, None]) * U
        tl.store(a_t + units[None, :], _act(z, ACT), mask=ok_u)
        _stamp(prof, 5 + 4 * t, PROFILE)
        _sync(counter, COLS * (2 * t + 1), COLS)  # a complete
        _stamp(prof, 6 + 4 * t, PROFILE)
        # heads: this program's state columns, from all backbone units
        a = tl.load(a_t + uk[None, :], mask=ok_uk, other=0.0, cache_modifier=".cg")
        if not HOLD:
            w1 = tl.load(w1_ptr + w_y, mask=w_ok, other=0.0)
            w2 = tl.load(w2_ptr + w_y, mask=w_ok, other=0.0)
            w3 = tl.load(w3_ptr + w_y, mask=w_ok, other=0.0)
            w4 = tl.load(w4_ptr + w_y, mask=w_ok, other=0.0)
        y1 = tl.dot(a, w1, input_precision=PREC) + b1
        y2 = tl.dot(a, w2, input_precision=PREC) + b2
        y3 = tl.dot(a, w3, input_precision=PREC) + b3
        y4 = tl.dot(a, w4, input_precision=PREC) + b4
        h_new = _gate(y1, y2, y3, y4, dt, MODE)
        if HAS_KEEP:
            h_new = tl.where(keep, h_new, h_own)
        h_own = h_new
        tl.store(hx_ptr + (((t + 1) % 2) * B + rows[:, None]) * H + cols[None, :], h_own, mask=ok)
        tl.store(out_ptr + rows[:, None] * so_b + t * so_t + cols[None, :], h_own, mask=ok)
        if SAVE:
            y = y_ptr + (t * B + rows[:, None]) * (4 * H) + cols[None, :]
            tl.store(y, y1, mask=ok)
            tl.store(y + H, y2, mask=ok)
            tl.store(y + 2 * H, y3, mask=ok)
            tl.store(y + 3 * H, y4, mask=ok)
        # (after the last step this reads step 0 again, unused: an in-bounds address without a mask on t)
        u_next = tl.load(u_ptr + rows[:, None] * su_b + ((t + 1) % T) * su_t + units[None, :], mask=ok_u, other=0.0)
        _stamp(prof, 7 + 4 * t, PROFILE)
        _sync(counter, COLS * (2 * t + 2), COLS)  # h_t complete
        h = tl.load(hx_ptr + (((t + 1) % 2) * B + rows[:, None]) * H + hk[None, :], mask=ok_hk, other=0.0,
                    cache_modifier=".cg")
    _profile_end(prof, PROFILE)


@triton.jit
def _step_inputs(g_ptr, sg_b, sg_t, sg_h, y_ptr, dt_ptr, sdt_b, sdt_t, keep_ptr, sk_b, sk_t, t, B, H, rows, cols,
                 row_ok, ok, BLOCK_B: tl.constexpr, HAS_DT: tl.constexpr, HAS_KEEP: tl.constexpr):
    """The backward's inputs of step t: g, the four heads' y, dt, keep."""
    g = tl.load(g_ptr + rows[:, None] * sg_b + t * sg_t + cols[None, :] * sg_h, mask=ok, other=0.0)
    y = y_ptr + (t * B + rows[:, None]) * (4 * H) + cols[None, :]
    y1 = tl.load(y, mask=ok, other=0.0)
    y2 = tl.load(y + H, mask=ok, other=0.0)
    y3 = tl.load(y + 2 * H, mask=ok, other=0.0)
    y4 = tl.load(y + 3 * H, mask=ok, other=0.0)
    dt, keep = _dt_keep(dt_ptr, sdt_b, sdt_t, keep_ptr, sk_b, sk_t, t, rows, row_ok, BLOCK_B, HAS_DT, HAS_KEEP)
    return g, y1, y2, y3, y4, dt, keep


@triton.jit
def _backward(g_ptr, sg_b, sg_t, sg_h, dh0_ptr, y_ptr, z_ptr, dt_ptr, sdt_b, sdt_t, keep_ptr, sk_b, sk_t,
              wh_ptr, s_wh_u, s_wh_k, w1_ptr, w2_ptr, w3_ptr, w4_ptr, s_y_c, s_y_u, dy_ptr, dz_ptr, sdz_b, sdz_t,
              counter_ptr, prof_ptr, T, B, H, U, ROW0, ROW_END,
              ACT: tl.constexpr, MODE: tl.constexpr, PREC: tl.constexpr, COLS: tl.constexpr,
              BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_U: tl.constexpr,
              HP: tl.constexpr, UP: tl.constexpr, HOLD: tl.constexpr,
              HAS_DT: tl.constexpr, HAS_KEEP: tl.constexpr, PROFILE: tl.constexpr):
    """g: gradient of the outputs, any [B, T, H] strides (a broadcast one included); dh0 [B, H] out:
    the gradient of the initial state; y, dy [T, B, 4H]; z [T, B, U]; dz [B, T, U] out, which the
    programs also exchange (strides sdz_b, sdz_t); dt, keep as in the forward. Weights:
    W_h[unit, c] at wh + unit * s_wh_u + c * s_wh_k, W_j[c, unit] at w_j + c * s_y_c + unit * s_y_u."""
    pid_c = tl.program_id(1)
    prof = _profile_start(prof_ptr, T, COLS, PROFILE)
    rows = (ROW0 + tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = pid_c * BLOCK_H + tl.arange(0, BLOCK_H)
    units = pid_c * BLOCK_U + tl.arange(0, BLOCK_U)
    hk, uk = tl.arange(0, HP), tl.arange(0, UP)
    row_ok, col_ok, unit_ok, hk_ok, uk_ok = rows < ROW_END, cols < H, units < U, hk < H, uk < U
    ok, ok_u = row_ok[:, None] & col_ok[None, :], row_ok[:, None] & unit_ok[None, :]
    ok_hk, ok_uk = row_ok[:, None] & hk_ok[None, :], row_ok[:, None] & uk_ok[None, :]
    w_y = hk[:, None] * s_y_c + units[None, :] * s_y_u              # [HP, BLOCK_U]: W_j slice
    wy_ok = hk_ok[:, None] & unit_ok[None, :]
    w_hp = wh_ptr + uk[:, None] * s_wh_u + cols[None, :] * s_wh_k   # [UP, BLOCK_H]: W_h slice
    wh_ok = uk_ok[:, None] & col_ok[None, :]
    if HOLD:
        wy1 = tl.load(w1_ptr + w_y, mask=wy_ok, other=0.0)
        wy2 = tl.load(w2_ptr + w_y, mask=wy_ok, other=0.0)
        wy3 = tl.load(w3_ptr + w_y, mask=wy_ok, other=0.0)
        wy4 = tl.load(w4_ptr + w_y, mask=wy_ok, other=0.0)
        w_h = tl.load(w_hp, mask=wh_ok, other=0.0)
    carry = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    counter = counter_ptr + tl.program_id(0) * COUNTER_STRIDE
    # a step's inputs (output gradient, heads' pre-activations, dt, keep) are read during the step
    # before, so that their memory latency overlaps its barriers
    g_next, y1n, y2n, y3n, y4n, dt_next, keep_next = _step_inputs(
        g_ptr, sg_b, sg_t, sg_h, y_ptr, dt_ptr, sdt_b, sdt_t, keep_ptr, sk_b, sk_t, T - 1, B, H, rows, cols, row_ok,
        ok, BLOCK_B, HAS_DT, HAS_KEEP)
    for i in range(T):
        _stamp(prof, 4 + 4 * i, PROFILE)
        t = T - 1 - i
        # z is used after the first barrier: read now
        zt = tl.load(z_ptr + (t * B + rows[:, None]) * U + units[None, :], mask=ok_u, other=0.0)
        # gate gradient for this program's state columns
        g = g_next + carry
        dt, keep = dt_next, keep_next
        if HAS_KEEP:
            dc = tl.where(keep, g, 0.0)
        else:
            dc = g
        dy1, dy2, dy3, dq = _gate_grad(dc, y1n, y2n, y3n, y4n, dt, MODE)
        dy = dy_ptr + (t * B + rows[:, None]) * (4 * H)
        tl.store(dy + cols[None, :], dy1, mask=ok)
        tl.store(dy + H + cols[None, :], dy2, mask=ok)
        tl.store(dy + 2 * H + cols[None, :], dy3, mask=ok)
        tl.store(dy + 3 * H + cols[None, :], dq, mask=ok)
        _stamp(prof, 5 + 4 * i, PROFILE)
        _sync(counter, COLS * (2 * i + 1), COLS)  # dy complete
        _stamp(prof, 6 + 4 * i, PROFILE)
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
            d = tl.load(dy + hk[None, :], mask=ok_hk, other=0.0, cache_modifier=".cg")
            da = tl.dot(d, tl.load(w1_ptr + w_y, mask=wy_ok, other=0.0), input_precision=PREC)
            d = tl.load(dy + H + hk[None, :], mask=ok_hk, other=0.0, cache_modifier=".cg")
            da += tl.dot(d, tl.load(w2_ptr + w_y, mask=wy_ok, other=0.0), input_precision=PREC)
            d = tl.load(dy + 2 * H + hk[None, :], mask=ok_hk, other=0.0, cache_modifier=".cg")
            da += tl.dot(d, tl.load(w3_ptr + w_y, mask=wy_ok, other=0.0), input_precision=PREC)
            d = tl.load(dy + 3 * H + hk[None, :], mask=ok_hk, other=0.0, cache_modifier=".cg")
            da += tl.dot(d, tl.load(w4_ptr + w_y, mask=wy_ok, other=0.0), input_precision=PREC)
        dz = dz_ptr + rows[:, None] * sdz_b + t * sdz_t
        tl.store(dz + units[None, :], _act_grad(zt, da, ACT), mask=ok_u)
        g_next, y1n, y2n, y3n, y4n, dt_next, keep_next = _step_inputs(  # step t - 1 (after t = 0: unused)
            g_ptr, sg_b, sg_t, sg_h, y_ptr, dt_ptr, sdt_b, sdt_t, keep_ptr, sk_b, sk_t, (t + T - 1) % T, B, H, rows,
            cols, row_ok, ok, BLOCK_B, HAS_DT, HAS_KEEP)
        _stamp(prof, 7 + 4 * i, PROFILE)
        _sync(counter, COLS * (2 * i + 2), COLS)  # dz complete
        # the state gradient for this program's columns, from the whole of dz's row
        d = tl.load(dz + uk[None, :], mask=ok_uk, other=0.0, cache_modifier=".cg")
        if not HOLD:
            w_h = tl.load(w_hp, mask=wh_ok, other=0.0)
        if HAS_KEEP:  # a held step passes its gradient through
            carry = tl.where(keep, 0.0, g) + tl.dot(d, w_h, input_precision=PREC)
        else:
            carry = tl.dot(d, w_h, input_precision=PREC)
    tl.store(dh0_ptr + rows[:, None] * H + cols[None, :], carry, mask=ok)
    _profile_end(prof, PROFILE)


def _refused(err: RuntimeError) -> None:
    """A cooperative launch the driver refuses (programs that cannot all be resident, e.g. other
    work holding SMs) costs speed, not the result: the caller runs the per-step kernels instead.
    Anything else is a real error and propagates."""
    if "cooperative" not in str(err).lower():
        raise err
    warnings.warn(f"fast CfC: persistent kernels refused ({err}); running the per-step Triton kernels instead")


def _launch_kwargs(p: Plan, hidden: int, units: int) -> dict:
    kw = dict(COLS=p.columns, BLOCK_B=p.block_b, BLOCK_H=p.block_h, BLOCK_U=p.block_u,
              HP=max(16, pow2(hidden)), UP=max(16, pow2(units)), HOLD=p.hold, num_warps=p.num_warps,
              num_stages=p.num_stages)
    if p.columns > 1:
        kw["launch_cooperative_grid"] = True  # refused, not hung, if the programs cannot all be resident
    return kw


def _slices(batch: int, p: Plan):
    for row0 in range(0, batch, p.rows_per_launch):
        rows = min(p.rows_per_launch, batch - row0)
        yield row0, row0 + rows, triton.cdiv(rows, p.block_b)


def _stamps(profile: list | None, programs: int, n: int, device) -> torch.Tensor:
    if profile is None:
        return torch.empty(1, dtype=torch.int64, device=device)
    prof = torch.zeros(programs, 4 + 4 * n, dtype=torch.int64, device=device)
    profile.append(prof)
    return prof


@dataclass(frozen=True)
class Weights:
    """The cell's parameters as the kernels read them: views, no copies."""

    w_x: torch.Tensor        # [U, F]: the first backbone layer's input columns
    w_h: torch.Tensor        # [U, H]: its state columns (row stride F + H)
    b_in: torch.Tensor       # [U]
    heads: tuple             # ff1, ff2, time_a, time_b weights, [H, U] each (ff1, ff2 masked where sparse)
    biases: tuple            # their biases, [H] each

    @classmethod
    def of(cls, inputs: int, w_in, b_in, heads, biases) -> "Weights":
        return cls(w_in[:, :inputs], w_in[:, inputs:], b_in, tuple(w.contiguous() for w in heads),
                   tuple(b.contiguous() for b in biases))


@dataclass
class Trace:
    """What the backward reads: each step's previous state [B, T, H], activations and
    pre-activations [T, B, U], and heads' pre-activations [T, B, 4H]."""

    hp: torch.Tensor
    a: torch.Tensor
    z: torch.Tensor
    y: torch.Tensor


def _forward_weights(w: Weights) -> tuple:
    """(W_h^T, its unit and k strides, heads 1..4 transposed, their column and unit strides). A
    program holds [K, N] slices of these for the whole scan; they must be read contiguous along N
    (here: W_h^T [H, U], W_heads^T [U, 4H], two small copies): read along K instead, the same
    kernel ran 2-3.5x slower (bench/NOTES.md)."""
    w_ht = w.w_h.t().contiguous()
    w_yt = torch.cat([h.t() for h in w.heads], dim=1)
    hid = w.heads[0].shape[0]
    return (w_ht, 1, w_ht.stride(0), *(w_yt[:, j * hid:(j + 1) * hid] for j in range(4)), 1, w_yt.stride(0))


def _backward_weights(w: Weights) -> tuple:
    """The backward's [K, N] slices are W_j [H, U] and W_h [U, H]: the parameters as they are."""
    return (w.w_h, w.w_h.stride(0), 1, *w.heads, w.heads[0].stride(0), 1)


def _dt_keep_args(dt, keep, dummy):
    dt_args = (dt, dt.stride(0), dt.stride(1)) if dt is not None else (dummy, 0, 0)
    keep_args = (keep.view(torch.uint8), keep.stride(0), keep.stride(1)) if keep is not None else (dummy, 0, 0)
    return dt_args, keep_args


def forward_scan(u, dt, keep, h0, w: Weights, mode: str, activation: str, precision: str, save: bool,
                 profile: list | None = None, knobs: Knobs = Knobs()):
    """u [B, T, U] (input projection plus bias, unit stride last), dt [B, T] float32 or None (1),
    keep [B, T] bool or None (all kept), h0 [B, H] or None (zeros). Returns (out [B, T, H], Trace
    or None without `save`), or None when the driver refuses the launch. `profile`: a list that
    receives each launch's clock stamps (bench/cfc_persistent_phases.py); `knobs`: launch settings."""
    b, n, units = u.shape
    hid = w.heads[0].shape[0]
    dummy = u.new_empty(1)
    out = u.new_empty(b, n, hid)
    hx = u.new_empty(2, b, hid)
    trace = None
    if save:
        trace = Trace(u.new_empty(b, n, hid), u.new_empty(n, b, units), u.new_empty(n, b, units),
                      u.new_empty(n, b, 4 * hid))
    a = trace.a if save else u.new_empty(2, b, units)
    hp, z, y = (trace.hp, trace.z, trace.y) if save else (dummy, dummy, dummy)
    dt_args, keep_args = _dt_keep_args(dt, keep, dummy)
    p = plan(b, hid, units, u.device, knobs)
    kw = _launch_kwargs(p, hid, units)
    try:
        for row0, row_end, blocks in _slices(b, p):
            counters = torch.zeros(blocks * COUNTER_STRIDE.value, dtype=torch.int32, device=u.device)
            _forward[(blocks, p.columns)](
                u, u.stride(0), u.stride(1), *dt_args, *keep_args, dummy if h0 is None else h0, hx, out, hp,
                out.stride(0), out.stride(1), a, a.shape[0], z, y, *_forward_weights(w), *w.biases, counters,
                _stamps(profile, blocks * p.columns, n, u.device), n, b, hid, units, row0, row_end,
                ACT=ACT_CODES[activation], MODE=MODE_CODES[mode], PREC=precision, SAVE=save, HAS_DT=dt is not None,
                HAS_KEEP=keep is not None, HAS_H0=h0 is not None, PROFILE=profile is not None, **kw)
    except RuntimeError as err:
        _refused(err)
        return None
    return out, trace


def backward_scan(g, trace: Trace, dt, keep, w: Weights, mode: str, activation: str, precision: str,
                  profile: list | None = None, knobs: Knobs = Knobs(), steps_precision: str = STEP_PRECISION,
                  steps_tiles: Tiles = Tiles()):
    """g [B, T, H] (any strides) the outputs' gradient. Returns (dy [T, B, 4H], dz [B, T, U], dh0 [B, H]).
    A refused launch runs the per-step kernels instead, at `steps_precision` with `steps_tiles`."""
    b, n, hid = g.shape
    units = trace.z.shape[-1]
    dummy = g.new_empty(1)
    dy, dz, dh0 = g.new_empty(n, b, 4 * hid), g.new_empty(b, n, units), g.new_empty(b, hid)
    dt_args, keep_args = _dt_keep_args(dt, keep, dummy)
    p = plan(b, hid, units, g.device, knobs)
    kw = _launch_kwargs(p, hid, units)
    try:
        for row0, row_end, blocks in _slices(b, p):
            counters = torch.zeros(blocks * COUNTER_STRIDE.value, dtype=torch.int32, device=g.device)
            _backward[(blocks, p.columns)](
                g, g.stride(0), g.stride(1), g.stride(2), dh0, trace.y, trace.z, *dt_args, *keep_args,
                *_backward_weights(w), dy, dz, dz.stride(0), dz.stride(1), counters,
                _stamps(profile, blocks * p.columns, n, g.device),
                n, b, hid, units, row0, row_end, ACT=ACT_CODES[activation], MODE=MODE_CODES[mode], PREC=precision,
                HAS_DT=dt is not None, HAS_KEEP=keep is not None, PROFILE=profile is not None, **kw)
    except RuntimeError as err:
        _refused(err)
        return _backward_by_steps(g, trace, dt, keep, w, mode, activation, steps_precision, steps_tiles)
    return dy, dz, dh0


def _backward_by_steps(g, trace: Trace, dt, keep, w: Weights, mode: str, activation: str, precision: str,
                       tiles: Tiles):
    """The same reverse scan with the per-step kernels (time-major), for a refused launch."""
    b, n, hid = g.shape
    dt_tm = g.new_ones(n, b, 1) if dt is None else dt.t().unsqueeze(-1).contiguous()
    keep_tm = (torch.ones(n, b, 1, dtype=torch.bool, device=g.device) if keep is None
               else keep.t().unsqueeze(-1).contiguous())
    carry = g.new_zeros(b, hid)
    dy, dz, carry = cfc_triton.steps_backward(g.transpose(0, 1).contiguous(), carry, dt_tm, keep_tm, trace.z,
                                              trace.y, w.w_h, torch.cat(w.heads), mode, activation, precision, tiles)
    return dy, dz.transpose(0, 1).contiguous(), carry


class _Scan(torch.autograd.Function):
    """The whole CfC layer over a sequence: input projection, persistent forward, and on the way
    back the persistent backward plus every gradient in a few bulk products."""

    @staticmethod
    def forward(ctx, cfg, x, dt, keep, h0, w_in, b_in, w1, w2, w3, w4, c1, c2, c3, c4):
        b, n, inputs = x.shape
        w = Weights.of(inputs, w_in, b_in, (w1, w2, w3, w4), (c1, c2, c3, c4))
        u = torch.addmm(b_in, x.view(b * n, inputs), w.w_x.t()).view(b, n, -1)
        result = forward_scan(u, dt, keep, h0, w, cfg.mode, cfg.activation, cfg.precision, cfg.save, knobs=cfg.knobs)
        if result is None:
            raise _Refusal()
        out, trace = result
        ctx.cfg, ctx.trace = cfg, trace
        if cfg.save:
            ctx.save_for_backward(x, dt, keep, w_in, b_in, w1, w2, w3, w4, c1, c2, c3, c4)
        return out

    @staticmethod
    def backward(ctx, g):
        cfg = ctx.cfg
        x, dt, keep, w_in, b_in, *heads = ctx.saved_tensors
        trace = ctx.trace
        b, n, inputs = x.shape
        w = Weights.of(inputs, w_in, b_in, heads[:4], heads[4:])
        hid, units = w.heads[0].shape
        dy, dz, dh0 = backward_scan(g, trace, dt, keep, w, cfg.mode, cfg.activation, cfg.precision, knobs=cfg.knobs,
                                    steps_precision=cfg.steps_precision, steps_tiles=cfg.steps_tiles)
        need = ctx.needs_input_grad
        du = dz.view(b * n, units)
        gx = (du @ w.w_x).view(b, n, inputs) if need[1] else None
        gdt = (dy[..., 3 * hid:] * trace.y[..., 2 * hid:3 * hid]).sum(-1).t() if need[2] else None
        gw_t = du.new_empty(w_in.shape[1], units)  # [F + H, U]: both halves in place, then one transpose view
        torch.mm(x.view(b * n, inputs).t(), du, out=gw_t[:inputs])
        torch.mm(trace.hp.view(b * n, hid).t(), du, out=gw_t[inputs:])
        dy2 = dy.view(n * b, 4 * hid)
        g_heads = (dy2.t() @ trace.a.view(n * b, units)).split(hid)
        g_bias = dy2.sum(0).split(hid)
        return (None, gx, gdt, None, dh0 if need[4] else None, gw_t.t(), du.sum(0), *g_heads, *g_bias)


class _Refusal(Exception):
    """The driver refused the cooperative launch (raised inside the autograd function, before any
    output exists, so that the caller can run the per-step kernels instead)."""


@dataclass(frozen=True)
class _Config:
    """What `_Scan` runs with, besides tensors."""

    mode: str
    activation: str
    precision: str
    save: bool
    knobs: Knobs
    steps_precision: str
    steps_tiles: Tiles


def persistent_sequence(x, dt, mask, state, w_in, b_in, heads, biases, mode: str, activation: str, precision: str,
                        knobs: Knobs = Knobs(), steps_precision: str = STEP_PRECISION, steps_tiles: Tiles = Tiles()):
    """A CfC layer (one backbone layer, gated modes) over x [B, T, F] by the persistent kernels:
    outputs [B, T, H], or None when the driver refused the forward launch. dt [B, T] or [B, T, 1] or
    None; mask [B, T] or None; state [B, H] or None; w_in [U, F + H], b_in [U]: the backbone layer;
    heads, biases: ff1, ff2, time_a, time_b as the cell applies them ([H, U] and [H] each). Gradients
    flow to x, dt, state and every weight that needs them. `knobs`: the launches' settings; a refused
    backward launch runs the per-step kernels at `steps_precision` with `steps_tiles`."""
    if dt is not None:
        dt = (dt.squeeze(-1) if dt.dim() == 3 else dt).to(torch.float32)
    keep = None if mask is None else mask.to(torch.bool)
    params = (w_in, b_in, *heads, *biases)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, dt, state, *params))
    cfg = _Config(mode, activation, precision, save, knobs, steps_precision, steps_tiles)
    try:
        return _Scan.apply(cfg, x.contiguous(), dt, keep, None if state is None else state.contiguous(), *params)
    except _Refusal:
        return None
