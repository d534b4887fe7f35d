"""The realistic feed generator: a stay's rows as the per-value messages a hospital sends, which the
model's hourly grid files back into exactly the stay's rows."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from models.contract import CLINICAL, INDEX, N_FEATURES, RESULTED_LABS
from models.grid import hour_of, hourly
from training.sepsis.feed import FeedConfig, icu_admission, json_body, realistic_feed

UTC = dt.timezone.utc
START = dt.datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def random_stay(hours=150, first_iculos=3, seed=1):
    """Vitals measured most hours, labs now and then, demographics on every row."""
    rng = np.random.default_rng(seed)
    x = np.full((hours, N_FEATURES), np.nan, np.float32)
    for name in CLINICAL:
        rate = 0.1 if name in RESULTED_LABS else 0.7
        measured = rng.random(hours) < rate
        x[measured, INDEX[name]] = rng.uniform(-5, 150, measured.sum()).round(1)
    x[:, INDEX["BaseExcess"]][rng.random(hours) < 0.05] = 0.0   # a zero lab value, amended or not
    x[:, INDEX["Age"]], x[:, INDEX["Gender"]] = 70, 1
    x[:, INDEX["ICULOS"]] = np.arange(first_iculos, first_iculos + hours)
    return x


def measured(x):
    return {(int(row[INDEX["ICULOS"]]), name): float(row[INDEX[name]])
            for row in x for name in CLINICAL if math.isfinite(row[INDEX[name]])}


@pytest.fixture(scope="module")
def stay():
    x = random_stay()
    return x, realistic_feed("p1", x, START, seed=4)


def test_the_grid_files_the_messages_back_into_the_stays_rows(stay):
    """Every measured value arrives, each (hour, variable) ends with the file's value after duplicates
    and amendments, and nothing the file did not measure appears."""
    x, msgs = stay
    admit = icu_admission(x, START)
    assert admit == START - dt.timedelta(hours=2)  # the first row's ICULOS is 3
    assert hourly([m.charted for m in msgs], admit) == measured(x)


def test_messages_come_in_arrival_order_with_every_value_its_own(stay):
    _, msgs = stay
    assert [m.sent for m in msgs] == sorted(m.sent for m in msgs)
    firsts = [m for m in msgs if not m.duplicate and not m.amended]
    assert len({m.charted.key for m in firsts}) == len(firsts)  # one first message per value


def test_vitals_are_jittered_inside_their_hour_and_labs_come_late_stamped_with_the_draw(stay):
    x, msgs = stay
    admit = icu_admission(x, START)
    minutes = {"HR": set(), "SBP": set()}
    for m in msgs:
        hour = int(m.charted.key.split(".")[1])
        assert hour_of(m.charted.time, admit) == hour
        late = (m.sent - m.charted.time).total_seconds()
        if m.duplicate or m.amended:
            continue
        if m.charted.variable in RESULTED_LABS:
            assert 30 * 60 <= late <= 150 * 60
        else:
            assert 0 <= late <= 60
            minutes.get(m.charted.variable, set()).add(m.charted.time.minute)
    assert all(len(seen) > 30 for seen in minutes.values())  # spread over the hour, not on its start
    # a lab is overtaken by later vitals: some message sent after it was stamped later
    lab = next(i for i, m in enumerate(msgs) if m.charted.variable in RESULTED_LABS)
    assert any(m.charted.time > msgs[lab].charted.time for m in msgs[:lab])


def test_one_blood_pressure_reading_shares_its_cuff_time(stay):
    _, msgs = stay
    times = {}
    for m in msgs:
        if m.charted.variable in ("SBP", "DBP", "MAP"):
            times.setdefault(m.charted.key.split(".")[1], set()).add(m.charted.time)
    assert times and all(len(t) == 1 for t in times.values())


def test_duplicates_are_flagged_copies_sent_later(stay):
    _, msgs = stay
    dups = [m for m in msgs if m.duplicate]
    originals = [m for m in msgs if not m.duplicate]
    assert 0.03 < len(dups) / len(originals) < 0.07
    for d in dups:
        first = [m for m in originals if m.charted == d.charted]
        assert len(first) == 1 and first[0].sent < d.sent <= first[0].sent + dt.timedelta(seconds=300)


def test_amendments_correct_a_wrong_lab_value_later(stay):
    x, msgs = stay
    amended = [m for m in msgs if m.amended and not m.duplicate]
    labs = sum(1 for (_, name) in measured(x) if name in RESULTED_LABS)
    assert amended and len(amended) / labs < 0.06
    truth = measured(x)
    for a in amended:
        assert a.charted.status == "amended" and a.charted.variable in RESULTED_LABS
        hour = int(a.charted.key.split(".")[1])
        assert a.charted.value == truth[(hour, a.charted.variable)]
        wrong = [m for m in msgs if m.charted.key == a.charted.key and not m.amended]
        assert wrong and all(w.sent < a.sent and w.charted.value != a.charted.value for w in wrong)
        assert all(w.charted.time == a.charted.time for w in wrong)


def test_the_feed_is_seeded():
    x = random_stay(hours=30)
    assert realistic_feed("p1", x, START, seed=4) == realistic_feed("p1", x, START, seed=4)
    assert realistic_feed("p1", x, START, seed=4) != realistic_feed("p1", x, START, seed=5)
    assert realistic_feed("p1", x, START, seed=4) != realistic_feed("p2", x, START, seed=4)


def test_no_duplicates_or_amendments_when_asked_for_none():
    x = random_stay(hours=40)
    msgs = realistic_feed("p1", x, START, config=FeedConfig(duplicate_share=0.0, amended_share=0.0))
    assert not any(m.duplicate or m.amended for m in msgs) and len(msgs) == len(measured(x))


def test_json_and_fhir_messages_carry_one_value_with_its_status(stay):
    from training.sepsis.fhir_bundle import FEED_KEYS, feed_observation

    _, msgs = stay
    m = next(m for m in msgs if m.amended)
    body = json_body("p1", m)
    assert body == {"patient_id": "p1", "timestamp": m.charted.time.isoformat(),
                    "vitals": {m.charted.variable: m.charted.value}, "status": "amended"}
    obs = feed_observation("p1", m.charted)
    assert obs["status"] == "amended" and obs["identifier"] == [{"system": FEED_KEYS, "value": m.charted.key}]
    assert obs["valueQuantity"]["value"] == m.charted.value and obs["subject"] == {"reference": "Patient/p1"}
    assert feed_observation("p1", msgs[0].charted)["status"] == "final"
