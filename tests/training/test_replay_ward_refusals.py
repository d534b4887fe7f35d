"""Ward-mode replay: an outcome the service refuses (the onset or the discharge) is an error said at
once and counted, never silent; the stay goes on after a refused onset."""
from __future__ import annotations

import datetime as dt
import json
import threading

import httpx
import numpy as np

from service.ranges import FEATURES
from training.sepsis.replay import FeedClock, Totals, ward_stay


class Stay:
    patient_id = "p1"

    def __init__(self, hours: int, septic_from: int | None):
        values = np.full((hours, 40), np.nan, np.float32)
        values[:, FEATURES.index("HR")] = 90
        values[:, FEATURES.index("ICULOS")] = np.arange(1, hours + 1)
        values[:, FEATURES.index("Age")] = 60
        values[:, FEATURES.index("Gender")] = 1
        values[:, FEATURES.index("HospAdmTime")] = -1
        self.values = values
        self.labels = np.array([int(septic_from is not None and t >= septic_from) for t in range(hours)], np.int8)


def _service(refuse: str):
    """A service that takes admissions and observations and refuses `refuse` outcomes (onset:
    the first outcome post, discharge: one carrying discharged_at)."""
    seen = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/outcome"):
            body = json.loads(request.content)
            seen.append(body)
            is_discharge = "discharged_at" in body
            if (refuse == "discharge") == is_discharge:
                return httpx.Response(409, json={"detail": "discharged_at is ahead of the service clock"})
            return httpx.Response(200, json={})
        if request.url.path == "/predict":
            return httpx.Response(200, json={"alarm_id": None})
        return httpx.Response(201, json={})

    return httpx.Client(base_url="http://replay.test", transport=httpx.MockTransport(handle)), seen


def _run(stay, client):
    totals = Totals()
    feed = FeedClock(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30), speed=1e9)
    ended = ward_stay(client, stay, "p1", dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10), feed,
                      threading.Event(), {}, {}, totals)
    return ended, totals


def test_a_refused_discharge_is_said_at_once_and_counted(capsys):
    client, _ = _service(refuse="discharge")
    ended, totals = _run(Stay(4, None), client)
    err = capsys.readouterr().err
    assert not ended
    assert totals.refused_outcomes == {"discharge": 1} and len(totals.errors) == 1
    assert "error: p1: discharge refused" in err and "409" in err and "stays on the ward" in err


def test_a_refused_onset_is_reported_and_the_stay_goes_on(capsys):
    client, seen = _service(refuse="onset")
    ended, totals = _run(Stay(10, septic_from=8), client)
    assert ended and totals.posted == 10  # every row after the refused onset was still posted
    assert totals.refused_outcomes == {"sepsis onset": 1}
    assert "error: p1: sepsis onset refused" in capsys.readouterr().err
    assert [("discharged_at" in b) for b in seen] == [False, True]
