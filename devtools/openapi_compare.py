"""Whether the service's published API changed only additively between two revisions.

    python -m devtools.openapi_compare dump before.json      # on the old revision
    python -m devtools.openapi_compare dump after.json       # on the new one
    python -m devtools.openapi_compare compare before.json after.json

`compare` lists every path, key or value of the first document that the second lacks or changes
(descriptions and summaries aside: prose may change), and exits 1 if there is any. Additions pass.
"""
from __future__ import annotations

import json
import sys
import tempfile

PROSE = {"description", "summary"}


def dump(path: str) -> None:
    from service.app import create_app
    from service.config import Settings

    spec = create_app(Settings(db_url=f"sqlite:///{tempfile.mkdtemp()}/openapi.db")).openapi()
    with open(path, "w") as f:
        json.dump(spec, f, sort_keys=True, indent=1)


def removed(before, after, where: str = "") -> list[str]:
    """What of `before` is missing from or different in `after` (prose keys ignored)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key, value in before.items():
            if key in PROSE:
                continue
            if key not in after:
                out.append(f"{where}/{key}: removed")
            else:
                out += removed(value, after[key], f"{where}/{key}")
        return out
    if isinstance(before, list) and isinstance(after, list):
        missing = [v for v in before if v not in after]
        return [f"{where}: {json.dumps(v)[:120]} removed" for v in missing]
    return [] if before == after else [f"{where}: {json.dumps(before)[:80]} -> {json.dumps(after)[:80]}"]


def main(argv: list[str]) -> int:
    if argv[:1] == ["dump"] and len(argv) == 2:
        dump(argv[1])
        return 0
    if argv[:1] == ["compare"] and len(argv) == 3:
        with open(argv[1]) as a, open(argv[2]) as b:
            problems = removed(json.load(a), json.load(b))
        print("\n".join(problems) or "additive: nothing of the first document is missing or changed in the second")
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
