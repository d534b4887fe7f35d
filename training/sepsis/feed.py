"""A stay as a hospital's interfaces send it: value by value, as charted, late, twice, amended.

The files hold complete hourly rows; a monitor, a charting system and a lab interface send each
value on its own. `realistic_feed(patient_id, values, start, seed)` turns a stay's rows into those
messages, pure and seeded (the same stay and seed give the same messages):

- per value: each measured vital sign or lab is its own message (a blood pressure's SBP, DBP and
  MAP too, sharing one cuff time);
- vital signs, and FiO2 (a bedside setting), at a random second inside their hour, sent within a
  minute of it;
- resulted labs (`models.contract.RESULTED_LABS`) stamped with their draw time (one draw per hour,
  at a random second inside it) and each sent 30-150 min after the draw, after later vitals;
- duplicates: 5% of messages are sent a second time 1-300 s later (`duplicate=True`);
- amendments: 2% of lab values are first sent with a wrong value (5-50% off) and re-sent with the
  stay's value, status `amended`, 30-240 min later.

Every message is stamped (`charted.time`) inside its row's hour, so `models.grid.hourly` of the
messages gives back the stay's rows: each (ICULOS, variable) the file measured, with the file's
value. The list is in arrival order (`sent`). The stay is laid out as `replay.plan_stay` lays it
out: `start` is the first row's time, the ICU admission ICULOS[0] - 1 hours before it.
"""
from __future__ import annotations

import datetime as dt
import math
import zlib
from dataclasses import dataclass

import numpy as np

from models.contract import CLINICAL, INDEX, RESULTED_LABS
from models.grid import AMENDING, Charted, hour_start
from training.sepsis.fhir_bundle import row_hours

BLOOD_PRESSURE = frozenset({"SBP", "DBP", "MAP"})
_RESULTED = frozenset(RESULTED_LABS)


@dataclass(frozen=True)
class FeedConfig:
    bedside_latency_s: tuple[float, float] = (0.0, 60.0)
    lab_delay_min: tuple[float, float] = (30.0, 150.0)
    duplicate_share: float = 0.05
    duplicate_after_s: tuple[float, float] = (1.0, 300.0)
    amended_share: float = 0.02
    amended_after_min: tuple[float, float] = (30.0, 240.0)
    amended_error: tuple[float, float] = (0.05, 0.5)


@dataclass(frozen=True)
class Message:
    sent: dt.datetime
    charted: Charted
    duplicate: bool = False

    @property
    def amended(self) -> bool:
        return self.charted.status in AMENDING


def icu_admission(values: np.ndarray, start: dt.datetime) -> dt.datetime:
    """Where `replay.plan_stay` places the ICU admission for a stay whose first row is at `start`."""
    return start - dt.timedelta(hours=float(row_hours(values)[0]) - 1.0)


def realistic_feed(patient_id: str, values: np.ndarray, start: dt.datetime, seed: int = 0,
                   config: FeedConfig = FeedConfig()) -> list[Message]:
    """The stay's [T, 40] rows (NaN = not measured) as per-value messages in arrival order."""
    rng = np.random.default_rng([seed, zlib.crc32(patient_id.encode())])
    c = config
    admit = icu_admission(values, start)
    hours = row_hours(values)
    sends: list[Message] = []
    for t, row in enumerate(values):
        iculos = int(hours[t])
        begins = hour_start(iculos, admit)
        bedside_at = begins + dt.timedelta(seconds=float(rng.uniform(0, 3600)))
        cuff_at = begins + dt.timedelta(seconds=float(rng.uniform(0, 3600)))
        drawn_at = begins + dt.timedelta(seconds=float(rng.uniform(0, 3600)))
        for name in CLINICAL:
            value = float(row[INDEX[name]])
            if not math.isfinite(value):
                continue
            key = f"{patient_id}.{iculos}.{name}"
            if name in _RESULTED:
                taken = drawn_at
                sent = drawn_at + dt.timedelta(minutes=float(rng.uniform(*c.lab_delay_min)))
            else:
                taken = cuff_at if name in BLOOD_PRESSURE else bedside_at
                sent = taken + dt.timedelta(seconds=float(rng.uniform(*c.bedside_latency_s)))
            if name in _RESULTED and rng.random() < c.amended_share:
                off = float(rng.uniform(*c.amended_error)) * (1 if rng.random() < 0.5 else -1)
                wrong = value + off * max(abs(value), 1.0)
                sends.append(Message(sent, Charted(key, name, taken, wrong)))
                later = sent + dt.timedelta(minutes=float(rng.uniform(*c.amended_after_min)))
                sends.append(Message(later, Charted(key, name, taken, value, "amended")))
            else:
                sends.append(Message(sent, Charted(key, name, taken, value)))
    copies = [Message(m.sent + dt.timedelta(seconds=float(rng.uniform(*c.duplicate_after_s))), m.charted, True)
              for m in sends if rng.random() < c.duplicate_share]
    order = sends + copies
    return [order[i] for i in sorted(range(len(order)), key=lambda i: (order[i].sent, i))]


def json_body(patient_id: str, m: Message) -> dict:
    """A message as the service's POST /predict body: one value, its time measured and its status
    (an amendment says so; the value is known by its variable and time)."""
    return {"patient_id": patient_id, "timestamp": m.charted.time.isoformat(),
            "vitals": {m.charted.variable: m.charted.value}, "status": m.charted.status}
