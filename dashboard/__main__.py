"""`python -m dashboard [--port 8501] [--api-url URL]`: serve the alarm dashboard with Streamlit.
The key comes from $SEPSIS_DASHBOARD_API_KEY (or is typed into the sidebar)."""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from dashboard.launch import ROOT, streamlit_command

    p = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__)
    p.add_argument("--host", default=os.environ.get("SEPSIS_DASHBOARD_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("SEPSIS_DASHBOARD_PORT", "8501")))
    p.add_argument("--api-url", default=None, help="service address (default $SEPSIS_DASHBOARD_API_URL or http://127.0.0.1:8000)")
    a = p.parse_args(argv)
    if a.api_url:
        os.environ["SEPSIS_DASHBOARD_API_URL"] = a.api_url
    print(f"dashboard: http://{'127.0.0.1' if a.host in ('0.0.0.0', '::') else a.host}:{a.port}/", flush=True)
    os.chdir(ROOT)
    cmd = streamlit_command(a.port, a.host)
    os.execv(cmd[0], cmd)  # hand the process over: signals reach Streamlit directly
    return 0


if __name__ == "__main__":
    sys.exit(main())
