"""What durability costs: answered writes per second of the service on SQLite with
synchronous=NORMAL against FULL (the default), and how often each syncs the disk.

For each mode and repeat, a fresh SQLite file and a fresh `python -m service`; --concurrency
closed-loop clients post hourly observations (POST /predict, each client its own patients) until
--writes are answered. A second run of each mode under `strace -f -e fsync,fdatasync` (--fsyncs)
counts the syncs issued while writing, so writes/s come from runs without the tracer. Modes
alternate (NORMAL, FULL, NORMAL, FULL, ...) so that drift on a shared machine hits both alike.
Optionally --pg-url gives PostgreSQL's figure (its server's syncs are not ours to trace).

    python bench/durability.py --writes 2000 --repeats 2 --fsyncs
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving import (KEY, ROOT, Client, Writer, count_syncs, model_label, pct, pick_model,  # noqa: E402
                           service_env, start, stop)


async def write(url_port: int, writes: int, concurrency: int, patients: int, bar) -> dict:
    writer = Writer(patients, prefix="dur")
    client = Client("127.0.0.1", url_port, {"X-API-Key": KEY})
    clients = min(concurrency, patients)
    done = {"n": 0}

    async def worker(k: int):
        mine = writer.pids[k::clients]
        i = 0
        while done["n"] < writes:
            if await writer.post(client, mine[i % len(mine)]):
                done["n"] += 1
                bar.update(1)
            i += 1

    t0, wall0 = time.perf_counter(), time.time()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    took, wall1 = time.perf_counter() - t0, time.time()
    await client.close()
    return {"answered": writer.total(), "seconds": took, "writes_per_s": writer.total() / took,
            "errors": writer.errors, **pct(writer.latencies), "_window": (wall0, wall1)}


def run_once(db_url: str, model_dir: Path, mode: str | None, args, tmp: Path, trace: bool, label: str) -> dict:
    settings = {"sqlite_synchronous": mode} if mode else {}
    strace_log = tmp / f"strace-{label}.txt" if trace else None
    server = start(service_env(db_url, model_dir, **settings), strace_to=strace_log, log=tmp / "service.log")
    try:
        with tqdm(total=args.writes, desc=label, unit="write", leave=False) as bar:
            out = asyncio.run(write(server.port, args.writes, args.concurrency, args.patients, bar))
    finally:
        stop(server.proc)
    start_wall, end_wall = out.pop("_window")
    if strace_log is not None:
        syncs = count_syncs(strace_log, start_wall, end_wall)
        out = {"answered": out["answered"], "syncs": syncs, "syncs_per_answered_write": syncs / out["answered"],
               "answered_writes_per_sync": out["answered"] / syncs if syncs else None}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writes", type=int, default=2000, help="answered writes per run")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--patients", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2, help="runs per mode (alternating)")
    p.add_argument("--fsyncs", action="store_true", help="also count syncs, in a separate run per mode under strace")
    p.add_argument("--pg-url", default=None, help="also measure PostgreSQL (a scratch database: it is written to)")
    p.add_argument("--model-dir", default=None, help="model folder (default: the registry's default)")
    p.add_argument("--out", default=str(ROOT / "results" / "service_durability" / "metrics.json"))
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="durability_"))
    model_dir = pick_model(tmp, args.model_dir)
    runs: dict[str, list] = {"NORMAL": [], "FULL": []}
    traced: dict[str, dict] = {}
    try:
        for r in range(args.repeats):
            for mode in ("NORMAL", "FULL"):
                db = tmp / f"{mode}-{r}.db"
                runs[mode].append(run_once(f"sqlite:///{db}", model_dir, mode, args, tmp, False, f"{mode} run {r + 1}"))
                print(f"{mode:6s} run {r + 1}: {runs[mode][-1]['writes_per_s']:.1f} answered writes/s "
                      f"(p50 {runs[mode][-1]['p50_ms']:.1f} ms, p99 {runs[mode][-1]['p99_ms']:.1f} ms)")
        if args.fsyncs:
            for mode in ("NORMAL", "FULL"):
                traced[mode] = run_once(f"sqlite:///{tmp / f'{mode}-traced.db'}", model_dir, mode, args, tmp, True,
                                        f"{mode} under strace")
                print(f"{mode:6s} syncs: {traced[mode]['syncs']} for {traced[mode]['answered']} answered writes")
        postgres = None
        if args.pg_url:
            postgres = run_once(args.pg_url, model_dir, None, args, tmp, False, "PostgreSQL")
            print(f"PostgreSQL: {postgres['writes_per_s']:.1f} answered writes/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    mean = {m: sum(x["writes_per_s"] for x in v) / len(v) for m, v in runs.items()}
    result = {
        "command": "python bench/durability.py " + " ".join(sys.argv[1:]),
        "model": model_label(model_dir),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_at_end": os.getloadavg()},
        "sqlite": {m: {"runs": v, "mean_writes_per_s": mean[m], "syncs": traced.get(m)} for m, v in runs.items()},
        "full_over_normal_throughput": mean["FULL"] / mean["NORMAL"],
        "postgresql": postgres,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"FULL / NORMAL answered writes per second: {result['full_over_normal_throughput']:.2f} "
          f"({mean['FULL']:.1f} / {mean['NORMAL']:.1f}); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
