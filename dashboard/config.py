"""Dashboard settings from the environment (prefix SEPSIS_DASHBOARD_); the sidebar can override
the address and key per browser session."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DashboardSettings:
    api_url: str = "http://127.0.0.1:8000"
    api_key: str = ""             # a viewer key reads everything; a clinician key can also act
    refresh_s: float = 15.0       # ward auto-refresh period
    timeout_s: float = 5.0        # per request to the service
    tiles_per_page: int = 24

    @classmethod
    def from_env(cls) -> "DashboardSettings":
        def get(name: str, default, kind):
            raw = os.environ.get(f"SEPSIS_DASHBOARD_{name}")
            if raw in (None, ""):
                return default
            try:
                return kind(raw)
            except ValueError:
                raise ValueError(f"environment variable SEPSIS_DASHBOARD_{name}={raw!r} is not a {kind.__name__}") from None

        d = cls()
        return cls(api_url=get("API_URL", d.api_url, str), api_key=get("API_KEY", d.api_key, str),
                   refresh_s=get("REFRESH_S", d.refresh_s, float), timeout_s=get("TIMEOUT_S", d.timeout_s, float),
                   tiles_per_page=get("TILES_PER_PAGE", d.tiles_per_page, int))
