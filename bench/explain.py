"""What contributions cost: `models.explain.withheld_deltas` (the values) and `unmeasured_deltas`
(the not-measured reasons, the service's second call) against one plain step, on the CPU.

    python bench/explain.py [--model models/sepsis-cfc/3] [--out results/service_explain/explain_cpu.json]

Inputs are real hours: 64 stays of the PhysioNet 2019 development archive (the first 64 files of
setA), each cut at a random hour (seeded) and stepped up to it, so the state carries what a real
patient's does and each row has as many variables posted or carried as real rows have (that sets
the number of variants, up to 39 per row: ICULOS is never withheld). A second case withholds the
worst case: every variable posted (40 rows per observation in the batch).

For batch 1 (one /predict: each of the 64 hours alone) and batch 64 (a batch request: all 64
together) it times, median over hours and repeats after a warm-up: the plain step
(`StepRuntime._run`, what the service runs) and `withheld_deltas` (building the variants plus
its one step call over rows + variants, the call also timed on its own) and, with a memory,
`unmeasured_deltas` over the 13 sepsis-defining variables (GAP_COLUMNS, as the service calls it: one
variant per such variable not measured for 24 h). ONNX Runtime runs with one intra-op thread, so the
numbers compare work rather than how many of this shared machine's cores were free.

Last, a 1,000-row batch request (the hours tiled) is explained with the default bound on the rows
of one step call (models.explain.MAX_ROWS) and in one unbounded call: time and peak memory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

from models.contract import FEATURES, INDEX  # noqa: E402
from models.explain import GAP_COLUMNS, MAX_ROWS, carried, find_memory, unmeasured_deltas, withheld_deltas  # noqa: E402
from models.runtime import StepRuntime  # noqa: E402
from models.testing import CountingStep  # noqa: E402

ARCHIVE = Path("/work/shared/data/physionet2019/physionet2019_dev.tar.xz")
ROOT = Path(__file__).resolve().parents[1]


def read_stays(archive: Path, n: int) -> list[np.ndarray]:
    """The first n stays of the archive as [T, 40] float32 (SepsisLabel dropped)."""
    stays = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith(".psv")):
                continue
            lines = tar.extractfile(member).read().decode().splitlines()
            header = lines[0].split("|")
            if tuple(header[:40]) != FEATURES:
                raise ValueError(f"{member.name}: unexpected header {header}")
            stays.append(np.array([[float(x) for x in line.split("|")[:40]] for line in lines[1:]], np.float32))
            if len(stays) == n:
                break
    return stays


def real_hours(runtime: StepRuntime, stays: list[np.ndarray], seed: int = 0):
    """One hour per stay (a random hour after the first), with the state the stay reached before it."""
    rng = np.random.default_rng(seed)
    obs, elapsed, states = [], [], []
    for stay in stays:
        t = int(rng.integers(1, len(stay))) if len(stay) > 1 else 0
        iculos = stay[:, INDEX["ICULOS"]].astype(np.float64)
        gaps = np.concatenate([[0.0], np.diff(iculos)]).clip(0).astype(np.float32)
        state = runtime.new_state(1)
        for h in range(t):
            _, state = runtime._run(stay[h:h + 1], gaps[h:h + 1, None], state)
        obs.append(stay[t])
        elapsed.append(gaps[t:t + 1])
        states.append(state[0])
    return np.stack(obs), np.stack(elapsed), np.stack(states)


class TimedStep:
    """The runtime's step, recording how long its last call took (the ONNX run inside withheld_deltas)."""

    def __init__(self, runtime):
        self.runtime, self.last = runtime, 0.0

    def __call__(self, obs, elapsed, state):
        start = time.perf_counter()
        out = self.runtime._run(obs, elapsed, state)
        self.last = time.perf_counter() - start
        return out


def timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds of one call (CPU time: this process's work, which other processes on
    a shared machine inflate less than they inflate wall time)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def case(runtime, memory, obs, elapsed, state, batch: int, repeats: int) -> dict:
    """Batches of `batch` rows: every row alone for batch 1, the first 64 rows together for 64.
    The plain step and withheld_deltas alternate call by call, so a busy spell of the machine
    weighs on both alike."""
    starts = range(0, len(obs), batch) if batch == 1 else [0]
    step = TimedStep(runtime)
    plain, plain_cpu, explain, explain_cpu, inner, variants = [], [], [], [], [], 0
    gaps = []  # unmeasured_deltas (the service's second call), only with a memory
    for i in starts:
        o, e, s = obs[i:i + batch], elapsed[i:i + batch], state[i:i + batch]
        present = ~np.isnan(o) | carried(s, memory)
        present[:, INDEX["ICULOS"]] = False
        variants += int(present.sum())
        for r in range(repeats + 2):  # the first two are a warm-up
            w, c = timed(lambda: runtime._run(o, e, s))
            w2, c2 = timed(lambda: withheld_deltas(step, o, e, s, memory=memory))
            if r >= 2:
                plain.append(w), plain_cpu.append(c), explain.append(w2), explain_cpu.append(c2)
                inner.append(step.last)
            if memory is not None:
                w3, _ = timed(lambda: unmeasured_deltas(step, o, e, s, memory=memory, columns=GAP_COLUMNS))
                if r >= 2:
                    gaps.append(w3)
    ms = lambda xs: round(1000.0 * statistics.median(xs), 3)  # noqa: E731
    per_batch = variants / len(starts)
    return {"batch": batch, "batches_timed": len(starts), "repeats": repeats,
            "variants_per_row": round(per_batch / batch, 2), "rows_in_explain_call": round(batch + per_batch, 1),
            "plain_step_ms": ms(plain), "withheld_deltas_ms": ms(explain),
            "of_which_the_step_call_ms": ms(inner), "ratio": round(statistics.median(explain) / statistics.median(plain), 2),
            "withheld_deltas_ms_per_observation": round(ms(explain) / batch, 3),
            "unmeasured_deltas_ms": ms(gaps) if gaps else None,
            "both_over_withheld": round(statistics.median([a + b for a, b in zip(explain, gaps)])
                                        / statistics.median(explain), 2) if gaps else None,
            "cpu": {"plain_step_ms": ms(plain_cpu), "withheld_deltas_ms": ms(explain_cpu),
                    "ratio": round(statistics.median(explain_cpu) / statistics.median(plain_cpu), 2)}}


def large_batch(runtime, memory, obs, elapsed, state, n: int = 1000) -> list[dict]:
    """A 1,000-row batch request (the 64 real hours tiled) explained in calls of at most 4096 rows
    (the default) and then in one call: time and the process's peak memory after each (the peak
    only grows, so the bounded run goes first)."""
    reps = -(-n // len(obs))
    o, e, s = (np.tile(a, (reps, 1))[:n] for a in (obs, elapsed, state))
    out = []
    for max_rows in (MAX_ROWS, None):
        step = CountingStep(runtime._run)
        start = time.perf_counter()
        withheld_deltas(step, o, e, s, memory=memory, max_rows=max_rows)
        out.append({"rows": n, "max_rows": max_rows, "calls": len(step.calls), "largest_call_rows": max(step.calls),
                    "withheld_deltas_s": round(time.perf_counter() - start, 2),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "sepsis-cfc" / "3")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    runtime = StepRuntime.open(args.model, device="cpu", intra_op_threads=1)
    memory = find_memory(runtime._run, runtime.state_size)
    stays = read_stays(ARCHIVE, 64)
    obs, elapsed, state = real_hours(runtime, stays)
    full = obs.copy()
    column = np.nanmedian(np.where(np.isnan(np.vstack(stays)).all(axis=0), 1.0, np.vstack(stays)), axis=0)
    full[np.isnan(full)] = np.broadcast_to(column, full.shape)[np.isnan(full)]  # every variable posted
    cases = []
    for name, o in (("real hours", obs), ("every variable posted", full)):
        for batch, repeats in ((1, 10), (64, 30)):
            result = case(runtime, memory, o, elapsed, state, batch, repeats)
            cases.append({"inputs": name, **result})
            print(f"{name:>22}  batch {batch:>2}: {result['rows_in_explain_call']:>6} rows in the call, plain step "
                  f"{result['plain_step_ms']:7.3f} ms, withheld_deltas {result['withheld_deltas_ms']:8.3f} ms "
                  f"(step call {result['of_which_the_step_call_ms']:8.3f} ms), ratio {result['ratio']:6.2f}, "
                  f"{result['withheld_deltas_ms_per_observation']:.3f} ms per observation; CPU time ratio "
                  f"{result['cpu']['ratio']:.2f}"
                  + (f"; unmeasured_deltas {result['unmeasured_deltas_ms']:8.3f} ms, both / withheld "
                     f"{result['both_over_withheld']:.2f}" if result["unmeasured_deltas_ms"] is not None else ""))
    large = large_batch(runtime, memory, obs, elapsed, state)
    for r in large:
        print(f"{'1,000 real hours':>22}  max_rows {str(r['max_rows']):>5}: {r['calls']:>2} calls, withheld_deltas "
              f"{r['withheld_deltas_s']:.2f} s, peak memory of the process {r['peak_rss_mb']:.0f} MB")
    report = {
        "model": f"{runtime.name}/{runtime.version}", "state_size": runtime.state_size,
        "memory_found": memory is not None, "members": None if memory is None else memory.members,
        "provider": runtime.provider, "intra_op_threads": 1, "onnxruntime": onnxruntime.__version__,
        "machine": {"processor": cpu_model(), "python": platform.python_version()},
        "inputs": "64 stays of setA (first files), one random hour each (seed 0), state stepped up to it",
        "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
        "cases": cases, "large_batch": large, "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
