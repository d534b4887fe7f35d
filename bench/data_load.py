"""Loading the PhysioNet 2019 cohort: first (parsing) load, cached load, peak memory, and the counts.

    python bench/data_load.py [--data ../shared/data/physionet2019/physionet2019_dev.tar.xz]
                              [--out bench/results/data_load.json]

Each phase runs in a fresh Python process so its peak resident memory (ru_maxrss) is its own;
"imports" is that of a process that only imports the loader, the floor under the other two.
The uncached phase writes into a new temporary cache directory, so it always parses.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the packages live at the repo root

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "physionet2019" / "physionet2019_dev.tar.xz"


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def run_phase(phase: str, data: str, cache_dir: str) -> dict:
    """Body of one child process: time the load, report peak memory and what was loaded."""
    from training.sepsis.data import load_cohort, summarize

    if phase == "imports":
        return {"seconds": 0.0, "peak_rss_mib": _maxrss_mib()}
    t0 = time.perf_counter()
    cohort = load_cohort(data, cache_dir=Path(cache_dir), progress=False)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss_mib": _maxrss_mib(),
            "cohort_mib": (cohort.values.nbytes + cohort.labels.nbytes) / 2**20, **summarize(cohort)}


def spawn(phase: str, data: str, cache_dir: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--data", data,
           "--cache-dir", cache_dir]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", help="also write the results as JSON here")
    ap.add_argument("--phase", choices=["imports", "uncached", "cached"], help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.phase:  # child process
        print(json.dumps(run_phase(args.phase, args.data, args.cache_dir)))
        return 0

    if not Path(args.data).exists():
        print(f"error: {args.data}: no such file", file=sys.stderr)
        return 2
    phases = {}
    with tempfile.TemporaryDirectory(prefix="sepsis-cache-") as cache_dir:
        for phase in ("imports", "uncached", "cached"):
            print(f"running {phase} ...", file=sys.stderr, flush=True)
            phases[phase] = spawn(phase, args.data, cache_dir)
        cache_mib = sum(p.stat().st_size for p in Path(cache_dir).glob("*.npz")) / 2**20

    first, cached = phases["uncached"], phases["cached"]
    print(f"data: {args.data}")
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"first load (parse + write cache): {first['seconds']:7.2f} s   peak RSS {first['peak_rss_mib']:7.0f} MiB")
    print(f"cached load:                      {cached['seconds']:7.2f} s   peak RSS {cached['peak_rss_mib']:7.0f} MiB")
    print(f"imports only:                                peak RSS {phases['imports']['peak_rss_mib']:7.0f} MiB")
    print(f"cohort arrays in memory: {first['cohort_mib']:.0f} MiB; cache file: {cache_mib:.1f} MiB")
    print(f"stays {first['stays']:,}  rows {first['rows']:,}  positive rows {first['positive_rows']:,}  "
          f"septic stays {first['septic_stays']:,}")
    for h, s in first["hospitals"].items():
        print(f"  hospital {h}: stays {s['stays']:,}  septic {s['septic_stays']:,} "
              f"({100 * s['septic_stays'] / s['stays']:.1f}%)  rows {s['rows']:,}")
    if cached["rows"] != first["rows"] or cached["positive_rows"] != first["positive_rows"]:
        print("error: the cached cohort differs from the parsed one", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"data": args.data, "cache_file_mib": cache_mib,
                                              "phases": phases}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
