"""Whole-ward rescoring: every stay of a split stepped hour by hour in lockstep through the shared
ONNX runtime (the model-upgrade path and `evaluate-onnx`), on each provider asked for.

Prints and writes, per model and provider: stays, hours, seconds, hours per second, and the largest
difference of any risk from the first provider's (the providers must agree, not only be fast).

    python bench/ward_rescoring.py --data ../shared/data/physionet2019/physionet2019_dev.tar.xz \\
        --models models/sepsis-cfc/3 models/sepsis-cfc/2 --devices cuda cpu --out results/gpu/ward_rescoring.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.contract import elapsed_hours  # noqa: E402  (after the path: runnable as a script)
from models.runtime import StepRuntime  # noqa: E402
from training.sepsis.data import load_cohort  # noqa: E402
from training.sepsis.evaluate_onnx import stream  # noqa: E402
from training.sepsis.splits import patient_split  # noqa: E402


def rescore(model_dir: Path, device: str, values, elapsed, offsets, repeats: int) -> tuple[dict, np.ndarray]:
    runtime = StepRuntime.open(model_dir, device=device)
    stream(runtime, values[: offsets[min(64, len(offsets) - 1)]], elapsed[: offsets[min(64, len(offsets) - 1)]],
           offsets[: min(64, len(offsets) - 1) + 1])  # warm-up: kernels, allocator, threads
    times, risks = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        risks = stream(runtime, values, elapsed, offsets)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    hours = int(len(values))
    return {"model": f"{runtime.name}/{runtime.version}", "device": device, "provider": runtime.provider,
            "stays": int(len(offsets) - 1), "hours": hours, "seconds_median": seconds,
            "seconds_all": times, "hours_per_second": hours / seconds}, risks


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="PhysioNet 2019 archive or folder")
    p.add_argument("--cache-dir", default=str(ROOT / ".cache" / "sepsis"))
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--models", nargs="+", default=[str(ROOT / "models" / "sepsis-cfc" / "3")])
    p.add_argument("--devices", nargs="+", default=["cpu"], choices=("cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON file for the results")
    a = p.parse_args()

    cohort = load_cohort(a.data, cache_dir=Path(a.cache_dir))
    if a.split != "all":
        cohort = cohort.subset(getattr(patient_split(cohort, seed=a.split_seed), a.split))
    values, offsets = cohort.values, cohort.offsets
    elapsed = elapsed_hours(values, offsets)
    rows = []
    for model in a.models:
        reference = None
        for device in a.devices:
            row, risks = rescore(Path(model), device, values, elapsed, offsets, a.repeats)
            if reference is None:
                reference = risks
            row["max_abs_risk_diff_vs_first"] = float(np.max(np.abs(risks - reference)))
            rows.append(row)
            print(f"{row['model']:<14} {row['provider']:<22} {row['stays']:>6} stays {row['hours']:>8} h "
                  f"{row['seconds_median']:8.2f} s {row['hours_per_second']:>12,.0f} h/s "
                  f"max|dr| {row['max_abs_risk_diff_vs_first']:.2e}", flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({
            "command": " ".join(sys.argv), "split": a.split, "split_seed": a.split_seed,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
