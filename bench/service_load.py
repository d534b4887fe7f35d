"""Load test of the monitoring service on loopback, beside a naive stateless baseline.

Starts the service (`python -m service`, SQLite file, one worker) and, separately, a naive service
that stores raw observations and recomputes each patient's whole history per request. This
process drives both over HTTP:
  1. saturation: --patients patients, each streamed hour after hour by --concurrency closed-loop
     clients for --seconds: sustained requests/s;
  2. fixed rate: --rate requests/s open-loop for --seconds: p50/p95/p99 latency;
then checks that every accepted observation is stored (no lost observations). Every patient
starts with --history hours already stored, so the baseline's recomputation is realistic.
Writes results/service_load/metrics.json and latency.png.

    python bench/service_load.py --seconds 15 --patients 64
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.processes import free_port, wait_for  # noqa: E402  (after the path: runnable as a script)
KEY = "sk_bench_admin"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


# -- the naive baseline (runs in its own process: `--serve-naive`) ----------------------------------

def naive_app(db_url: str, model_dir: str):
    """Same validation, storage and runtime as the service, but no state: every request reloads the
    patient's history and runs the model over all of it."""
    from fastapi import FastAPI
    from sqlalchemy import JSON, Column, Float, MetaData, String, Table, create_engine, insert, select

    from models.runtime import StepRuntime
    from service.inputs import elapsed_hours, iculos, model_input
    from service.schemas import BatchRequest, Observation

    meta = MetaData()
    obs = Table("obs", meta, Column("patient_id", String, index=True), Column("ts", String), Column("vitals", JSON),
                Column("hours", Float))
    engine = create_engine(db_url, connect_args={"check_same_thread": False, "timeout": 30})
    meta.create_all(engine)
    rt = StepRuntime.open(model_dir, device="cpu", intra_op_threads=1)
    app = FastAPI()

    def score(pid: str):
        with engine.begin() as c:
            rows = c.execute(select(obs.c.vitals, obs.c.hours).where(obs.c.patient_id == pid).order_by(obs.c.hours)).all()
        first = rows[0].hours
        x = np.stack([model_input(r.vitals, {}, np.floor(r.hours - first) + 1) for r in rows])
        gaps = np.diff([r.hours for r in rows], prepend=first).astype(np.float32)
        return float(rt.run_sequence(x, gaps)[-1])

    @app.post("/predict")
    def predict(body: Observation):
        hours = (body.timestamp - T0).total_seconds() / 3600
        with engine.begin() as c:
            c.execute(insert(obs).values(patient_id=body.patient_id, ts=body.timestamp.isoformat(),
                                         vitals=body.vitals, hours=hours))
        return {"risk": score(body.patient_id)}

    @app.post("/predict/batch")
    def batch(body: BatchRequest):
        with engine.begin() as c:
            c.execute(insert(obs), [dict(patient_id=o.patient_id, ts=o.timestamp.isoformat(), vitals=o.vitals,
                                         hours=(o.timestamp - T0).total_seconds() / 3600) for o in body.observations])
        return {"ok": True}

    @app.get("/ready")
    def ready():
        return {"ready": True}

    return app


# -- helpers ---------------------------------------------------------------------------------------

class RawHTTP:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: the load generator must cost far
    less CPU than the server it measures (httpx tops out near 400 requests/s on one core)."""

    def __init__(self, host: str, port: int, headers: dict):
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.idle: list = []

    async def _conn(self):
        if self.idle:
            return self.idle.pop()
        return await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, payload=None):
        data = b"" if payload is None else json.dumps(payload).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
        reader, writer = await self._conn()
        try:
            writer.write(head + data)
            status_line = await reader.readline()
            if not status_line:  # the server closed an idle keep-alive connection: reconnect once
                writer.close()
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(head + data)
                status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
        except Exception:
            writer.close()
            raise
        self.idle.append((reader, writer))
        return int(status_line.split()[1]), body

    async def close(self):
        for _, w in self.idle:
            w.close()
        self.idle.clear()



def vitals(rng: np.random.Generator, hour: int) -> dict:
    v = {"HR": round(float(rng.uniform(60, 140)), 1), "MAP": round(float(rng.uniform(55, 100)), 1),
         "O2Sat": round(float(rng.uniform(88, 100)), 1), "Resp": round(float(rng.uniform(10, 30)), 1)}
    if hour % 4 == 0:
        v.update(Temp=round(float(rng.uniform(36, 39.5)), 1), Lactate=round(float(rng.uniform(0.5, 4)), 2))
    return v


def body(pid: str, hour: int, rng) -> dict:
    return {"patient_id": pid, "timestamp": (T0 + dt.timedelta(hours=hour)).isoformat(), "vitals": vitals(rng, hour)}


def pct(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    a = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "p99_ms": float(np.percentile(a, 99))}


class Load:
    def __init__(self, url: str, patients: int, history: int, seed: int = 0):
        self.url = url
        self.pids = [f"bench-{i:04d}" for i in range(patients)]
        self.next_hour = {p: history for p in self.pids}
        self.accepted = {p: history for p in self.pids}
        self.rng = np.random.default_rng(seed)
        self.errors: dict[str, int] = {}
        self.history = history

    async def seed(self, client: RawHTTP) -> None:
        for i in range(0, len(self.pids), 16):
            items = [body(p, h, self.rng) for p in self.pids[i:i + 16] for h in range(self.history)]
            status, text = await client.request("POST", "/predict/batch", {"observations": items})
            if status != 200:
                raise RuntimeError(f"seeding failed: HTTP {status} {text[:500]}")

    async def one(self, client: RawHTTP, pid: str, lat: list[float]) -> None:
        hour = self.next_hour[pid]
        self.next_hour[pid] += 1
        payload = body(pid, hour, self.rng)
        start = time.perf_counter()
        try:
            code, _ = await client.request("POST", "/predict", payload)
            status = str(code)
        except (OSError, asyncio.IncompleteReadError) as err:
            status = type(err).__name__
        lat.append(time.perf_counter() - start)
        if status == "200":
            self.accepted[pid] += 1
        else:
            self.errors[status] = self.errors.get(status, 0) + 1

    async def saturate(self, client, seconds: float, concurrency: int, keep_latencies: bool = False) -> dict:
        lat: list[float] = []
        stop = time.perf_counter() + seconds

        # each client owns its own patients (a patient's hours must stay in order), so there can be
        # no more clients than patients
        clients = min(concurrency, len(self.pids))

        async def worker(k: int):
            mine = self.pids[k::clients]
            i = 0
            while time.perf_counter() < stop:
                await self.one(client, mine[i % len(mine)], lat)
                i += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        took = time.perf_counter() - start
        out = {"requests": len(lat), "seconds": took, "requests_per_s": len(lat) / took, "clients": clients, **pct(lat)}
        return {**out, "latencies_s": lat} if keep_latencies else out

    async def fixed_rate(self, client, seconds: float, rate: float) -> dict:
        lat: list[float] = []
        tasks = []
        start = time.perf_counter()
        n = int(seconds * rate)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(client, self.pids[i % len(self.pids)], lat)))
        await asyncio.gather(*tasks)
        took = time.perf_counter() - start
        return {"requests": n, "target_per_s": rate, "achieved_per_s": n / took, **pct(lat), "latencies_ms": [x * 1000 for x in lat]}


async def drive(url: str, args, stored_count) -> dict:
    load = Load(url, args.patients, args.history)
    port = int(url.rsplit(":", 1)[1])
    client = RawHTTP("127.0.0.1", port, {"X-API-Key": KEY})
    try:
        await load.seed(client)
        sat = await load.saturate(client, args.seconds, args.concurrency)
        rate = await load.fixed_rate(client, args.seconds, args.rate)
        lost = None
        if stored_count is not None:
            lost = 0
            for pid in load.pids:
                lost += load.accepted[pid] - await stored_count(client, pid)
    finally:
        await client.close()
    mean_hist = float(np.mean(list(load.next_hour.values())))
    return {"saturation": sat, "fixed_rate": rate, "errors": load.errors, "lost_observations": lost,
            "mean_history_hours_at_end": mean_hist}


async def stored_count(client: RawHTTP, pid: str) -> int:
    status, text = await client.request("GET", f"/patients/{pid}")
    return json.loads(text)["n_observations"]


def start_server(cmd: list[str], env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/ready", proc)
    except BaseException:
        proc.kill()
        raise
    return proc


def pick_model(tmp: Path, requested: str | None) -> Path:
    if requested:
        return Path(requested)
    from models.registry import ModelNotFoundError, resolve

    try:
        return resolve().path
    except ModelNotFoundError:
        from models.testing import write_fixture_model

        return write_fixture_model(tmp / "models" / "sepsis-cfc" / "1", state_size=8, threshold=0.5)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("stateful", "naive"):
        lat = np.sort(result[name]["fixed_rate"]["latencies_ms"])
        if len(lat):
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=f"{name} (p99 {np.percentile(lat, 99):.1f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel(f"latency at {result['args']['rate']:.0f} requests/s (ms, client-observed)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"/predict on loopback, SQLite, model {result['model']}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    p.add_argument("--patients", type=int, default=64)
    p.add_argument("--history", type=int, default=48, help="hours stored per patient before measuring")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop clients in the saturation phase")
    p.add_argument("--rate", type=float, default=100.0, help="requests/s in the fixed-rate phase")
    p.add_argument("--model-dir", default=None, help="model folder (default: the registry's default, else the test fixture)")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--out", default=str(ROOT / "results" / "service_load"))
    p.add_argument("--serve-naive", nargs=3, metavar=("DB_URL", "MODEL_DIR", "PORT"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.serve_naive:
        import uvicorn

        db, model_dir, port = args.serve_naive
        uvicorn.run(naive_app(db, model_dir), host="127.0.0.1", port=int(port), log_level="warning")
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="service_load_"))
    model_dir = pick_model(tmp, args.model_dir)
    from models.card import load_card

    card = load_card(model_dir / "model_card.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEPSIS_DB_URL": f"sqlite:///{tmp / 'service.db'}",
           "SEPSIS_MODELS_DIR": str(model_dir.parent.parent), "SEPSIS_MODEL": card.name,
           "SEPSIS_MODEL_VERSION": card.version, "SEPSIS_BOOTSTRAP_KEYS": f"admin:{KEY}", "SEPSIS_DEVICE": "cpu"}
    result = {"model": f"{card.name} v{card.version} (S={card.state_size})", "args": vars(args),
              "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                          "load_average_at_start": os.getloadavg()}}
    port = free_port()
    proc = start_server([sys.executable, "-m", "service", "--port", str(port)], env, port)
    try:
        print(f"stateful service on :{port}, model {result['model']}")
        result["stateful"] = asyncio.run(drive(f"http://127.0.0.1:{port}", args, stored_count))
    finally:
        proc.terminate()
        proc.wait(10)
    if not args.skip_naive:
        port = free_port()
        proc = start_server([sys.executable, __file__, "--serve-naive", f"sqlite:///{tmp / 'naive.db'}", str(model_dir),
                             str(port)], env, port)
        try:
            print(f"naive baseline on :{port}")
            result["naive"] = asyncio.run(drive(f"http://127.0.0.1:{port}", args, None))
        finally:
            proc.terminate()
            proc.wait(10)
        result["throughput_ratio"] = (result["stateful"]["saturation"]["requests_per_s"]
                                      / result["naive"]["saturation"]["requests_per_s"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "naive" in result:
        plot(result, out / "latency.png")
    summary = json.loads(json.dumps(result))
    for name in ("stateful", "naive"):
        if name in summary:
            summary[name]["fixed_rate"].pop("latencies_ms")
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    for name in ("stateful", "naive"):
        if name not in summary:
            continue
        s, f = summary[name]["saturation"], summary[name]["fixed_rate"]
        print(f"{name:9s} saturation {s['requests_per_s']:7.1f} req/s (p50 {s['p50_ms']:.1f} p99 {s['p99_ms']:.1f} ms) | "
              f"at {f['target_per_s']:.0f}/s: p50 {f['p50_ms']:.1f} p95 {f['p95_ms']:.1f} p99 {f['p99_ms']:.1f} ms "
              f"(achieved {f['achieved_per_s']:.1f}/s) | errors {summary[name]['errors']} | lost {summary[name]['lost_observations']} "
              f"| mean history {summary[name]['mean_history_hours_at_end']:.0f} h")
    if "throughput_ratio" in summary:
        print(f"throughput ratio stateful/naive: {summary['throughput_ratio']:.1f}x")
    print(f"load average at start {result['machine']['load_average_at_start'][0]:.1f}, at end {os.getloadavg()[0]:.1f} "
          f"({os.cpu_count()} cores; the load generator shares them)")
    print(f"wrote {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
