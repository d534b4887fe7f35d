"""Dashboard settings from the environment (prefix SEPSIS_DASHBOARD_); the sidebar can override
the address and key per browser session."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

# Nothing measured for this long (vitals are charted at least hourly on an ICU; the service's
# bedside scores stop counting a vital sign after 6 h, service/bedside.py) and the patient is
# flagged "no recent data": the model cannot alarm on values nobody posts.
NO_DATA_HOURS = 6.0
# An open alarm raised longer ago than this is "old": still unacknowledged, but its risk may have
# long fallen, so its tile says so and looks different from a fresh alarm.
ALARM_OLD_HOURS = 6.0


def parse_unit_hours(raw: str) -> dict[str, float]:
    """'MICU=4,SICU=8' -> {'MICU': 4.0, 'SICU': 8.0}; an error names the bad part."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        unit, sep, hours = part.partition("=")
        try:
            value = float(hours)
        except ValueError:
            value = -1.0
        if not sep or not unit.strip() or value <= 0:
            raise ValueError(f"SEPSIS_DASHBOARD_NO_DATA_H_BY_UNIT: {part!r} is not UNIT=HOURS with HOURS > 0")
        out[unit.strip()] = value
    return out


@dataclass(frozen=True)
class DashboardSettings:
    api_url: str = "http://127.0.0.1:8000"
    api_key: str = ""             # a viewer key reads everything; a clinician key can also act
    refresh_s: float = 15.0       # auto-refresh period of the ward, the alarm queue and the alarm counts
    timeout_s: float = 5.0        # per request to the service
    tiles_per_page: int = 24
    no_data_hours: float = NO_DATA_HOURS
    no_data_hours_by_unit: dict[str, float] = field(default_factory=dict)  # unit ("MICU", ...) -> hours
    alarm_old_hours: float = ALARM_OLD_HOURS

    def no_data_after(self, unit: str | None) -> float:
        """Hours without a measured value after which a patient of `unit` is flagged."""
        return self.no_data_hours_by_unit.get(unit or "other", self.no_data_hours)

    @classmethod
    def from_env(cls) -> "DashboardSettings":
        def get(name: str, default, kind):
            raw = os.environ.get(f"SEPSIS_DASHBOARD_{name}")
            if raw in (None, ""):
                return default
            try:
                return kind(raw)
            except ValueError as err:
                if kind is parse_unit_hours:
                    raise
                raise ValueError(f"environment variable SEPSIS_DASHBOARD_{name}={raw!r} is not a {kind.__name__}") from err

        d = cls()
        return cls(api_url=get("API_URL", d.api_url, str), api_key=get("API_KEY", d.api_key, str),
                   refresh_s=get("REFRESH_S", d.refresh_s, float), timeout_s=get("TIMEOUT_S", d.timeout_s, float),
                   tiles_per_page=get("TILES_PER_PAGE", d.tiles_per_page, int),
                   no_data_hours=get("NO_DATA_H", d.no_data_hours, float),
                   no_data_hours_by_unit=get("NO_DATA_H_BY_UNIT", {}, parse_unit_hours),
                   alarm_old_hours=get("ALARM_OLD_H", d.alarm_old_hours, float))
