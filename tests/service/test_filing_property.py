"""The served risk is the validated risk: a stay sent as hospitals send it (each value its own
message, labs hours late, duplicates, wrong values amended, values outside their plausible range as
the archive holds them, in any order, split into requests any way, JSON and FHIR) ends with the hourly risks the offline evaluation (`evaluate-onnx`'s stream of
the stay's rows through the same exported step, from the ICU admission's hour 1 as the service
steps it) gives the same stay, empty hours included. So do the shadow models', which rewind as the
live model does, and their would-be alarms are those of their risks from scratch."""
from __future__ import annotations

import datetime as dt
import math
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from models.alarm_figures import measured as has_vital_or_lab
from models.contract import FEATURES, INDEX, N_FEATURES, elapsed_hours
from models.grid import from_admission
from models.runtime import StepRuntime
from service.lifecycle.shadows import _alarms
from service.storage.tables import ShadowScore
from tests.service.conftest import client_for, hdr
from training.sepsis.evaluate_onnx import stream
from training.sepsis.feed import FeedConfig, realistic_feed
from training.sepsis.fhir_bundle import feed_observation
from training.sepsis.replay import plan_stay

START = dt.datetime(2024, 5, 1, 6, 0, tzinfo=dt.timezone.utc)
MEASURED = {"HR": (50, 150), "O2Sat": (82, 95), "Temp": (35.5, 40.0), "SBP": (70, 170), "MAP": (50, 110),
            "Resp": (10, 35), "FiO2": (0.21, 0.8), "Lactate": (0.5, 8.0), "WBC": (2, 30), "Creatinine": (0.4, 5.0),
            "Platelets": (30, 400), "pH": (7.1, 7.5), "Glucose": (60, 300)}
# values the archive holds outside their plausible range (service/ranges.py): filed and scored as charted
IMPLAUSIBLE = (("FiO2", 2.0), ("FiO2", -50.0), ("Temp", 50.0), ("Hgb", 32.0), ("HR", 420.0))
# every message kind the feed makes, often: a third of the labs first sent wrong and amended
FEED = FeedConfig(duplicate_share=0.2, amended_share=0.35, amended_error=(0.01, 0.05))  # wrong, yet in range


def make_stay(seed: int, hours: int, first: int = 1) -> np.ndarray:
    """[hours, 40] rows as the challenge files hold them: ICULOS first.., demographics on every row,
    the first row empty when the file starts at ICULOS 1 (every such file does) and measured when it
    starts later (every such file is), some later hours empty too."""
    rng = np.random.default_rng(seed)
    x = np.full((hours, N_FEATURES), np.nan, np.float32)
    x[:, INDEX["ICULOS"]] = np.arange(first, first + hours)
    x[:, INDEX["Age"]], x[:, INDEX["Gender"]] = rng.integers(20, 90), rng.integers(0, 2)
    x[:, INDEX["Unit1"]], x[:, INDEX["Unit2"]], x[:, INDEX["HospAdmTime"]] = 1.0, 0.0, -float(rng.integers(0, 30))
    for t in range(1, hours):
        if rng.random() < 0.15:
            continue  # an hour nobody charted
        for name, (low, high) in MEASURED.items():
            if rng.random() < 0.5:
                x[t, INDEX[name]] = round(float(rng.uniform(low, high)), 2)
    if hours > 1 and rng.random() < 0.3:
        name, value = IMPLAUSIBLE[rng.integers(len(IMPLAUSIBLE))]
        x[rng.integers(1, hours), INDEX[name]] = value
    if first > 1:
        x[0, INDEX["HR"]] = 88.0
    if not np.isfinite(x[1:, :34]).any():
        x[hours - 1, INDEX["HR"]] = 90.0
    return x


@pytest.fixture
def shadowed(db_url, models_root):
    """The service with two shadows: another model, and one whose every risk is at its threshold
    (so that its would-be alarms depend on the episode a rewind resumes)."""
    with client_for(db_url, models_root, shadow_models="sepsis-cfc:2,always:1") as c:
        yield c


def offline(models_root, rows: np.ndarray, name: str = "sepsis-cfc", version: str = "1") -> np.ndarray:
    """`evaluate-onnx --from-admission`'s risks of the stay: every hour from the admission's hour 1
    (for a file that starts at ICULOS 1, exactly the plain evaluation's)."""
    runtime = StepRuntime.open(models_root / name / version, device="cpu")
    padded, offsets, _ = from_admission(rows, np.array([0, len(rows)]))
    return stream(runtime, padded, elapsed_hours(padded, offsets), offsets)


def send(client, pid: str, batch: list, fhir: dict[str, bool]) -> None:
    """One request: a JSON batch of the batch's JSON messages; each FHIR message posted alone."""
    bodies = []
    for m in batch:
        c = m.charted
        if fhir[c.key]:
            r = client.post("/fhir/Observation", json=feed_observation(pid, c),
                            headers={**hdr("ingest"), "Content-Type": "application/fhir+json"})
            assert r.status_code in (200, 201), r.text
        else:
            bodies.append({"patient_id": pid, "timestamp": c.time.isoformat(), "vitals": {c.variable: c.value},
                           "status": c.status})
    if bodies:
        r = client.post("/predict/batch", json={"observations": bodies}, headers=hdr("ingest"))
        assert r.status_code == 200, r.text


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), hours=st.integers(2, 9), shuffle=st.randoms(use_true_random=False),
       cuts=st.lists(st.integers(1, 6), min_size=1, max_size=40), fhir_share=st.sampled_from([0.0, 0.5, 1.0]),
       first=st.sampled_from([1, 1, 3]))
def test_any_order_split_and_format_ends_at_the_offline_hourly_risks(shadowed, models_root, seed, hours, shuffle, cuts,
                                                                    fhir_share, first):
    client = shadowed
    pid = f"prop-{seed}-{hours}-{first}"
    rows = make_stay(seed, hours, first)
    plan = plan_stay(pid, rows, np.zeros(hours), START)
    assert client.post("/patients", json=plan.admission, headers=hdr("ingest")).status_code in (200, 201)
    messages = realistic_feed(pid, rows, START, seed, FEED)
    shuffle.shuffle(messages)  # any arrival order, not only the feed's realistic one
    fhir = {m.charted.key: (zlib.crc32(m.charted.key.encode()) % 100) < fhir_share * 100 for m in messages}
    at, k = 0, 0
    while at < len(messages):
        size = cuts[k % len(cuts)]
        send(client, pid, messages[at:at + size], fhir)
        at, k = at + size, k + 1

    timeline = client.get(f"/patients/{pid}", headers=hdr("viewer")).json()["timeline"]
    last = max(int(r[INDEX["ICULOS"]]) for r in rows if np.isfinite(r[:34]).any())
    assert [e["iculos"] for e in timeline] == list(range(1, last + 1))  # every hour, the empty ones too
    want = offline(models_root, rows)[:last]
    assert [e["risk"] for e in timeline] == pytest.approx(want.tolist(), abs=1e-5)
    assert [e["vitals"] for e in timeline[:first - 1]] == [{}] * (first - 1)
    for e, r in zip(timeline[first - 1:], rows):  # each hour holds the file's values, amendments applied
        measured = {n: float(r[INDEX[n]]) for n in FEATURES[:34] if math.isfinite(r[INDEX[n]])}
        assert e["vitals"] == pytest.approx(measured)
    shadows = client.app.state.services.shadows
    for m in shadows.models:  # each rewound to its own state before each revised hour
        with shadows.engine.connect() as conn:
            scored = conn.execute(select(ShadowScore).where(
                ShadowScore.patient_id == pid, ShadowScore.model_name == m.name,
                ShadowScore.model_version == m.version).order_by(ShadowScore.ts)).all()
        assert [r.ts for r in scored] == [dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
                                          for e in timeline]
        want = offline(models_root, rows, m.name, m.version)[:last]
        assert [r.risk for r in scored] == pytest.approx(want.tolist(), abs=1e-5), m.name
        # monitored from the first hour with a vital sign or lab (models.alarm_figures), however it arrived
        begin = next((r.ts for r, e in zip(scored, timeline) if has_vital_or_lab(e["vitals"])), None)
        flags, _ = _alarms(want, [r.ts for r in scored], shadows.policies[(m.name, m.version)], None, False, begin)
        assert [r.alarm for r in scored] == flags, m.name
