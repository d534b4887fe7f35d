"""Which route a CfC sequence takes, decided in one pure function, and a record of what ran.

The routes, fastest first where they apply (bench/NOTES.md has the measurements):

    persistent      one persistent Triton launch per scan each way (cfc_persistent)
    triton steps    two Triton GEMM kernels per step each way, elementwise work inside (cfc_triton)
    compiled steps  torch matmuls, elementwise work compiled by torch.compile
    eager steps     torch matmuls and eager elementwise functions
    reference       the ncps cell driven step by step (CfCCore only: the fast path is off or
                    cannot compute this cell exactly)

and the step routes run either as plain loops or as replays of CUDA graphs over chunks of steps.
`choose_route` takes every fact the choice depends on as plain values (`RouteFacts`, gathered from
the cell and the input by `fast_cfc.route_facts`), so each branch is testable on any machine.
`RouteLog` keeps the last route of each cell and logs each distinct (shape, route) once.
"""
from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field

from training.cores.cfc_tuning import (PERSISTENT_PRECISION, PRECISIONS, STEP_PRECISION, Knobs, Tiles, gpu_plan,
                                       interpreter_plan)

REFERENCE = "reference"
EAGER = "eager steps"
COMPILED = "compiled steps"
TRITON = "triton steps"
PERSISTENT = "persistent"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastOptions:
    """How the fast path runs. None means: on when the input is on CUDA (and Triton is present, for fuse)."""

    fuse: bool | None = None      # fused step kernels: Triton GEMMs with the elementwise work inside
                                  # (cfc_triton) where they cover the cell, else torch.compile'd elementwise
    triton_gemms: bool = True     # False: fuse only the elementwise work (torch.compile), kept to compare
    precision: str | None = None  # tl.dot precision in the Triton kernels: tf32x3, tf32 or ieee; None: each
                                  # route's measured best at float32 accuracy (steps tf32x3, persistent ieee)
    persistent: bool | None = None  # one launch per scan each way (cfc_persistent) where the Triton kernels
                                    # cover the cell; None: on CUDA unless graphs is asked for, where the
                                    # weight slices fit in registers
    graphs: bool | None = None    # replay CUDA graphs of `graph_chunk` steps (on CPU: same chunking, no capture);
                                  # None: on CUDA unless the persistent kernels run
    graph_chunk: int = 16         # steps per captured graph; T is padded up to a multiple with held steps
    graph_cache: int = 8          # (batch size, chunk) graph pairs kept, least recently used dropped
    tiles: Tiles = field(default_factory=Tiles)  # the per-step Triton kernels' launch settings
    knobs: Knobs = field(default_factory=Knobs)  # the persistent kernels' launch settings

    def __post_init__(self):
        if self.persistent and self.graphs:
            raise ValueError("fast CfC: persistent kernels run the whole scan in one launch; they take no CUDA graphs")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"fast CfC: precision {self.precision!r}: expected one of {PRECISIONS}")


@dataclass(frozen=True)
class RouteFacts:
    """What the route depends on besides the options, as plain values."""

    device_type: str                      # the input's device type: "cuda", "cpu", ...
    capability: tuple[int, int] | None    # CUDA compute capability; None off CUDA
    sm_count: int | None                  # the GPU's SMs; None off CUDA
    interpreting: bool                    # TRITON_INTERPRET is set: Triton kernels run on the CPU
    triton: bool                          # Triton is installed
    hidden: int                           # state width H
    units: int                            # the first backbone layer's units U (0 without a backbone)
    kernel_gap: str | None                # why the Triton kernels do not implement this cell and dtype
    cell_gap: str | None = None           # why the fast path cannot compute this cell exactly now


@dataclass(frozen=True)
class Route:
    kernels: str              # REFERENCE, EAGER, COMPILED, TRITON or PERSISTENT
    graphs: bool              # steps replayed as CUDA graphs of FastOptions.graph_chunk steps
    precision: str | None     # tl.dot precision of the Triton kernels; None for the others
    reason: str               # why, in words

    @property
    def name(self) -> str:
        """e.g. "triton steps + graphs (tf32x3)"."""
        return self.kernels + (" + graphs" if self.graphs else "") + (f" ({self.precision})" if self.precision else "")


def choose_route(facts: RouteFacts, options: FastOptions, fast: bool | None = True, *,
                 persistent_refused: bool = False, compile_failed: bool = False) -> Route:
    """The route for a sequence. `fast` is CfCCore's flag (None: on CUDA only; `cfc_sequence` itself
    is always fast). `persistent_refused`: the driver refused the persistent launch for this call;
    `compile_failed`: torch.compile's step kernels failed their check against the eager ones here.
    Pure: the same facts give the same route."""
    cuda = facts.device_type == "cuda"
    on = f"on {facts.device_type}"
    if fast is False:
        return Route(REFERENCE, False, None, "fast=False: the ncps cell, step by step")
    if fast is None and not cuda:
        return Route(REFERENCE, False, None, f"fast=None {on}: the fast path is the default on CUDA only")
    if facts.cell_gap is not None:
        return Route(REFERENCE, False, None, f"{facts.cell_gap}: only the ncps cell computes this exactly")

    fuse = options.fuse if options.fuse is not None else (cuda and facts.triton)
    if not fuse:
        if options.fuse is False:
            why = "fuse=False"
        elif not cuda:
            why = f"fuse=None {on}: fused kernels are the default on CUDA only"
        else:
            why = "fuse=None and Triton is not installed"
        return _steps(EAGER, None, why, options, cuda, on)
    gap = _triton_gap(facts, options, on)
    if gap is not None:
        if compile_failed:
            return _steps(EAGER, None, f"{gap}, and torch.compile's step kernels failed their check here", options,
                          cuda, on)
        return _steps(COMPILED, None, gap, options, cuda, on)
    persistent, why = _persistent(facts, options, cuda, on, persistent_refused)
    if persistent:
        return Route(PERSISTENT, False, options.precision or PERSISTENT_PRECISION, why)
    # a refused launch hands over to the step kernels at their own best precision: an asked
    # precision was for the persistent kernels
    precision = STEP_PRECISION if persistent_refused else (options.precision or STEP_PRECISION)
    return _steps(TRITON, precision, why, options, cuda, on)


def _triton_gap(facts: RouteFacts, options: FastOptions, on: str) -> str | None:
    """Why the Triton kernels cannot run here, or None."""
    if not options.triton_gemms:
        return "triton_gemms=False"
    if not facts.triton:
        return "Triton is not installed"
    if facts.kernel_gap is not None:
        return f"the Triton kernels do not cover {facts.kernel_gap}"
    if facts.device_type != "cuda":
        return None if facts.interpreting else f"Triton kernels {on} need TRITON_INTERPRET=1"
    if facts.capability is not None and tuple(facts.capability) < (8, 0):
        return "GPU older than Ampere (no TF32 tensor cores for the tf32x3 products)"
    return None


def _persistent(facts: RouteFacts, options: FastOptions, cuda: bool, on: str, refused: bool) -> tuple[bool, str]:
    if refused:
        return False, "the driver refused the persistent kernels' cooperative launch"
    if options.persistent is not None:
        return options.persistent, f"persistent={options.persistent}"
    if not cuda:
        return False, f"persistent=None {on}: the persistent kernels are the default on CUDA only"
    if options.graphs:
        return False, "graphs=True asks for the per-step kernels (the persistent ones take no graphs)"
    h, u = facts.hidden, facts.units
    if _holds(facts):
        return True, f"persistent=None and each program holds its weight slices in registers at H={h}, U={u}"
    return False, (f"persistent=None and at H={h}, U={u} the weight slices do not fit in registers "
                   "(measured slower than the per-step kernels)")


def _holds(facts: RouteFacts) -> bool:
    """Whether each persistent program holds its weight slices in registers at these widths with the
    default launch settings: the only place the persistent kernels measured faster than the per-step
    ones (bench/NOTES.md). The plan's hold does not depend on the batch: 256 stands for any."""
    if facts.interpreting:
        return interpreter_plan(256, facts.hidden, facts.units, Knobs()).hold
    return gpu_plan(256, facts.hidden, facts.units, facts.sm_count, Knobs()).hold


def _steps(kernels: str, precision: str | None, why: str, options: FastOptions, cuda: bool, on: str) -> Route:
    if options.graphs is not None:
        graphs = options.graphs
        why_graphs = f"graphs={graphs}" + (f" ({on}: the same chunks, no capture)" if graphs and not cuda else "")
    else:
        graphs = cuda
        why_graphs = "graphs=None: CUDA graphs on CUDA" if cuda else f"graphs=None {on}: no CUDA graphs"
    return Route(kernels, graphs, precision, f"{why}; {why_graphs}")


class RouteLog:
    """The last route each cell ran, and one log line (INFO) per distinct shape and route."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: set[tuple[str, Route]] = set()
        self._last: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def record(self, cell, shape: str, route: Route) -> None:
        with self._lock:
            self._last[cell] = route
            new = (shape, route) not in self._seen
            self._seen.add((shape, route))
        if new:
            log.info("CfC %s: %s (%s)", shape, route.name, route.reason)

    def last(self, cell) -> Route | None:
        with self._lock:
            return self._last.get(cell)


ROUTES = RouteLog()
