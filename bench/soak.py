"""Soak: the service at a fixed request rate for minutes; errors, latency percentiles (overall and per
minute), the server's memory, and at the end answered == stored.

Open loop: request i leaves at start + i / --rate whether or not earlier ones were answered (a slow
server meets more load, not less). Each request is one patient's next hour (POST /predict); a
patient with a request in flight is skipped for the next one, so its hours stay in order. --admin-rate
adds reads by a second client (GET /patients, /alarms, /stats, /metrics), as a ward's dashboards do.

    python bench/soak.py --minutes 2 --rate 50
    python bench/soak.py --minutes 10 --rate 75 --db postgres --pg-url postgresql+psycopg://postgres:@127.0.0.1:5432/test
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

from bench.crash import database  # noqa: E402
from bench.serving import (KEY, ROOT, Client, Writer, model_label, pct, pick_model, service_env, start,  # noqa: E402
                           stop, stored)


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process and its children (uvicorn's workers), from /proc."""
    total, seen = 0, False
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    seen = True
        except OSError:
            continue
    return total / 1024 if seen else None


async def soak(server, writer: Writer, minutes: float, rate: float, admin_rate: float) -> dict:
    client = Client("127.0.0.1", server.port, {"X-API-Key": KEY})
    reader = Client("127.0.0.1", server.port, {"X-API-Key": KEY})
    seconds = minutes * 60.0
    n = int(seconds * rate)
    busy: set[str] = set()
    per_minute: list[list[float]] = [[] for _ in range(int(minutes + 0.999))]
    memory: list[tuple[float, float | None]] = []
    reads = {"n": 0, "errors": {}, "latencies": []}
    skipped = {"n": 0}
    start = time.perf_counter()
    bar = tqdm(total=n, desc=f"soak at {rate:g}/s", unit="req")

    async def one(pid: str):
        busy.add(pid)
        t0 = time.perf_counter()
        await writer.post(client, pid)
        per_minute[min(int((t0 - start) / 60), len(per_minute) - 1)].append(time.perf_counter() - t0)
        busy.discard(pid)
        bar.update(1)

    async def admin():
        paths = ["/patients?limit=100", "/alarms?state=active&limit=100", "/stats", "/metrics"]
        i = 0
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            try:
                code, _ = await reader.request("GET", paths[i % len(paths)])
                status = str(code)
            except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                status = type(err).__name__
            reads["latencies"].append(time.perf_counter() - t0)
            if status != "200":
                reads["errors"][status] = reads["errors"].get(status, 0) + 1
            reads["n"] += 1
            i += 1
            await asyncio.sleep(max(0.0, 1.0 / admin_rate - (time.perf_counter() - t0)))

    async def sample_memory():
        while time.perf_counter() - start < seconds:
            memory.append((round(time.perf_counter() - start, 1), rss_mib(server.proc.pid)))
            await asyncio.sleep(5)

    side = [asyncio.create_task(sample_memory())]
    if admin_rate > 0:
        side.append(asyncio.create_task(admin()))
    tasks, k = [], 0
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for _ in range(len(writer.pids)):  # the next patient without a request in flight
            pid = writer.pids[k % len(writer.pids)]
            k += 1
            if pid not in busy:
                break
        else:
            skipped["n"] += 1
            continue
        tasks.append(asyncio.create_task(one(pid)))
    await asyncio.gather(*tasks, *side)
    took = time.perf_counter() - start
    bar.close()
    resent = client.resets_retried + reader.resets_retried
    await client.close()
    await reader.close()
    return {"requests": len(tasks), "seconds": took, "achieved_per_s": len(tasks) / took,
            "skipped_all_patients_busy": skipped["n"], "errors": writer.errors, **pct(writer.latencies),
            "per_minute": [{"minute": m + 1, "requests": len(lat), **pct(lat)} for m, lat in enumerate(per_minute)],
            "reads": {"requests": reads["n"], "errors": reads["errors"], **pct(reads["latencies"])},
            "idle_connection_resets_resent": resent,
            "server_rss_mib": memory}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=50.0, help="observations per second (open loop)")
    p.add_argument("--admin-rate", type=float, default=2.0, help="dashboard-like reads per second (0: none)")
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg-url", default=os.environ.get("SEPSIS_TEST_PG_URL"))
    p.add_argument("--model-dir", default=None, help="model folder (default: the registry's default)")
    p.add_argument("--out", default=None, help="JSON file (default results/service_soak/<db>-<rate>rps-<minutes>min.json)")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="soak_"))
    model_dir = pick_model(tmp, args.model_dir)
    writer = Writer(args.patients, prefix="soak")
    try:
        with database(args.db, args.pg_url, tmp) as db_url:
            server = start(service_env(db_url, model_dir), workers=args.workers, log=tmp / "service.log")
            try:
                out = asyncio.run(soak(server, writer, args.minutes, args.rate, args.admin_rate))
                lost = 0
                for pid in writer.pids:
                    db = stored(server.url, pid)
                    lost += sum(h not in db for h in writer.answered[pid])
            finally:
                stop(server.proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"command": "python bench/soak.py " + " ".join(sys.argv[1:]), "db": args.db, "workers": args.workers,
              "rate": args.rate, "minutes": args.minutes, "patients": args.patients, "model": model_label(model_dir),
              **out, "answered": writer.total(), "lost": lost,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_at_end": os.getloadavg()}}
    dest = Path(args.out or ROOT / "results" / "service_soak" / f"{args.db}-{args.rate:g}rps-{args.minutes:g}min.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    rss = [m for _, m in out["server_rss_mib"] if m is not None]
    print(f"{args.db}: {out['requests']} requests in {out['seconds']:.0f} s ({out['achieved_per_s']:.1f}/s of {args.rate:g}), "
          f"errors {out['errors'] or 0}, p50 {out['p50_ms']:.1f} p95 {out['p95_ms']:.1f} p99 {out['p99_ms']:.1f} "
          f"max {out['max_ms']:.0f} ms; reads {out['reads']['requests']} (errors {out['reads']['errors'] or 0}, "
          f"p99 {out['reads']['p99_ms'] or 0:.1f} ms); server RSS {min(rss, default=0):.0f}-{max(rss, default=0):.0f} MiB; "
          f"answered {writer.total()}, lost {lost}; wrote {dest}")
    return 0 if lost == 0 and not out["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
