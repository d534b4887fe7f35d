"""A real service on loopback (subprocess, temporary SQLite, tiny fixture model) filled through its
API, shared by the dashboard tests. The fixture model has threshold 0, so every patient's first
observation raises an alarm and the alarm states below are fully determined. The service runs on
the simulated clock (the feed's time: the latest observation, T0 + 6 h), so ages are fixed; the
dashboards under test flag "no recent data" after NO_DATA_H hours."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import httpx
import pytest

from devtools.processes import free_port, start_service, stop
from models.testing import write_fixture_model

KEYS = {"admin": "sk_dash_admin", "clinician": "sk_dash_clinician", "viewer": "sk_dash_viewer",
        "ingest": "sk_dash_ingest"}
T0 = dt.datetime(2024, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
NO_DATA_H = "4"  # SEPSIS_DASHBOARD_NO_DATA_H of the dashboards under test: bed-gone (T0) is 6 h quiet


def iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Stack:
    url: str
    keys: dict[str, str]
    # patient ids by the situation they were put in
    open_ids: list[str]
    acked: str
    snoozed: str
    calm: str
    septic: str
    discharged: str
    action_ids: list[str]     # open alarms reserved for the tests that act on them
    quiet: list[str]          # unit "other", alarm resolved: on the ward, no active alarm, any risk
    gone: str                 # in treatment for sepsis, nothing measured since T0: nobody sees it


def _observe(c: httpx.Client, pid: str, hours: list[int], missing_temp_at: set[int] = frozenset(),
             fahrenheit_at: int | None = None) -> None:
    for h in hours:
        vitals = {"HR": 80.0 + 3 * h, "MAP": 70.0 - h}
        if h not in missing_temp_at:
            vitals["Temp"] = 37.0 + 0.1 * h
        if h == fahrenheit_at:  # a sender's unit error: filed and scored as charted, with a warning
            vitals["Temp"] = 98.6
        r = c.post("/predict", json={"patient_id": pid, "timestamp": iso(T0 + dt.timedelta(hours=h)), "vitals": vitals})
        assert r.status_code == 200, r.text


def _admit(c: httpx.Client, pid: str, unit: str) -> None:
    r = c.post("/patients", json={"patient_id": pid, "age": 61, "gender": 1, "unit": unit,
                                  "icu_admit_time": iso(T0)})
    assert r.status_code == 201, r.text


def _alarm_of(c: httpx.Client, pid: str) -> int:
    r = c.get("/alarms", params={"patient_id": pid})
    return r.json()[0]["id"]


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    root = tmp_path_factory.mktemp("dash")
    write_fixture_model(root / "models" / "sepsis-cfc" / "1", state_size=8, threshold=0.0)
    port = free_port()
    env = {"SEPSIS_DB_URL": f"sqlite:///{root / 'service.db'}", "SEPSIS_MODELS_DIR": str(root / "models"),
           "SEPSIS_MODEL": "sepsis-cfc", "SEPSIS_DEVICE": "cpu", "SEPSIS_KEY_CACHE_SECONDS": "0", "SEPSIS_CLOCK": "simulated",
           "SEPSIS_BOOTSTRAP_KEYS": ",".join(f"{r}:{k}" for r, k in KEYS.items())}
    proc = start_service(port, env, root / "service.log")
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, headers={"X-API-Key": KEYS["admin"]}, timeout=10) as c:
        open_ids = ["bed-01", "bed-02"]
        for i, pid in enumerate(open_ids):
            _admit(c, pid, "MICU")
            _observe(c, pid, list(range(6 + i)), missing_temp_at={2, 3})
        for pid in ("bed-ack", "bed-snz", "bed-calm", "bed-sep", "bed-dis", "bed-gone"):
            _admit(c, pid, "SICU")
            _observe(c, pid, [0] if pid == "bed-gone" else list(range(4)), fahrenheit_at=2 if pid == "bed-calm" else None)
        quiet = [f"quiet-{i:02}" for i in range(8)]
        for i, pid in enumerate(quiet):
            _admit(c, pid, "other")
            _observe(c, pid, list(range(1 + i % 4)), missing_temp_at={i % 3})
            assert c.post(f"/alarms/{_alarm_of(c, pid)}/resolve", json={"by": "dr lee"}).status_code == 200
        action_ids = ["act-ack", "act-snooze", "act-resolve"]
        for pid in action_ids:
            _admit(c, pid, "MICU")
            _observe(c, pid, [0, 1])
        assert c.post(f"/alarms/{_alarm_of(c, 'bed-ack')}/ack",
                      json={"by": "nurse kim", "reason": "false_alarm", "note": "lines flushed"}).status_code == 200
        assert c.post(f"/alarms/{_alarm_of(c, 'bed-snz')}/snooze", json={"by": "dr lee", "minutes": 600}).status_code == 200
        assert c.post(f"/alarms/{_alarm_of(c, 'bed-calm')}/resolve", json={"by": "dr lee"}).status_code == 200
        # The alarm at hour 0 falls 12 h before onset -> true, lead time 10 h; the other is false.
        assert c.post("/patients/bed-sep/outcome", json={"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=10))}).status_code == 200
        assert c.post("/patients/bed-gone/outcome", json={"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=3))}).status_code == 200
        assert c.post("/patients/bed-dis/outcome", json={"outcome": "no_sepsis",
                                                         "discharged_at": iso(T0 + dt.timedelta(hours=5))}).status_code == 200
    try:
        yield Stack(url=url, keys=KEYS, open_ids=open_ids, acked="bed-ack", snoozed="bed-snz", calm="bed-calm",
                    septic="bed-sep", discharged="bed-dis", action_ids=action_ids,
                    quiet=quiet, gone="bed-gone")
    finally:
        stop(proc)
