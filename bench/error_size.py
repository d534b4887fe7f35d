"""What a huge invalid body costs the service: the 422's size, the time to answer, the server's memory.

Issue 16 measured one /predict with 600,000 unknown variable names (a 9 MB body) answered by a
465 MB 422 after about 10 s, the server's RSS going from 132 to 955 MiB. This starts the service
(`python -m service`, SQLite, one worker) from --root, a source tree (this one by default; an
export of an older commit to compare, e.g. `git archive COMMIT | tar -x -C /tmp/old`), sends

  unknown_names   one /predict with --names unknown variable names X000000... (9 MB for 600,000);
  long_names      the same with 21-character names (18 MB: over the default body limit of 16 MiB);
  bad_batch       one /predict/batch of --rows rows, every one of the 39 variables out of range;

and prints, per case: HTTP status, response bytes, seconds, the server's RSS before, after and at
its peak (VmHWM), and its RSS --settle seconds later. Appends the figures to --out (JSON).

    python bench/error_size.py --label after
    python bench/error_size.py --root /tmp/old --label before
"""
from __future__ import annotations

import argparse
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

from devtools.processes import free_port, wait_for  # noqa: E402  (after the path: runnable as a script)

KEY = "sk_bench_admin"
T0 = "2024-01-01T00:00:00Z"
# every variable the client may send, each far outside its range
OUT_OF_RANGE = {"HR": 900, "O2Sat": 900, "Temp": 900, "SBP": 900, "MAP": 900, "DBP": 900, "Resp": 900, "EtCO2": 900,
                "BaseExcess": 900, "HCO3": 900, "FiO2": 900, "pH": 900, "PaCO2": 900, "SaO2": 900, "AST": -1,
                "BUN": 900, "Alkalinephos": -1, "Calcium": 900, "Chloride": 900, "Creatinine": 900,
                "Bilirubin_direct": 900, "Glucose": -1, "Lactate": 900, "Magnesium": 900, "Phosphate": 900,
                "Potassium": 900, "Bilirubin_total": 900, "TroponinI": 9000, "Hct": 900, "Hgb": 900, "PTT": 900,
                "WBC": 900, "Fibrinogen": 9000, "Platelets": 9000, "Age": 900, "Gender": 2, "Unit1": 2, "Unit2": 2,
                "HospAdmTime": 900}


def memory_mib(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def case(client: httpx.Client, pid: int, path: str, body: bytes, settle: float) -> dict:
    before = memory_mib(pid)
    start = time.perf_counter()
    r = client.post(path, content=body, headers={"X-API-Key": KEY, "content-type": "application/json"})
    seconds = time.perf_counter() - start
    after = memory_mib(pid)
    time.sleep(settle)
    settled = memory_mib(pid)
    try:
        parsed = r.json()
        count, kept, detail = parsed.get("error_count"), len(parsed.get("errors") or []), parsed["detail"][:160]
    except ValueError:
        count = kept = detail = None
    return {"status": r.status_code, "request_bytes": len(body), "response_bytes": len(r.content),
            "seconds": round(seconds, 3), "rss_before_mib": round(before["VmRSS"], 1),
            "rss_after_mib": round(after["VmRSS"], 1), "rss_peak_mib": round(after["VmHWM"], 1),
            f"rss_{settle:g}s_later_mib": round(settled["VmRSS"], 1), "errors_listed": kept,
            "error_count": count, "detail_starts": detail}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="the source tree whose service is measured")
    p.add_argument("--label", default="this tree")
    p.add_argument("--names", type=int, default=600_000)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--settle", type=float, default=5.0, help="seconds before the last RSS reading")
    p.add_argument("--out", default=str(ROOT / "results" / "service_contract" / "error_size.json"))
    args = p.parse_args()

    def unknown(fmt: str) -> bytes:
        names = {fmt.format(i): 1.0 for i in range(args.names)}
        return json.dumps({"patient_id": "e1", "timestamp": T0, "vitals": names}).encode()

    bodies = {
        "unknown_names": ("/predict", unknown("X{:06d}")),
        "long_names": ("/predict", unknown("UnknownVariable{:06d}")),
        "bad_batch": ("/predict/batch", json.dumps({"observations": [
            {"patient_id": f"b{i}", "timestamp": T0, "vitals": OUT_OF_RANGE} for i in range(args.rows)]}).encode()),
    }
    root = Path(args.root).resolve()
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "SEPSIS_DB_URL": f"sqlite:///{tmp}/bench.db", "SEPSIS_BOOTSTRAP_KEYS": f"admin:{KEY}",
               "SEPSIS_DEVICE": "cpu", "PYTHONPATH": str(root)}
        proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port)], cwd=root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(f"http://127.0.0.1:{port}/ready", proc)
            results = {}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                for name, (path, body) in bodies.items():
                    results[name] = case(client, proc.pid, path, body, args.settle)
                    print(f"{args.label:>10} {name:14s} " + " ".join(f"{k}={v}" for k, v in results[name].items()
                                                                      if k != "detail_starts"), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text()) if out.exists() else []
    runs.append({"label": args.label, "root_commit": commit, "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                 "names": args.names, "rows": args.rows, "results": results})
    out.write_text(json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
