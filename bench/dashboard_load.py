"""Dashboard page load with a full ward: N monitored patients (default 500) x H hourly observations
scored by a real service on loopback (the shipped model unless --fixture-model), then:

  api        the ward's service calls (/ready, one /patients list, one /alarms?state=active)
  page       each page's script run through Streamlit's AppTest (what the server does per load),
             cold (empty detail cache) and warm (the auto-refresh case)
  browser    headless Chromium: navigation to the ward until its tiles are drawn (skipped if absent)

    python bench/dashboard_load.py [--patients 500] [--hours 48] [--repeats 5] [--json out.json]
Prints medians (and max) in seconds; the target is under 2 s for the ward with 500 patients.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from devtools.processes import APP, free_port, start_dashboard, start_service, stop  # noqa: E402

KEYS = {"admin": "bench-admin", "viewer": "bench-viewer"}


def iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def fill(url: str, patients: int, hours: int, seed: int = 0) -> dict:
    """Admit `patients` (MICU/SICU/other) and post `hours` hourly observations each, batched by hour."""
    rng = np.random.default_rng(seed)
    start = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=hours)
    ids = [f"bench-{i:04d}" for i in range(patients)]
    with httpx.Client(base_url=url, headers={"X-API-Key": KEYS["admin"]}, timeout=120) as c:
        for i, pid in enumerate(tqdm(ids, desc="admitting", unit="patient")):
            r = c.post("/patients", json={"patient_id": pid, "age": float(rng.integers(20, 90)), "gender": int(i % 2),
                                          "unit": ("MICU", "SICU", "other")[i % 3], "icu_admit_time": iso(start)})
            r.raise_for_status()
        for h in tqdm(range(hours), desc="scoring hours", unit="hour"):
            obs = []
            for pid in ids:
                v = {"HR": float(rng.normal(90, 15)), "MAP": float(rng.normal(75, 10)), "O2Sat": float(rng.uniform(90, 100))}
                if h % 4 == 0:
                    v["Temp"] = float(rng.normal(37.4, 0.7))
                if h % 12 == 0:
                    v["Lactate"] = float(rng.uniform(0.5, 5))
                obs.append({"patient_id": pid, "timestamp": iso(start + dt.timedelta(hours=h)), "vitals": v})
            c.post("/predict/batch", json={"observations": obs}).raise_for_status()
        alarms = c.get("/alarms", params={"state": "active", "limit": 10000}).json()
    return {"patients": patients, "hours": hours, "observations": patients * hours, "active_alarms": len(alarms)}


def timed(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3), "n": repeats}


def bench_api(url: str, repeats: int) -> dict:
    from dashboard.client import ServiceClient

    c = ServiceClient(url, KEYS["viewer"], timeout_s=30)
    try:
        return {"ward_calls": timed(lambda: (c.ready(), c.patients(), c.alarms(state="active")), repeats),
                "one_patient_detail": timed(lambda: c.patient("bench-0000"), repeats)}
    finally:
        c.close()


def bench_pages(url: str, repeats: int) -> dict:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["SEPSIS_DASHBOARD_API_URL"] = url
    os.environ["SEPSIS_DASHBOARD_API_KEY"] = KEYS["viewer"]

    def run(path: str, cold: bool, setup=None):
        def go():
            if cold:
                st.cache_resource.clear()
            at = AppTest.from_file(str(APP), default_timeout=120)
            at.run()
            at.switch_page(path)
            if setup:
                setup(at)
            at.run()
            if at.exception or at.error:
                raise RuntimeError(f"{path}: {[e.value for e in at.exception] or [e.value for e in at.error]}")
        return go

    def sicu(at):
        at.session_state["ward_unit"] = "SICU"

    out = {}
    # the navigation run (entry script) is included, as in a browser's first load
    out["ward_cold"] = timed(run("views/ward.py", cold=True), repeats)
    out["ward_warm"] = timed(run("views/ward.py", cold=False), repeats)
    out["ward_unit_filter_cold"] = timed(run("views/ward.py", cold=True, setup=sicu), max(1, repeats // 2))
    out["ward_unit_filter_warm"] = timed(run("views/ward.py", cold=False, setup=sicu), repeats)
    out["patient"] = timed(run("views/patient.py", cold=False), repeats)
    out["alarm_queue"] = timed(run("views/alarms.py", cold=False), repeats)
    out["performance"] = timed(run("views/performance.py", cold=False), repeats)
    return out


def bench_browser(url: str, repeats: int, workdir: Path) -> dict | str:
    from devtools.browser import Browser, find_chromium

    if find_chromium() is None:
        return "skipped: chromium is not installed"
    port = free_port()
    proc = start_dashboard(port, url, KEYS["viewer"], log_path=workdir / "streamlit.log")
    try:
        times = []
        with Browser(width=1400, height=1000) as b:
            b.open(f"http://127.0.0.1:{port}/", until="document.querySelector('[data-patient]')", timeout_s=60, settle_s=0)
            for _ in range(repeats):  # each a full navigation: new websocket session, new script run
                t = time.perf_counter()
                b.open(f"http://127.0.0.1:{port}/?r={time.time()}", until="document.querySelectorAll('[data-patient]').length >= 24",
                       timeout_s=60, settle_s=0)
                times.append(time.perf_counter() - t)
        return {"ward_navigation_to_tiles": {"median_s": round(statistics.median(times), 3),
                                             "max_s": round(max(times), 3), "n": repeats}}
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=500)
    p.add_argument("--hours", type=int, default=48)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--fixture-model", action="store_true", help="a tiny fixture model instead of the shipped one")
    p.add_argument("--json", default=None, help="also write the numbers here")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dashload-") as tmp:
        work = Path(tmp)
        env = {"SEPSIS_DB_URL": f"sqlite:///{work / 'service.db'}", "SEPSIS_DEVICE": "cpu",
               "SEPSIS_BOOTSTRAP_KEYS": ",".join(f"{r}:{k}" for r, k in KEYS.items())}
        if a.fixture_model:
            from models.testing import write_fixture_model

            write_fixture_model(work / "models" / "sepsis-cfc" / "1", threshold=0.5)
            env["SEPSIS_MODELS_DIR"] = str(work / "models")
        port = free_port()
        proc = start_service(port, env, work / "service.log")
        url = f"http://127.0.0.1:{port}"
        try:
            ready = httpx.get(f"{url}/ready").json()
            result = {"machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
                      "model": f"{ready['model']} v{ready['model_version']} ({ready['provider']})",
                      "data": fill(url, a.patients, a.hours)}
            print(f"ward: {result['data']}; model {result['model']}", flush=True)
            result["api"] = bench_api(url, a.repeats)
            result["page"] = bench_pages(url, a.repeats)
            result["browser"] = bench_browser(url, a.repeats, work)
        finally:
            stop(proc)
    result["machine"]["load_1min_after"] = os.getloadavg()[0]
    for section in ("api", "page", "browser"):
        if isinstance(result[section], str):
            print(f"{section:8} {result[section]}")
            continue
        for name, t in result[section].items():
            print(f"{section:8} {name:28} median {t['median_s']:.3f} s  max {t['max_s']:.3f} s  (n={t['n']})")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
