"""Crash test: `kill -9` the service under load, restart it, and check that nothing answered was lost
and that restarted patients continue exactly as an uninterrupted stream would.

Each cycle starts `python -m service` (--workers N) on one database and port, drives it with
--concurrency closed-loop clients (each its own patients; single /predict posts, or /predict/batch of
--batch patients' next hours) for a random 1x-2x --seconds, then kills the whole process group with
SIGKILL while requests are in flight. A request cut off by the kill has no answer; its client posts
the same observation again after the restart (identical vitals: stored once, answered as a
duplicate if it had been stored). After --kills cycles a last server drains: every patient posts
its next hour once more. Then, per patient:
  - answered == stored: every answered hour is stored with the answered risk, and nothing is stored
    that was never answered;
  - identical continuation: the stored risks equal those of one uninterrupted stream of the same
    observations through the model runtime (bench/serving.py:uninterrupted_risks), bit for bit
    (singles; a batch's step runs several patients in one call, so it is compared with a tolerance).

    python bench/crash.py --db sqlite --kills 4
    python bench/crash.py --db postgres --pg-url postgresql+psycopg://postgres:@127.0.0.1:5432/test --kills 4 --workers 2
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving import (KEY, ROOT, Client, Writer, free_port, kill, model_label, pick_model,  # noqa: E402
                           service_env, start, stop, stored, uninterrupted_risks)


@contextlib.contextmanager
def database(kind: str, pg_url: str | None, tmp: Path):
    """A fresh database: a SQLite file, or a private schema on the PostgreSQL server (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'crash.db'}"
        return
    import psycopg

    if not pg_url:
        raise SystemExit("--db postgres needs --pg-url")
    schema = f"crash_{uuid.uuid4().hex[:10]}"
    raw = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in pg_url else "?"
        yield f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(raw, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def load_then_kill(server, writer: Writer, concurrency: int, batch: int, seconds: float, bar) -> int:
    """Closed-loop clients for `seconds`, then SIGKILL to the server's process group while their
    requests are in flight; returns the requests sent."""
    client = Client("127.0.0.1", server.port, {"X-API-Key": KEY})
    clients = max(1, min(concurrency, len(writer.pids) // batch))
    stop = asyncio.Event()
    sent = {"n": 0}

    async def worker(k: int):
        mine = writer.pids[k::clients]
        i = 0
        while not stop.is_set():
            group = list(dict.fromkeys(mine[(i * batch + j) % len(mine)] for j in range(batch)))
            if await writer.post_many(client, group):
                bar.update(len(group))
            sent["n"] += 1
            i += 1

    tasks = [asyncio.create_task(worker(k)) for k in range(clients)]
    await asyncio.sleep(seconds)
    kill(server.proc)
    stop.set()  # before any await: no client starts another request; those in flight fail
    await asyncio.gather(*tasks)
    with contextlib.suppress(Exception):
        await client.close()
    return sent["n"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg-url", default=os.environ.get("SEPSIS_TEST_PG_URL"))
    p.add_argument("--kills", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0, help="load before a kill: uniform in [s, 2s]")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (all killed at once)")
    p.add_argument("--patients", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--batch", type=int, default=1, help="patients per request: 1 posts /predict, more /predict/batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", default=None, help="model folder (default: the registry's default)")
    p.add_argument("--out", default=None, help="JSON file (default results/service_crash/<db>-w<workers>-b<batch>.json)")
    args = p.parse_args()
    rng = random.Random(args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="crash_"))
    model_dir = pick_model(tmp, args.model_dir)
    writer = Writer(args.patients, prefix="crash", seed=args.seed)
    cycles = []
    try:
        with database(args.db, args.pg_url, tmp) as db_url:
            env = service_env(db_url, model_dir)
            port = free_port()
            bar = tqdm(desc="answered observations", unit="obs")
            for k in range(args.kills):
                server = start(env, workers=args.workers, log=tmp / "service.log", port=port)
                seconds = rng.uniform(args.seconds, 2 * args.seconds)
                before, errors_before = writer.total(), sum(writer.errors.values())
                sent = asyncio.run(load_then_kill(server, writer, args.concurrency, args.batch, seconds, bar))
                cycles.append({"load_seconds": round(seconds, 2), "requests": sent, "answered": writer.total() - before,
                               "cut_off_by_the_kill": sum(writer.errors.values()) - errors_before})
                bar.set_postfix(kills=k + 1)
            server = start(env, workers=args.workers, log=tmp / "service.log", port=port)
            try:  # drain: each patient's pending hour once more (a duplicate if the kill cut off its answer)
                asyncio.run(_drain(server.port, writer))
                bar.close()
                check = verify(server.url, writer, model_dir, exact=args.batch == 1)
            finally:
                stop(server.proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "command": "python bench/crash.py " + " ".join(sys.argv[1:]),
        "db": args.db, "workers": args.workers, "batch": args.batch, "kills": args.kills,
        "patients": args.patients, "concurrency": args.concurrency, "model": model_label(model_dir),
        "cycles": cycles, "errors_seen_by_clients": writer.errors, **check,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_at_end": os.getloadavg()},
    }
    out = Path(args.out or ROOT / "results" / "service_crash" / f"{args.db}-w{args.workers}-b{args.batch}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    ok = check["lost"] == 0 and check["stored_never_answered"] == 0 and check["risk_mismatches"] == 0
    print(f"{args.db}, {args.workers} worker(s), batch {args.batch}: {args.kills} kills, {check['answered']} answered, "
          f"{check['stored']} stored, lost {check['lost']}, stored but never answered {check['stored_never_answered']}, "
          f"answered risk != stored {check['answer_mismatches']}, continuation != uninterrupted {check['risk_mismatches']} "
          f"(max |diff| {check['max_abs_diff']:.2e}) -> {'OK' if ok else 'FAILED'}; wrote {out}")
    return 0 if ok else 1


async def _drain(port: int, writer: Writer) -> None:
    client = Client("127.0.0.1", port, {"X-API-Key": KEY})
    for pid in writer.pids:
        for _ in range(5):
            if await writer.post(client, pid):
                break
            await asyncio.sleep(0.2)
    await client.close()


def verify(url: str, writer: Writer, model_dir: Path, exact: bool) -> dict:
    lost = never_answered = answer_mismatch = risk_mismatch = 0
    max_diff = 0.0
    total_stored = 0
    for pid in tqdm(writer.pids, desc="checking patients", unit="patient"):
        db = stored(url, pid)
        total_stored += len(db)
        answered = writer.answered[pid]
        lost += sum(h not in db for h in answered)
        never_answered += sum(h not in answered for h in db)
        answer_mismatch += sum(h in db and db[h] != r for h, r in answered.items())
        hours = sorted(db)
        if hours != list(range(len(hours))):
            risk_mismatch += len(hours)  # a gap: the stream itself is not what was posted
            continue
        reference = uninterrupted_risks(model_dir, pid, hours, writer.seed)
        for h, ref in zip(hours, reference):
            diff = abs(db[h] - ref)
            max_diff = max(max_diff, diff)
            risk_mismatch += (db[h] != ref) if exact else (diff > 1e-5)
    return {"answered": writer.total(), "stored": total_stored, "lost": lost, "stored_never_answered": never_answered,
            "answer_mismatches": answer_mismatch, "risk_mismatches": risk_mismatch, "max_abs_diff": max_diff,
            "comparison": "bit-identical" if exact else "abs diff <= 1e-5"}


if __name__ == "__main__":
    sys.exit(main())
