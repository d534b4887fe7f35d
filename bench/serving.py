"""What the service benchmarks share: a service process (optionally under strace) with a fixed model
and key, a writer of hourly observations that remembers what was answered, and percentiles."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service_load import T0, RawHTTP, pick_model, vitals  # noqa: E402  (after the path: runnable as a script)
from devtools.processes import free_port, wait_for  # noqa: E402

KEY = "sk_bench_admin"


def service_env(db_url: str, model_dir: Path, **settings) -> dict[str, str]:
    from models.card import load_card

    card = load_card(model_dir / "model_card.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEPSIS_DB_URL": db_url,
           "SEPSIS_MODELS_DIR": str(model_dir.parent.parent), "SEPSIS_MODEL": card.name,
           "SEPSIS_MODEL_VERSION": str(card.version), "SEPSIS_BOOTSTRAP_KEYS": f"admin:{KEY}", "SEPSIS_DEVICE": "cpu"}
    env.update({f"SEPSIS_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def model_label(model_dir: Path) -> str:
    from models.card import load_card

    card = load_card(model_dir / "model_card.json")
    return f"{card.name} v{card.version} (S={card.state_size})"


class Client(RawHTTP):
    """RawHTTP that also survives uvicorn resetting an idle keep-alive connection (it closes them
    after 5 s; under load the close can arrive as a reset while a request is being written) by
    sending the request again on a new connection, once, and counting it. A repeat is harmless: an
    observation posted again with the same vitals is stored once."""

    resets_retried = 0

    async def request(self, method: str, path: str, payload=None):
        if not self.idle:  # a new connection: nothing to retry (no await between this and the pop)
            return await super().request(method, path, payload)
        try:
            return await super().request(method, path, payload)
        except (ConnectionResetError, BrokenPipeError):
            self.resets_retried += 1
            spare, self.idle = self.idle, []
            try:
                return await super().request(method, path, payload)
            finally:
                self.idle = spare + self.idle


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    url: str


def start(env: dict, workers: int = 1, strace_to: Path | None = None, log: Path | None = None,
          port: int | None = None) -> Server:
    """`python -m service` on loopback (a free port unless given), in its own process group; with
    `strace_to`, every fsync/fdatasync of the process tree is logged there with its wall-clock time."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if strace_to is not None:
        if shutil.which("strace") is None:
            raise SystemExit("strace is not installed: run without --fsyncs")
        cmd = ["strace", "-f", "--seccomp-bpf", "-ttt", "-e", "trace=fsync,fdatasync", "-o", str(strace_to)] + cmd
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/ready", proc, timeout_s=120)
    except BaseException:
        kill(proc)
        raise
    return Server(proc, port, f"http://127.0.0.1:{port}")


def kill(proc: subprocess.Popen, signal_name: str = "SIGKILL") -> None:
    """The whole process group (uvicorn's workers, strace's child) at once."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, getattr(signal, signal_name))
        except ProcessLookupError:
            pass
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stop(proc: subprocess.Popen) -> None:
    kill(proc, "SIGTERM")


def count_syncs(strace_log: Path, start: float, end: float) -> int:
    """fsync/fdatasync calls logged between two wall-clock times."""
    n = 0
    for line in strace_log.read_text().splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[2].startswith(("fsync(", "fdatasync(")) and start <= float(parts[1]) <= end:
            n += 1
    return n


def observation(pid: str, hour: int, seed: int = 0) -> dict:
    """The same (patient, hour) always gives the same observation, so a stream can be replayed."""
    rng = np.random.default_rng([seed, hour, int(pid.rsplit("-", 1)[-1])])
    return {"patient_id": pid, "timestamp": (T0 + dt.timedelta(hours=hour)).isoformat(), "vitals": vitals(rng, hour)}


def pct(latencies_s: list[float]) -> dict:
    if not latencies_s:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    a = np.array(latencies_s) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


@dataclass
class Writer:
    """Hourly observations for `patients` patients; each patient's next hour follows its last
    answered one, and every answer (risk included) is kept for checking against the database."""
    patients: int
    prefix: str = "bench"
    seed: int = 0
    next_hour: dict = field(default_factory=dict)
    answered: dict = field(default_factory=dict)   # pid -> {hour: risk}
    errors: dict = field(default_factory=dict)
    latencies: list = field(default_factory=list)

    def __post_init__(self):
        self.pids = [f"{self.prefix}-{i:05d}" for i in range(self.patients)]
        for p in self.pids:
            self.next_hour.setdefault(p, 0)
            self.answered.setdefault(p, {})

    async def post(self, client: RawHTTP, pid: str) -> bool:
        return await self.post_many(client, [pid])

    async def post_many(self, client: RawHTTP, pids: list[str]) -> bool:
        """Each patient's next hour: one /predict for one patient, one /predict/batch for several."""
        hours = [self.next_hour[p] for p in pids]
        items = [observation(p, h, self.seed) for p, h in zip(pids, hours)]
        path, payload = ("/predict", items[0]) if len(items) == 1 else ("/predict/batch", {"observations": items})
        start = time.perf_counter()
        try:
            code, body = await client.request("POST", path, payload)
            status = str(code)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as err:
            status, body = type(err).__name__, b""
        self.latencies.append(time.perf_counter() - start)
        if status == "200":
            answer = json.loads(body)
            for p, h, r in zip(pids, hours, answer["results"] if len(items) > 1 else [answer]):
                self.answered[p][h] = r["risk"]
                self.next_hour[p] = h + 1
            return True
        self.errors[status] = self.errors.get(status, 0) + 1
        return False

    def total(self) -> int:
        return sum(len(v) for v in self.answered.values())


def stored(url: str, pid: str) -> dict[int, float]:
    """The patient's stored observations as {hour: risk} (GET /patients/ID)."""
    import httpx

    r = httpx.get(f"{url}/patients/{pid}", headers={"X-API-Key": KEY}, timeout=60)
    if r.status_code == 404:
        return {}
    r.raise_for_status()
    return {int(round((dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) - T0).total_seconds() / 3600)):
            e["risk"] for e in r.json()["timeline"]}


def uninterrupted_risks(model_dir: Path, pid: str, hours: list[int], seed: int = 0) -> list[float]:
    """What one uninterrupted stream of these hours gives: the runtime stepped one observation at a
    time from a new patient's state, with the service's own input rules (service/inputs.py)."""
    from models.runtime import StepRuntime
    from service.inputs import demographics_from_vitals, elapsed_hours, iculos, model_input

    runtime = _runtimes.get(model_dir) or _runtimes.setdefault(model_dir, StepRuntime.open(model_dir, device="cpu",
                                                                                            intra_op_threads=1))
    state = runtime.new_state(1)
    risks, previous, first = [], None, None
    demographics = None
    for h in hours:
        o = observation(pid, h, seed)
        ts = dt.datetime.fromisoformat(o["timestamp"])
        first = first or ts
        demographics = demographics if demographics is not None else demographics_from_vitals(o["vitals"])
        x = model_input(o["vitals"], demographics, iculos(ts, first))[None]
        res = runtime.step(x, np.array([[elapsed_hours(ts, previous)]], np.float32), state)
        state, previous = res.next_state, ts
        risks.append(float(res.risk[0]))
    return risks


_runtimes: dict = {}
