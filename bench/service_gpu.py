"""The service end to end under load, over a matrix of execution provider x database x
micro-batching x ward size: where does a /predict's time go?

For each database and ward size a fresh database is seeded (every patient with --history hours,
through /predict/batch); then, for each provider and micro-batching setting, the service
(`python -m service`, one worker, the shipped model) is started on that database and driven by
closed-loop clients for --seconds after a short warm-up. Per configuration it records:
  - sustained /predict per second, p50/p99 client-observed latency, errors;
  - from the service's own /metrics (before/after the measured phase): model runs, mean rows per
    run, model seconds per request;
  - with --profile (py-spy on PATH): a sampling profile of the server process split into
    database / model / HTTP+validation / other, as shares of the sampled non-idle time;
  - GPU utilisation and memory (nvidia-ml-py, when importable), sampled every 0.2 s;
  - a no-loss check: stored observations = answered ones, for a sample of patients.
Results go to --out (one JSON per configuration as it finishes, and summary.json / summary.md).

PostgreSQL: --pg-url URL, or --pgserver to start a private one (the `pgserver` wheel).

    python bench/service_gpu.py --providers cuda cpu --dbs sqlite postgres --pgserver \\
        --microbatch on off --patients 64 1024 10000 --seconds 8 --out results/gpu/service
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from devtools.processes import free_port, start_service, stop  # noqa: E402  (after the path)
from service_load import KEY, Load, RawHTTP, pct  # noqa: E402

SEED_CHUNK = 500  # rows per /predict/batch while seeding


# -- what the server spends its time on ------------------------------------------------------------

CATEGORIES = (  # first match wins, searched from the innermost frame outwards
    ("database", re.compile(r"sqlalchemy|sqlite3|psycopg|service/storage|pgserver")),
    ("model", re.compile(r"onnxruntime|models/runtime|service/inference|service/batcher")),
    ("http", re.compile(r"uvicorn|starlette|fastapi|pydantic|h11|httptools|json")),
    ("service", re.compile(r"service/")),  # the service's own logic (ingest, records, alarms, auth)
)
IDLE = re.compile(r"\b(select|poll|epoll|wait|_wait_for_tstate_lock|acquire|sleep|run_forever|_run_once)\b")


def classify(stack: str) -> str:
    frames = stack.split(";")
    if frames and IDLE.search(frames[-1]) and not any(p.search(frames[-1]) for _, p in CATEGORIES[:2]):
        return "idle"
    for frame in reversed(frames):
        for name, pattern in CATEGORIES:
            if pattern.search(frame):
                return name
    return "other"


def profile_shares(raw: str) -> dict:
    counts: Counter = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[classify(stack)] += int(n)
    busy = sum(v for k, v in counts.items() if k != "idle")
    shares = {k: counts[k] / busy for k in ("database", "model", "http", "service", "other")} if busy else {}
    return {"samples": dict(counts), "busy_shares": shares}


class Profiler:
    def __init__(self, pid: int, seconds: float, path: Path, subprocesses: bool = False):
        self.path = path
        self.proc = None
        if shutil.which("py-spy"):
            self.proc = subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), "-d", str(max(1, int(seconds))), "-r", "200",
                 "--format", "raw", "-o", str(path), "--nonblocking"] + (["--subprocesses"] if subprocesses else []),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def result(self) -> dict | None:
        if self.proc is None:
            return None
        _, err = self.proc.communicate(timeout=60)
        if self.proc.returncode != 0 or not self.path.exists():
            return {"error": err.decode(errors="replace")[-300:]}
        return profile_shares(self.path.read_text())


class GpuSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.util, self.mem, self.stop_flag = [], [], threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            self.nvml = None

    def run(self):
        while self.nvml and not self.stop_flag.is_set():
            self.util.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            self.mem.append(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20)
            time.sleep(0.2)

    def result(self) -> dict | None:
        self.stop_flag.set()
        self.join(2)
        if not self.nvml or not self.util:
            return None
        return {"util_mean_pct": float(np.mean(self.util)), "util_max_pct": float(np.max(self.util)),
                "mem_used_max_mib": float(np.max(self.mem))}


# -- the service's own counters --------------------------------------------------------------------

def scrape(text: str) -> dict:
    """Sums and counts of the histograms this bench reads, from the Prometheus text format."""
    out = {}
    for name in ("sepsis_model_step_seconds", "sepsis_model_batch_rows"):
        for kind in ("sum", "count"):
            m = re.search(rf"^{name}_{kind}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
            out[f"{name}_{kind}"] = float(m.group(1)) if m else 0.0
    out["predict_count"] = sum(float(v) for v in re.findall(
        r'^sepsis_http_request_duration_seconds_count{[^}]*route="/predict"[^}]*status="200"[^}]*} ([0-9.e+-]+)$',
        text, re.M))
    return out


async def metrics(client: RawHTTP) -> dict:
    status, body = await client.request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}: {body[:200]!r}")
    return scrape(body.decode())


async def seed(load: Load, client: RawHTTP) -> None:
    from tqdm.auto import tqdm

    from service_load import body

    rows = [(p, h) for p in load.pids for h in range(load.history)]
    for i in tqdm(range(0, len(rows), SEED_CHUNK), desc=f"seeding {len(load.pids)} patients", unit="batch"):
        items = [body(p, h, load.rng) for p, h in rows[i:i + SEED_CHUNK]]
        status, text = await client.request("POST", "/predict/batch", {"observations": items})
        if status != 200:
            raise RuntimeError(f"seeding failed: HTTP {status} {text[:300]!r}")


async def seed_over(load: Load, port: int) -> None:
    client = RawHTTP("127.0.0.1", port, {"X-API-Key": KEY})
    try:
        await seed(load, client)
    finally:
        await client.close()


async def lost_in_sample(load: Load, client: RawHTTP, n: int = 50) -> int:
    lost = 0
    for pid in load.pids[:: max(1, len(load.pids) // n)]:
        status, text = await client.request("GET", f"/patients/{pid}")
        lost += load.accepted[pid] - json.loads(text)["n_observations"]
    return lost


def _drive_slice(job: dict) -> dict:
    """One load process: its share of the patients (continuing their hours), warm-up then the
    measured phase, both starting at the wall-clock times the parent chose."""
    load = Load("", 0, 0, seed=job["seed"])
    load.pids = list(job["next_hour"])
    load.next_hour = dict(job["next_hour"])
    load.accepted = dict(job["accepted"])

    async def go():
        client = RawHTTP("127.0.0.1", job["port"], {"X-API-Key": KEY})
        try:
            await asyncio.sleep(max(0.0, job["start_at"] - time.time()))
            await load.saturate(client, job["warmup"], job["clients"])
            errors_before = dict(load.errors)
            sat = await load.saturate(client, job["seconds"], job["clients"], keep_latencies=True)
        finally:
            await client.close()
        errors = {k: v - errors_before.get(k, 0) for k, v in load.errors.items() if v - errors_before.get(k, 0)}
        return {"requests": sat["requests"], "seconds": sat["seconds"], "latencies_s": sat["latencies_s"],
                "errors": errors, "next_hour": load.next_hour, "accepted": load.accepted}

    return asyncio.run(go())


def drive(load: Load, port: int, a) -> dict:
    """Closed-loop clients spread over --load-procs processes (one asyncio process tops out near
    the rate of a few server workers), each owning a disjoint share of the patients."""
    procs = max(1, min(a.load_procs, len(load.pids)))
    clients = min(a.concurrency, len(load.pids))
    start_at = time.time() + 1.0
    jobs = []
    for k in range(procs):
        mine = load.pids[k::procs]
        jobs.append({"port": port, "seed": 1000 * k + 1, "start_at": start_at, "warmup": a.warmup, "seconds": a.seconds,
                     "clients": max(1, clients // procs), "next_hour": {p: load.next_hour[p] for p in mine},
                     "accepted": {p: load.accepted[p] for p in mine}})
    pool = multiprocessing.get_context("fork").Pool(procs)
    try:
        pending = pool.map_async(_drive_slice, jobs)
        time.sleep(max(0.0, start_at + a.warmup - time.time()))
        before = asyncio.run(_scrape(port))
        results = pending.get(timeout=a.warmup + a.seconds + 120)
        after = asyncio.run(_scrape(port))
    finally:
        pool.close()
        pool.join()
    lat, errors = [], Counter()
    for r in results:
        lat += r["latencies_s"]
        errors.update(r["errors"])
        load.next_hour.update(r["next_hour"])
        load.accepted.update(r["accepted"])
    took = max(r["seconds"] for r in results)
    return {"clients": sum(j["clients"] for j in jobs), "load_procs": procs, "requests": len(lat),
            "predict_per_s": len(lat) / took, **{k: v for k, v in pct(lat).items() if k != "p95_ms"},
            "errors": dict(errors), "before": before, "after": after}


async def _scrape(port: int) -> dict:
    client = RawHTTP("127.0.0.1", port, {"X-API-Key": KEY})
    try:
        return await metrics(client)
    finally:
        await client.close()


async def _ready_and_lost(load: Load, port: int) -> tuple[dict, int]:
    client = RawHTTP("127.0.0.1", port, {"X-API-Key": KEY})
    try:
        _, ready = await client.request("GET", "/ready")
        return json.loads(ready), await lost_in_sample(load, client)
    finally:
        await client.close()


def measure(load: Load, port: int, pid: int, a, out_dir: Path, tag: str, workers: int) -> dict:
    gpu = GpuSampler()
    gpu.start()
    # py-spy starts with the measured phase (after the load processes' warm-up) and, for several
    # workers, follows the supervisor's children
    prof_box: dict = {}

    def start_profiler():
        time.sleep(1.0 + a.warmup)
        prof_box["p"] = Profiler(pid, a.seconds, out_dir / f"{tag}.spy.txt", subprocesses=workers > 1)

    starter = threading.Thread(target=start_profiler, daemon=True)
    if a.profile:
        starter.start()
    sat = drive(load, port, a)
    if a.profile:
        starter.join()
    gpu_result = gpu.result()
    prof_result = prof_box["p"].result() if "p" in prof_box else None
    ready, lost = asyncio.run(_ready_and_lost(load, port))
    before, after = sat.pop("before"), sat.pop("after")
    d = {k: after[k] - before[k] for k in after}
    runs = d["sepsis_model_step_seconds_count"]
    return {
        "ready": ready, "workers": workers, **sat,
        "model_runs": runs, "rows_per_run": d["sepsis_model_batch_rows_sum"] / runs if runs else None,
        "model_ms_per_run": 1000 * d["sepsis_model_step_seconds_sum"] / runs if runs else None,
        "model_ms_per_request": 1000 * d["sepsis_model_step_seconds_sum"] / d["predict_count"] if d["predict_count"] else None,
        "gpu": gpu_result, "profile": prof_result, "lost_in_sample": lost,
    }


# -- databases -------------------------------------------------------------------------------------

class Databases:
    def __init__(self, a, tmp: Path):
        self.a, self.tmp, self.server, self.n = a, tmp, None, 0
        if "postgres" in a.dbs and not a.pg_url:
            import pgserver

            self.server = pgserver.get_server(str(tmp / "pg"), cleanup_mode="stop")
            a.pg_url = self.server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)

    def fresh(self, kind: str) -> str:
        self.n += 1
        if kind == "sqlite":
            return f"sqlite:///{self.tmp / f'bench{self.n}.db'}"
        import psycopg

        name = f"bench_gpu_{os.getpid()}_{self.n}"
        plain = self.a.pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(plain, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        base, _, query = self.a.pg_url.partition("?")
        base = base.rsplit("/", 1)[0]
        return f"{base}/{name}" + (f"?{query}" if query else "")


def service_env(a, db_url: str, provider: str, microbatch: str, http: str = "auto") -> dict:
    return {"SEPSIS_DB_URL": db_url, "SEPSIS_DEVICE": provider, "SEPSIS_MICROBATCH": microbatch, "SEPSIS_HTTP": http,
            "SEPSIS_BOOTSTRAP_KEYS": f"admin:{KEY}",
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
            **({"SEPSIS_MODELS_DIR": str(Path(a.model_dir).parent.parent), "SEPSIS_MODEL": Path(a.model_dir).parent.name,
                "SEPSIS_MODEL_VERSION": Path(a.model_dir).name} if a.model_dir else {})}


def summary_table(rows: list[dict]) -> str:
    head = ("| db | patients | provider | microbatch | http | workers | /predict per s | p50 ms | p99 ms | rows/run "
            "| model ms/req | db % | model % | http % | service % | GPU util % | errors | lost |\n|" + "---|" * 18)
    lines = [head]
    for r in rows:
        sh = (r.get("profile") or {}).get("busy_shares") or {}
        g = r.get("gpu") or {}
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        lines.append(
            f"| {r['db']} | {r['patients']} | {r['ready'].get('provider')} | {r['microbatch']} | {r.get('http', 'auto')} "
            f"| {r.get('workers', 1)} | {r['predict_per_s']:.0f} "
            f"| {f(r['p50_ms'], '.1f')} | {f(r['p99_ms'], '.1f')} | {f(r['rows_per_run'], '.1f')} "
            f"| {f(r['model_ms_per_request'], '.2f')} | {f(sh.get('database') and 100 * sh['database'], '.0f')} "
            f"| {f(sh.get('model') and 100 * sh['model'], '.0f')} | {f(sh.get('http') and 100 * sh['http'], '.0f')} "
            f"| {f(sh.get('service') and 100 * sh['service'], '.0f')} "
            f"| {f(g.get('util_mean_pct'), '.0f')} | {sum(r['errors'].values())} | {r['lost_in_sample']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--providers", nargs="+", default=["cpu"], choices=("cpu", "cuda"))
    p.add_argument("--dbs", nargs="+", default=["sqlite"], choices=("sqlite", "postgres"))
    p.add_argument("--microbatch", nargs="+", default=["on", "off"], choices=("on", "off"))
    p.add_argument("--patients", nargs="+", type=int, default=[64, 1024])
    p.add_argument("--history", type=int, default=2, help="hours stored per patient before measuring")
    p.add_argument("--concurrency", type=int, default=64, help="closed-loop clients (at most one per patient)")
    p.add_argument("--seconds", type=float, default=8.0, help="measured phase per configuration")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--model-dir", default=None, help="model folder (default: the registry's default)")
    p.add_argument("--pg-url", default=None)
    p.add_argument("--pgserver", action="store_true", help="start a private PostgreSQL (pgserver wheel)")
    p.add_argument("--profile", action="store_true", help="sample the server with py-spy")
    p.add_argument("--http", nargs="+", default=["auto"], choices=("auto", "h11", "httptools"),
                   help="uvicorn's HTTP parser (SEPSIS_HTTP)")
    p.add_argument("--workers", nargs="+", type=int, default=[1], help="uvicorn worker processes")
    p.add_argument("--load-procs", type=int, default=4, help="load-generating processes")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting configurations after this long")
    p.add_argument("--out", default=str(ROOT / "results" / "gpu" / "service"))
    a = p.parse_args()
    if "postgres" in a.dbs and not (a.pg_url or a.pgserver):
        p.error("--dbs postgres needs --pg-url or --pgserver")

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="service_gpu_"))
    dbs = Databases(a, tmp)
    started = time.monotonic()
    rows: list[dict] = []
    meta = {"command": " ".join(sys.argv), "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                       "load_average_at_start": os.getloadavg()}}
    for db in a.dbs:
        for patients in a.patients:
            url = dbs.fresh(db)
            load = Load("", patients, a.history)
            seeded = False
            for provider, mb, http, workers in itertools.product(a.providers, a.microbatch, a.http, a.workers):
                if a.budget_s and time.monotonic() - started > a.budget_s:
                    print(f"budget reached: skipping {db}/{patients}/{provider}/{mb}/{http}/{workers}", flush=True)
                    continue
                tag = f"{db}-{patients}-{provider}-mb{mb}-{http}-w{workers}"
                port = free_port()
                proc = start_service(port, service_env(a, url, provider, mb, http), log_path=out / f"{tag}.log",
                                     workers=workers)
                try:
                    if not seeded:
                        asyncio.run(seed_over(load, port))
                        seeded = True
                    row = {"db": db, "patients": patients, "provider_asked": provider, "microbatch": mb, "http": http,
                           **measure(load, port, proc.pid, a, out, tag, workers)}
                finally:
                    stop(proc)
                rows.append(row)
                (out / f"{tag}.json").write_text(json.dumps(row, indent=2))
                print(summary_table([row]).splitlines()[-1], flush=True)
    (out / "summary.json").write_text(json.dumps({**meta, "runs": rows}, indent=2))
    (out / "summary.md").write_text(f"`{meta['command']}`\n\n" + summary_table(rows))
    print(summary_table(rows))
    if dbs.server is not None:
        dbs.server.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
