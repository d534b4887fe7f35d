"""The command that serves the dashboard with Streamlit (used by `python -m dashboard` and by the
dev tools that start it as a child process)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(port: int, host: str = "127.0.0.1") -> list[str]:
    # showErrorDetails off: an unexpected error shows a short message, never a traceback.
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless=true",
            f"--server.port={port}", f"--server.address={host}", "--browser.gatherUsageStats=false",
            "--client.showErrorDetails=false", "--client.toolbarMode=minimal", "--server.fileWatcherType=none"]
