"""`python -m devtools.screenshots --url http://127.0.0.1:8501 --out docs/`: a PNG of each page of
a running dashboard (use a stack fed by the replay, e.g. `make demo`), for the README."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devtools.browser import Browser, BrowserError

# The ward has its own address (/ward; the root forwards there). (page path, file, window height, what must be on screen before the shot)
PAGES = [
    ("ward", "dashboard-ward.png", 1700, "document.querySelector('[data-patient]')"),
    ("patient", "dashboard-patient.png", 2600, "document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= 1 "
     "&& document.body.innerText.includes('Audit trail')"),
    ("alarms", "dashboard-alarms.png", 1800, "document.body.innerText.includes('Who did what')"),
    ("performance", "dashboard-performance.png", 1250,
     "document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= 3"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.screenshots", description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8501")
    p.add_argument("--out", default="docs")
    p.add_argument("--patient", default=None, help="patient id for the patient page (default: highest risk)")
    a = p.parse_args(argv)
    try:
        for path, name, height, until in PAGES:
            url = f"{a.url.rstrip('/')}/{path}" + (f"?patient_id={a.patient}" if path == "patient" and a.patient else "")
            with Browser(width=1400, height=height) as b:
                b.open(url, until=until, timeout_s=45, settle_s=2.5)
                print(b.screenshot(Path(a.out) / name))
    except BrowserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
