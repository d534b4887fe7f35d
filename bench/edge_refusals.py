"""What the service's edges cost: refusals that must be cheap, and a scrape that must stay small.

Starts the service (`python -m service`, SQLite, one worker) from --root, a source tree (this one by
default; an export of an older commit to compare, e.g. `git archive COMMIT | tar -x -C /tmp/old`), and
measures

  keyless_body   one /predict without a key carrying a --mib MiB body: status, seconds, the server's
                 RSS before and its peak (VmHWM) after;
  keyless_x4     four of them at once: the slowest answer's seconds and the peak;
  big_bundle     one FHIR Bundle of --entries Observations (one patient, one per hour) with an ingest
                 key, over the default row cap of 1000: status and seconds (the body limit is raised to
                 64 MiB so that the row cap is what refuses it);
  junk_scrape    /metrics bytes before and after --junk keyless requests with made-up methods and paths
                 (served with --http h11 by default: it hands any method token to the app, where httptools
                 answers an unknown one 400 itself).

Run once per tree; appends the figures to --out (JSON).

    python bench/edge_refusals.py --label after
    python bench/edge_refusals.py --root /tmp/old --label before
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.error_size import memory_mib  # noqa: E402  (after the path: runnable as a script)
from devtools.processes import free_port, wait_for  # noqa: E402

KEY = "sk_bench_admin"


def _bundle(n: int) -> bytes:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    entries = [{"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "b1"},
                "request": {"method": "POST", "url": "Patient"}}]
    entries += [{"fullUrl": f"urn:uuid:o{i}", "request": {"method": "POST", "url": "Observation"}, "resource": {
        "resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/b1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "effectiveDateTime": (start + dt.timedelta(hours=i)).isoformat().replace("+00:00", "Z"),
        "valueQuantity": {"value": 80, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}}
                for i in range(n)]
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="the source tree whose service is measured")
    p.add_argument("--label", default="this tree")
    p.add_argument("--mib", type=float, default=15.0)
    p.add_argument("--entries", type=int, default=50_000)
    p.add_argument("--junk", type=int, default=957)
    p.add_argument("--http", default="h11", help="SEPSIS_HTTP for the server")
    p.add_argument("--out", default=str(ROOT / "results" / "service_contract" / "edge_refusals.json"))
    args = p.parse_args()
    pad = b"x" * int(args.mib * 1024 * 1024)
    keyless = b'{"patient_id": "k1", "timestamp": "2024-01-01T00:00:00Z", "vitals": {}, "pad": "' + pad + b'"}'
    bundle = _bundle(args.entries)
    root = Path(args.root).resolve()
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "SEPSIS_DB_URL": f"sqlite:///{tmp}/bench.db", "SEPSIS_BOOTSTRAP_KEYS": f"admin:{KEY}",
               "SEPSIS_DEVICE": "cpu", "PYTHONPATH": str(root), "SEPSIS_MAX_BODY_BYTES": str(64 * 2**20),
               "SEPSIS_HTTP": args.http}
        proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port)], cwd=root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(f"http://127.0.0.1:{port}/ready", proc)
            base = f"http://127.0.0.1:{port}"

            def post_keyless(_=None) -> tuple[int, float]:
                start = time.perf_counter()
                r = httpx.post(base + "/predict", content=keyless, headers={"content-type": "application/json"},
                               timeout=600)
                return r.status_code, time.perf_counter() - start

            before = memory_mib(proc.pid)
            status, seconds = post_keyless()
            results["keyless_body"] = {"status": status, "seconds": round(seconds, 3),
                                       "rss_before_mib": round(before["VmRSS"], 1),
                                       "rss_peak_mib": round(memory_mib(proc.pid)["VmHWM"], 1)}
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(post_keyless, range(4)))
            results["keyless_x4"] = {"statuses": sorted({s for s, _ in answers}),
                                     "slowest_seconds": round(max(t for _, t in answers), 3),
                                     "rss_peak_mib": round(memory_mib(proc.pid)["VmHWM"], 1)}
            start = time.perf_counter()
            r = httpx.post(base + "/fhir", content=bundle, timeout=600,
                           headers={"X-API-Key": KEY, "content-type": "application/fhir+json"})
            results["big_bundle"] = {"status": r.status_code, "entries": args.entries + 1, "body_mib":
                                     round(len(bundle) / 2**20, 1), "seconds": round(time.perf_counter() - start, 3),
                                     "says": r.text[:150]}
            scrape = lambda: len(httpx.get(base + "/metrics", headers={"X-API-Key": KEY}, timeout=60).content)  # noqa: E731
            first = scrape()
            with httpx.Client(base_url=base, timeout=60) as client:
                for i in range(args.junk):
                    client.request(f"X{i}", f"/nowhere/{i}")
            results["junk_scrape"] = {"requests": args.junk, "bytes_before": first, "bytes_after": scrape()}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    for name, figures in results.items():
        print(f"{args.label:>10} {name:13s} " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text()) if out.exists() else []
    runs.append({"label": args.label, "root_commit": commit, "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                 "mib": args.mib, "http": args.http, "results": results})
    out.write_text(json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
