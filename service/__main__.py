"""`python -m service [--host H --port P]` serves the API; `python -m service keys create --role R`
prints a new API key; `python -m service prune-states --ended-days D` drops the per-hour model
states of stays that ended more than D days ago (service/lifecycle/retention.py). Settings come
from SEPSIS_* environment variables (service/config.py)."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile

from service.auth import ROLES, create_key, list_keys, revoke_key
from service.config import Settings, SettingsError


def _factory(settings: Settings):
    from service.storage.db import make_engine, migrate, sessions

    engine = make_engine(settings.db_url)
    migrate(engine)
    return sessions(engine)


@contextlib.contextmanager
def _multiprocess_metrics():
    """Each worker counts in its own process: metrics go to files in a folder that /metrics sums
    (service/metrics.py). A fresh folder per start, so a previous run's counts are not summed in,
    removed when the server stops; a folder given in PROMETHEUS_MULTIPROC_DIR is the caller's, kept."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="sepsis-metrics-") as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


MAX_DAYS = 36500  # a century: beyond it no stay has ended, and a cut-off that far back is no date


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not math.isfinite(days) or not 0 <= days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of days from 0 to {MAX_DAYS}")
    return days


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default=None, help="bind address (default $SEPSIS_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default $SEPSIS_PORT or 8000)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--db-url", default=None, help="SQLAlchemy URL (default $SEPSIS_DB_URL or a SQLite file)")
    sub = parser.add_subparsers(dest="command")
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key and print it (shown once; only its hash is stored)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", default=None, help="who or what the key is for")
    keys.add_parser("list", help="list keys (prefix, role, name; never the key)")
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    prune = sub.add_parser("prune-states", help="drop the per-hour model states of stays that ended more than "
                           "--ended-days ago; messages, risks, contributions and alarms are kept")
    prune.add_argument("--ended-days", type=_days, required=True,
                       help="days since the discharge (or the no_sepsis outcome) after which a stay's states go")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(host=args.host, port=args.port, db_url=args.db_url)
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if args.command == "keys":
        factory = _factory(settings)
        if args.action == "create":
            print(create_key(factory, args.role, args.name))
        elif args.action == "list":
            for k in list_keys(factory):
                print(f"{k.id}\t{k.prefix}...\t{k.role}\t{k.name or ''}\t{'revoked' if k.revoked else 'active'}")
        else:
            if not revoke_key(factory, args.id):
                print(f"error: no key with id {args.id}", file=sys.stderr)
                return 1
            print(f"revoked key {args.id}")
        return 0

    if args.command == "prune-states":
        import datetime as dt

        from service.lifecycle.retention import prune_states, stored_states
        from service.storage.db import make_engine, migrate

        engine = make_engine(settings.db_url)
        migrate(engine)
        before = stored_states(engine)
        pruned = prune_states(engine, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=args.ended_days))
        print(json.dumps({**pruned.as_dict(), "before": before, "after": stored_states(engine)}, indent=2))
        engine.dispose()
        return 0

    import uvicorn

    from models.card import ModelCardError
    from models.registry import ModelNotFoundError, resolve

    try:  # fail here with one clear line rather than inside the server's start-up
        resolve(settings.model, settings.model_version, settings.models_dir)
    except (ModelNotFoundError, ModelCardError) as err:
        print(f"error: cannot load the model: {err}. Set SEPSIS_MODELS_DIR / SEPSIS_MODEL / SEPSIS_MODEL_VERSION.",
              file=sys.stderr)
        return 2

    # uvicorn's workers re-import the app by name, so hand them the settings through the environment.
    os.environ["SEPSIS_DB_URL"] = settings.db_url
    if args.workers > 1:
        # Migrate and seed once here, so the workers do not race each other doing it.
        from service.auth import seed_keys

        factory = _factory(settings)
        if settings.bootstrap_keys:
            seed_keys(factory, settings.bootstrap_keys)
        with _multiprocess_metrics():
            uvicorn.run("service.asgi:app", host=settings.host, port=settings.port, workers=args.workers,
                        http=settings.http, log_level="warning")
    else:
        from service.app import create_app

        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, http=settings.http,
                    log_level="warning")
    return 0


if __name__ == "__main__":
    code = main()
    # By now the server has shut down in order (the lifespan closed the database and the model, the
    # metrics folder is gone). Tearing down every imported module after that took 2-4 s on a loaded
    # machine and protects nothing, so a stopped service leaves at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
