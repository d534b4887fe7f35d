"""What the Triton CfC kernels cover and how they are launched: plain data and arithmetic.

Nothing here imports Triton or reads a device, so the route decision (`cfc_route`) can use it on
any machine, and every launch gets its settings as arguments (`FastOptions.tiles`, `.knobs`)
instead of from module globals.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

ACT_CODES = {"lecun_tanh": 0, "tanh": 1, "relu": 2, "silu": 3, "gelu": 4}
MODE_CODES = {"default": 0, "no_gate": 1}

PRECISIONS = ("tf32x3", "tf32", "ieee")  # tl.dot input precisions the Triton kernels accept
# each kernel family's measured best at float32 accuracy (bench/NOTES.md): the per-step kernels
# tf32x3; the persistent ones ieee (as fast at H=128 and, unlike tf32x3, no spills at H=256)
STEP_PRECISION = "tf32x3"
PERSISTENT_PRECISION = "ieee"


def interpreting() -> bool:
    """Triton's interpreter is on (`TRITON_INTERPRET=1`): kernels run on the CPU, one program at a time."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def kernel_gap(spec, dtype) -> str | None:
    """Why the Triton kernels (per-step and persistent) do not implement this cell and dtype, or None
    when they do. `spec` is a `fast_cfc.ScanSpec`."""
    if spec.layers != 1:
        return f"{spec.layers} backbone layers (kernels handle exactly 1)"
    if spec.mode not in MODE_CODES:
        return f"mode {spec.mode!r}"
    if spec.activation not in ACT_CODES:
        return f"activation {spec.activation!r}"
    if dtype != torch.float32:
        return f"dtype {dtype} (kernels are float32)"
    return None


@dataclass(frozen=True)
class Tiles:
    """The per-step kernels' (cfc_triton) tiles: a program computes block_b batch rows x block_n
    output columns, block_k at a time. bench/cfc_step_tiles.py sweeps them."""

    block_b: int = 16      # tl.dot's smallest M; small tiles spread batch 256 over ~64 programs
    block_n: int = 32
    block_k: int = 32
    num_warps: int = 4
    num_stages: int = 3


@dataclass(frozen=True)
class Knobs:
    """What a persistent (cfc_persistent) GPU launch may be tuned by; bench/cfc_step_tiles.py sweeps them."""

    columns: int = 8              # programs per row block (fewer when the state is narrower than 16 each)
    num_warps: int | None = None  # None: 4, or 8 where 4 would not hold the weight slices
    num_stages: int = 2
    hold: bool | None = None      # weights in registers for the whole scan; None: where they fit


HOLD_FLOATS = 80  # weight floats per thread a program can hold without spilling (measured: 160 spills badly)


@dataclass(frozen=True)
class Plan:
    """How one persistent launch splits the work: block_b rows x block_h state columns per program."""

    block_b: int        # rows per program (tl.dot's M: at least 16)
    block_h: int        # state columns per program; columns = ceil(H / block_h) programs per row block
    block_u: int        # backbone units per program in the backward's dz phase
    columns: int
    rows_per_launch: int
    num_warps: int = 4
    num_stages: int = 2
    hold: bool = False


def pow2(n: int) -> int:
    """The smallest power of 2 >= n (1 for n <= 1)."""
    return 1 << max(n - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def interpreter_plan(batch: int, hidden: int, units: int, k: Knobs) -> Plan:
    """Under the interpreter (or off CUDA): one program per row block, so no barrier (the interpreter
    runs programs one at a time)."""
    return Plan(16, max(16, pow2(hidden)), max(16, pow2(units)), 1, max(batch, 1), hold=k.hold is not False)


def gpu_plan(batch: int, hidden: int, units: int, n_sm: int, k: Knobs) -> Plan:
    """The plan on a GPU with n_sm SMs (also for compiling offline: bench/cfc_kernel_resources.py)."""
    block_h = max(16, pow2(cdiv(hidden, k.columns)))
    cols = cdiv(hidden, block_h)
    block_u = max(16, pow2(cdiv(units, cols)))
    block_b = 16
    while cdiv(batch, block_b) * cols > n_sm and block_b < 64:
        block_b *= 2  # more rows per program before more launches
    row_blocks = max(n_sm // cols, 1)
    hp, up = max(16, pow2(hidden)), max(16, pow2(units))
    floats = max(hp * block_u + 4 * up * block_h, 4 * hp * block_u + up * block_h)  # forward, backward slices
    warps = k.num_warps or (4 if floats <= HOLD_FLOATS * 32 * 4 else 8)
    hold = k.hold if k.hold is not None else floats <= HOLD_FLOATS * 32 * warps
    return Plan(block_b, block_h, block_u, cols, row_blocks * block_b, warps, k.num_stages, hold)
