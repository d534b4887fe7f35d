"""Headless Chromium driven over the DevTools protocol, for the browser test and the docs
screenshots. Streamlit draws the page over a websocket after load, so `--dump-dom` and
`--virtual-time-budget` see only its skeleton; here we wait until the page shows what we expect.

    with Browser(width=1400, height=1000) as b:
        b.open("http://127.0.0.1:8501/ward", until="document.querySelector('[data-patient]')")
        b.screenshot("docs/dashboard-ward.png")
"""
from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

from devtools.processes import free_port

# Flags for running as root in a container, with nothing reaching outside loopback.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-dev-shm-usage"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, width: int = 1400, height: int = 1000, executable: str | None = None):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("no chromium found on PATH (Debian: apt-get install -y chromium)")
        self.width, self.height = width, height
        self._ids = itertools.count(1)

    def __enter__(self) -> "Browser":
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
        port = free_port()
        self._proc = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self._profile.name}", f"--remote-debugging-port={port}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        targets = []
        while time.monotonic() < deadline and not targets:
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with code {self._proc.returncode} at start-up")
            try:
                targets = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                           if t.get("type") == "page"]
            except httpx.HTTPError:
                time.sleep(0.2)
        if not targets:
            self.__exit__(None, None, None)
            raise BrowserError("chromium's DevTools endpoint did not come up within 30 s")
        self._closing = contextlib.ExitStack()
        self._ws = self._closing.enter_context(connect(targets[0]["webSocketDebuggerUrl"], max_size=64 * 2**20,
                                                       open_timeout=10))
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc) -> None:
        closing = getattr(self, "_closing", None)
        if closing is not None:
            closing.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._profile.cleanup()

    def call(self, method: str, timeout_s: float = 30.0, **params) -> dict:
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == msg_id:  # everything else is an event we did not ask about
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def open(self, url: str, until: str, timeout_s: float = 30.0, settle_s: float = 1.5) -> None:
        """Load `url` and wait until the JS expression `until` is truthy, then `settle_s` more
        (charts draw after their data arrives)."""
        self.call("Page.navigate", url=url)
        self.wait_for(until, timeout_s, settle_s, what=url)

    def wait_for(self, until: str, timeout_s: float = 30.0, settle_s: float = 0.0, what: str = "page") -> None:
        """Wait, without touching the page, until the JS expression `until` is truthy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ready = self.evaluate(f"Boolean({until})")
            except BrowserError:  # the document is being replaced while it navigates
                ready = False
            if ready:
                time.sleep(settle_s)
                return
            time.sleep(0.25)
        raise BrowserError(f"{what}: {until!r} was still false after {timeout_s:g} s")

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the first element matching the CSS `selector`."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null; "
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                            "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        if box is None:
            raise BrowserError(f"nothing matches {selector!r} to click")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the input matching `selector`, type `text` as keystrokes would, then press Enter."""
        self.click(selector)
        self.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
        self.call("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

    def html(self) -> str:
        return self.evaluate("document.documentElement.outerHTML")

    def text(self) -> str:
        return self.evaluate("document.body.innerText")

    def screenshot(self, path: str | Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
