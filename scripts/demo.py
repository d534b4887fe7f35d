"""`make demo`: the service (SQLite, the default shipped model), a replay of real ICU stays feeding
it, and the dashboard, on loopback; prints where to look and the demo's API keys. Ctrl-C stops all.

    python scripts/demo.py --data ../shared/data/physionet2019/physionet2019_dev.tar.xz

The replay runs in ward mode (training/sepsis/replay.py --ward): --beds beds stay occupied for as
long as the demo runs, stays admitted staggered, discharged at their end (outcome with
discharged_at) and followed by the next stay under a fresh id. The feed runs faster than real time
(--speed) in the past, so the service runs with the simulated clock (SEPSIS_CLOCK=simulated):
acknowledge, snooze and resolve are stamped with the feed's time, and a 60-minute snooze holds
for 60 data minutes. The ward is at http://127.0.0.1:8501/ward. Files (database, logs) go to
runs/demo/ward/ (git-ignored; `make clean` removes it).

The children run in their own process groups, so Ctrl-C reaches this script alone, which stops
them once and together (SIGTERM): a terminal's Ctrl-C would otherwise reach them too and this
script's own stop would be a second signal, which uvicorn takes as "exit now" (cancelling its
shutdown).
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages sit one folder up

from devtools.processes import wait_for  # noqa: E402

ROLES = ("admin", "ingest", "clinician", "viewer")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/physionet2019/physionet2019_dev.tar.xz"))
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dashboard-port", type=int, default=8501)
    p.add_argument("--beds", type=int, default=40, help="beds the replay keeps occupied")
    p.add_argument("--stays", type=int, default=400, help="test-split stays the replay loops over")
    p.add_argument("--speed", type=float, default=600,
                   help="data hours per wall hour (600: one data hour every 6 s)")
    p.add_argument("--hours", type=float, default=8,
                   help="wall hours the feed runs at --speed before it reaches real time")
    p.add_argument("--format", choices=["json", "fhir"], default="json",
                   help="the replay's messages: JSON, or FHIR (single Observations; Bundles with --feed hourly)")
    p.add_argument("--feed", choices=["realistic", "hourly"], default="realistic",
                   help="realistic: each value its own message as charted, labs late, duplicates, amendments "
                        "(training/sepsis/feed.py); hourly: one complete row per hour")
    a = p.parse_args()
    # `kill` and container stops send SIGTERM: shut the children down as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if not Path(a.data).exists():
        print(f"error: --data {a.data}: no such file (the PhysioNet 2019 archive)", file=sys.stderr)
        return 2

    # something else answering on a port would pass our readiness checks in our processes' place
    for port, make_var, flag in ((a.port, "PORT", "--port"), (a.dashboard_port, "DASHBOARD_PORT", "--dashboard-port")):
        if port_in_use(port):
            print(f"error: port {port} is already in use; stop what runs there or choose another: "
                  f"make demo {make_var}=... (scripts/demo.py {flag} ...)", file=sys.stderr)
            return 2
    work = ROOT / "runs" / "demo" / "ward"
    shutil.rmtree(work, ignore_errors=True)  # a fresh ward each time: replays restart the same stays
    work.mkdir(parents=True)
    keys = {role: f"demo-{role}-{secrets.token_urlsafe(12)}" for role in ROLES}
    url = f"http://127.0.0.1:{a.port}"
    env = {**os.environ, "SEPSIS_DB_URL": f"sqlite:///{work / 'sepsis.db'}",
           "SEPSIS_BOOTSTRAP_KEYS": ",".join(f"{r}:{k}" for r, k in keys.items()),
           "SEPSIS_API_URL": url, "SEPSIS_API_KEY": keys["clinician"], "SEPSIS_CLOCK": "simulated"}
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(a.port)],
                                      cwd=ROOT, env=env, start_new_session=True))
        try:
            wait_for(f"{url}/ready", procs[0])
        except (RuntimeError, TimeoutError) as err:
            raise SystemExit(f"the service did not come up: {err}; see its log above") from None
        print(f"replay: loading {a.stays} stays of the test split from {a.data} (parsed on the first run, "
              f"cached after); first patients on the ward in ~30 s", flush=True)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "training.sepsis.replay", "--data", a.data, "--url", url, "--api-key", keys["admin"],
             "--speed", str(a.speed), "--limit", str(a.stays), "--ward", str(a.beds),
             "--duration", str(a.hours * 3600), "--format", a.format, "--feed", a.feed,
             "--split", "test"],  # stays the shipped model never saw, so the performance page is honest
            cwd=ROOT, env=env, stdout=open(work / "replay.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        # A clinician key: it reads every page and can act on alarms; the sidebar can swap it.
        dashboard_url = f"http://127.0.0.1:{a.dashboard_port}/ward"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dashboard", "--host", "127.0.0.1", "--port", str(a.dashboard_port)],
            cwd=ROOT, env={**env, "SEPSIS_DASHBOARD_API_URL": url, "SEPSIS_DASHBOARD_API_KEY": keys["clinician"],
                           "SEPSIS_DASHBOARD_REFRESH_S": "5"},
            stdout=open(work / "dashboard.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        try:
            wait_for(f"http://127.0.0.1:{a.dashboard_port}/_stcore/health", procs[-1])
        except (RuntimeError, TimeoutError):
            print(f"warning: the dashboard did not come up; see {work / 'dashboard.log'}", file=sys.stderr)
            dashboard_url = None
        print("\nSepsis monitoring demo is up:")
        print(f"  API and docs   {url}/docs   (metrics {url}/metrics with the admin key)")
        if dashboard_url:
            print(f"  dashboard      {dashboard_url}")
        print(f"  replay         {a.beds} beds kept occupied from {a.stays} real stays of the test split at "
              f"{a.speed:g}x ({a.feed} {a.format} feed), on the service's simulated clock, log {work / 'replay.log'}")
        for role, key in keys.items():
            print(f"  {role:9} key    {key}")
        print(f"  try            curl -H 'X-API-Key: {keys['viewer']}' {url}/ward")
        print("Ctrl-C stops everything.\n", flush=True)
        up, first = time.monotonic(), False
        while procs[0].poll() is None:
            if not first and on_ward(url, keys["viewer"]):
                first = True
                print(f"first patients on the ward, {time.monotonic() - up:.0f} s after 'up'", flush=True)
            time.sleep(1)
        return procs[0].returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(procs)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def on_ward(url: str, key: str) -> bool:
    try:
        r = httpx.get(f"{url}/ward", headers={"X-API-Key": key}, timeout=2)
        return r.status_code == 200 and r.json()["patients"]["on_ward"] > 0
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def stop_all(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """One SIGTERM to each child at once (they stop in parallel), then wait for all under one
    deadline; whatever is still running after it is killed."""
    # Already stopping: a second Ctrl-C, or the SIGTERM make passes on, must not cut this short and
    # leave the children (each in its own process group) running; the deadline bounds the wait.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    running = [p for p in procs if p.poll() is None]
    if not running:
        return
    print("stopping the replay, the dashboard and the service ...", flush=True)
    began = time.monotonic()
    for proc in running:
        # SIGTERM, not SIGINT: uvicorn and Streamlit shut down in order on either, and a child
        # started with SIGINT ignored (a demo launched in the background inherits that) still stops
        proc.send_signal(signal.SIGTERM)
    deadline = began + grace_s
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"warning: {' '.join(proc.args[1:3])} did not stop within {grace_s:g} s: killed", file=sys.stderr)
            proc.kill()
    for proc in running:
        proc.wait()
    print(f"stopped in {time.monotonic() - began:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
