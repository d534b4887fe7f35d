"""What looking the API key up on every request costs (the default since a cached key outlived its
revocation by up to the cache's 10 s): KeyVerifier.role_of with the cache off against a warm cache,
on SQLite and, with --pg-url, PostgreSQL. Each figure is the median of --repeats timings of
--lookups calls, so a busy shared machine shows as spread, not as bias.

    python bench/key_lookup.py --lookups 2000 --pg-url postgresql+psycopg://postgres:@127.0.0.1:5432/test
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.crash import database  # noqa: E402
from service.auth import KeyVerifier, create_key  # noqa: E402
from service.storage.db import make_engine, migrate, sessions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def per_call_us(verifier: KeyVerifier, key: str, lookups: int, repeats: int, label: str) -> dict:
    times = []
    for _ in tqdm(range(repeats), desc=label, leave=False):
        t0 = time.perf_counter()
        for _ in range(lookups):
            verifier.role_of(key)
        times.append((time.perf_counter() - t0) / lookups * 1e6)
    return {"median_us": statistics.median(times), "min_us": min(times), "max_us": max(times)}


def measure(db_url: str, args) -> dict:
    engine = make_engine(db_url)
    migrate(engine)
    factory = sessions(engine)
    for i in range(args.other_keys):  # a realistic table: the lookup goes through the unique index
        create_key(factory, "viewer", name=f"other-{i}")
    key = create_key(factory, "ingest", name="bench")
    out = {"uncached": per_call_us(KeyVerifier(factory, ttl=0), key, args.lookups, args.repeats, "lookup every call"),
           "cached": per_call_us(KeyVerifier(factory, ttl=3600), key, args.lookups, args.repeats, "warm cache")}
    out["added_per_request_us"] = out["uncached"]["median_us"] - out["cached"]["median_us"]
    engine.dispose()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lookups", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--other-keys", type=int, default=50)
    p.add_argument("--pg-url", default=None)
    p.add_argument("--out", default=str(ROOT / "results" / "service_durability" / "key_lookup.json"))
    args = p.parse_args()
    result = {"command": "python bench/key_lookup.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as tmp:
        with database("sqlite", None, Path(tmp)) as url:
            result["sqlite"] = measure(url, args)
    if args.pg_url:
        with database("postgres", args.pg_url, Path(".")) as url:
            result["postgresql"] = measure(url, args)
    result["machine"]["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for db in ("sqlite", "postgresql"):
        if db in result:
            r = result[db]
            print(f"{db}: lookup every request {r['uncached']['median_us']:.0f} us, warm cache {r['cached']['median_us']:.1f} us "
                  f"-> {r['added_per_request_us']:.0f} us added per request")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
