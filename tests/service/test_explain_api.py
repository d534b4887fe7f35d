"""Contributions: every scored observation carries its top inputs, stored with it
and with the alarm it raised, equal to a direct computation of "risk as posted minus risk with the
value replaced by its clinical reference" on the fixture's numpy reference; SEPSIS_EXPLAIN=off stores null; the cost is
on its own histogram. PatientDetail carries the bedside context at the service clock's now."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.card import FEATURES
from models.explain import LEAD_FLOOR
from models.reference import NORMAL, REFERENCES
from models.operating_points import load_operating_points, risk_in_words
from models.runtime import StepRuntime
from models.testing import fixture_weights, reference_step
from tests.service.conftest import STATE_SIZE, T0, client_for, hdr, obs

ICULOS = FEATURES.index("ICULOS")
DEMOGRAPHICS = {"Age": 71.0, "Gender": 0.0, "Unit1": 1.0, "Unit2": 0.0}
ROWS = [(0.0, {"HR": 88.0, "MAP": 74.0, **DEMOGRAPHICS}),
        (1.0, {"HR": 112.0, "Temp": 38.9}),
        (2.5, {"HR": 128.0, "MAP": 58.0, "Temp": 39.4, "Resp": 32.0, "Lactate": 4.8, "WBC": 19.0,
               "Creatinine": 2.4, "Platelets": 90.0}),
        (3.0, {}),
        (4.0, {"MAP": 61.0, "SaO2": 91.0})]


def expected_contributions(rows, k: int = 5) -> list[list[dict]]:
    """Independently of the service and of models/explain.py: step the fixture's numpy reference,
    and for each posted variable rerun the same pre-step state with that value replaced by its
    normal reference (models/reference_values.csv; missing for the administrative columns, which
    have none). Clinical values moving the risk by LEAD_FLOOR or more come first."""
    weights = fixture_weights(STATE_SIZE, 0)
    state = np.zeros((1, STATE_SIZE), np.float32)
    demographics = {n: v for n, v in rows[0][1].items() if n in ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime")}
    out, previous = [], None
    for hour, vitals in rows:
        x = np.full((1, len(FEATURES)), np.nan, np.float32)
        for name, value in {**demographics, **vitals}.items():
            x[0, FEATURES.index(name)] = value
        x[0, ICULOS] = np.floor(hour - rows[0][0]) + 1
        # the rows fall in consecutive hours of the stay: one hourly step each (models/grid.py)
        elapsed = np.array([[0.0 if previous is None else 1.0]], np.float32)
        risk, next_state = reference_step(x, elapsed, state, weights)
        items = []
        for j in np.flatnonzero(~np.isnan(x[0])):
            if j == ICULOS or x[0, j] == NORMAL[j]:
                continue
            variant = x.copy()
            variant[0, j] = NORMAL[j]  # NaN for an administrative column
            without, _ = reference_step(variant, elapsed, state, weights)
            delta = round(float(risk[0, 0]) - float(without[0, 0]), 6)
            if delta != 0.0:
                items.append({"feature": FEATURES[j], "value": float(x[0, j]), "delta": delta})
        items.sort(key=lambda c: (REFERENCES[c["feature"]].system == "administrative" or abs(c["delta"]) < LEAD_FLOOR,
                                  -abs(c["delta"])))
        out.append(items[:k])
        state, previous = next_state, hour
    return out


def assert_same(got: list[dict] | None, want: list[dict]) -> None:
    assert got is not None
    assert [c["feature"] for c in got] == [c["feature"] for c in want]
    assert [c["value"] for c in got] == pytest.approx([c["value"] for c in want], rel=1e-6)
    assert [c["delta"] for c in got] == pytest.approx([c["delta"] for c in want], abs=2e-6)


def test_contributions_stored_and_equal_to_a_direct_computation(db_url, models_root):
    want = expected_contributions(ROWS)
    assert all(want), "every row has something to withhold"
    with client_for(db_url, models_root, model="always") as c:
        first = c.post("/predict", json=obs("e1", ROWS[0][0], **ROWS[0][1]), headers=hdr("ingest")).json()
        batch = c.post("/predict/batch", json={"observations": [obs("e1", h, **v) for h, v in ROWS[1:]]},
                       headers=hdr("ingest")).json()["results"]
        answered = [first["contributions"]] + [r["contributions"] for r in batch]
        for got, exp in zip(answered, want):
            assert_same(got, exp)
        for item in (item for got in answered for item in got):  # what a clinician reads beside each delta
            ref = REFERENCES[item["feature"]]
            assert (item["system"], item["reference"]) == (ref.system, ref.normal)
            assert item["hours_since"] == 0.0  # the fixture's step keeps no memory: every value is posted now
        detail = c.get("/patients/e1", headers=hdr("viewer")).json()
        assert [e["contributions"] for e in detail["timeline"]] == answered  # stored as answered
        # the alarm carries its raising observation's contributions (threshold 0: the first raises)
        alarm = c.get("/alarms", params={"patient_id": "e1"}, headers=hdr("viewer")).json()[0]
        assert alarm["id"] == first["alarm_id"] and alarm["contributions"] == answered[0]
        assert detail["alarms"][0]["contributions"] == answered[0]
        # posted again: the stored result, with the stored contributions
        again = c.post("/predict", json=obs("e1", ROWS[1][0], **ROWS[1][1]), headers=hdr("ingest")).json()
        assert again["duplicate"] and again["contributions"] == answered[1]
        metrics = c.get("/metrics", headers=hdr("monitor")).text
        assert _explain_count(metrics) == 5  # one explained run per model run (1 + 4 batch steps)


def _explain_count(metrics: str) -> float:
    line = next(l for l in metrics.splitlines() if l.startswith("sepsis_explain_seconds_count"))
    return float(line.split()[-1])


def test_explain_off_stores_null_and_costs_nothing(db_url, models_root):
    with client_for(db_url, models_root, model="always", explain=False) as c:
        r = c.post("/predict", json=obs("n1", 0, HR=120.0, Age=60.0), headers=hdr("ingest")).json()
        assert r["contributions"] is None and r["alarm_id"] is not None
        detail = c.get("/patients/n1", headers=hdr("viewer")).json()
        assert detail["timeline"][0]["contributions"] is None and detail["alarms"][0]["contributions"] is None
        assert _explain_count(c.get("/metrics", headers=hdr("monitor")).text) == 0


def test_explain_setting_reads_from_the_environment(monkeypatch):
    from service.config import Settings
    monkeypatch.setenv("SEPSIS_EXPLAIN", "off")
    assert Settings.from_env().explain is False
    monkeypatch.delenv("SEPSIS_EXPLAIN")
    assert Settings.from_env().explain is True


def test_patient_detail_has_bedside_context_at_the_service_clock(db_url, models_root):
    # simulated clock: now is the latest observation stored, so every age is exact
    with client_for(db_url, models_root, clock="simulated") as c:
        c.post("/predict/batch", json={"observations": [obs("b1", h, **v) for h, v in ROWS]}, headers=hdr("ingest"))
        detail = c.get("/patients/b1", headers=hdr("viewer")).json()
    bedside = detail["bedside"]
    assert set(bedside) >= {"qsofa", "sirs", "sofa", "lactate", "latest"}
    latest = {v["feature"]: v for v in bedside["latest"]}
    # MAP was last measured at hour 4 (61), Lactate at 2.5 (4.8); now = hour 4
    assert latest["MAP"]["value"] == 61.0 and latest["MAP"]["age_hours"] == pytest.approx(0.0)
    assert bedside["lactate"]["value"] == 4.8 and bedside["lactate"]["age_hours"] == pytest.approx(1.5)
    assert dt.datetime.fromisoformat(bedside["lactate"]["measured_at"].replace("Z", "+00:00")) == \
        T0 + dt.timedelta(hours=2.5)
    assert detail["threshold"] == 0.5 and detail["operating_point"] is None
    points = load_operating_points(models_root / "sepsis-cfc" / "1")
    assert detail["risk_in_words"] == risk_in_words(points, detail["last_risk"], 0.5)


def test_contributions_in_the_openapi(client):
    spec = client.get("/openapi.json").json()["components"]["schemas"]
    for body in ("PredictResult", "TimelineEntry", "AlarmOut"):
        assert "contributions" in spec[body]["properties"], body
    assert set(spec["Contribution"]["required"]) == {"feature", "value", "delta"}


def test_a_batch_explains_the_latest_row_and_alarm_rows_only(db_url, models_root):
    """A backfill batch explains what the ward sees: each patient's latest row of the request and
    every row at or above the alarm threshold; the other rows store null (and cost nothing)."""
    with client_for(db_url, models_root) as c:  # threshold 0.5
        rows = [obs(pid, h, **v) for pid in ("q1", "q2") for h, v in ROWS]
        results = c.post("/predict/batch", json={"observations": rows}, headers=hdr("ingest")).json()["results"]
        for pid in ("q1", "q2"):
            mine = [r for r in results if r["patient_id"] == pid]
            for i, r in enumerate(mine):
                shown = i == len(mine) - 1 or r["risk"] >= r["threshold"]
                assert (r["contributions"] is not None) == shown, (pid, i, r["risk"])
            assert any(r["contributions"] is None for r in mine), "the fixture must leave some rows below threshold"
        stored = c.get("/patients/q1", headers=hdr("viewer")).json()["timeline"]
        assert [e["contributions"] for e in stored] == [r["contributions"] for r in results if r["patient_id"] == "q1"]
        # a single /predict is always explained
        one = c.post("/predict", json=obs("q1", 5.0, HR=70.0), headers=hdr("ingest")).json()
        assert one["contributions"] is not None


SHIPPED_V1 = Path(__file__).resolve().parents[2] / "models" / "sepsis-cfc" / "1"
# vitals every hour; temperature, WBC and platelets once on admission; lactate never
GAP_ROWS = [(0.0, {"HR": 100.0, "MAP": 70.0, "Resp": 22.0, "Temp": 38.4, "Platelets": 80.0, "WBC": 16.0,
                   "Age": 71.0, "Gender": 0.0, "Unit1": 1.0, "Unit2": 0.0, "HospAdmTime": -2.0})] + \
           [(float(h), {"HR": 100.0 + h, "MAP": 68.0, "Resp": 24.0}) for h in range(1, 30)]


@pytest.fixture(scope="module")
def memory_root(tmp_path_factory):
    """The shipped sepsis-cfc/1: a step with a per-variable memory (find_memory), which the
    fixture model has not."""
    root = tmp_path_factory.mktemp("memory_models")
    shutil.copytree(SHIPPED_V1, root / "sepsis-cfc" / "1")
    return root


def expected_gaps(rows, k: int = 2) -> list[tuple[str, float]]:
    """Independently of the service and of models/explain.py: step the shipped model through the
    stay's hours, and at the last one rerun its pre-step state with each of the 13 variables with a
    documented abnormal value not posted in the last 24 h posted at its normal reference; the k largest rises of at least
    LEAD_FLOOR (risk as posted minus risk with the reference), largest first."""
    runtime = StepRuntime.open(SHIPPED_V1, device="cpu")
    demographics = {n: v for n, v in rows[0][1].items() if n in ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime")}
    state = runtime.new_state(1)
    last_posted = {}
    for t, (hour, vitals) in enumerate(rows):
        x = np.full((1, len(FEATURES)), np.nan, np.float32)
        for name, value in {**demographics, **vitals}.items():
            x[0, FEATURES.index(name)] = value
            last_posted[name] = hour
        x[0, ICULOS] = t + 1
        elapsed = np.array([[0.0 if t == 0 else 1.0]], np.float32)
        if t < len(rows) - 1:
            state = runtime.step(x, elapsed, state).next_state
    as_posted = float(runtime.step(x, elapsed, state).risk[0])
    gaps = []
    for j, name in enumerate(FEATURES):
        if REFERENCES[name].abnormal is None:  # only the 13 sepsis-defining variables can be a gap
            continue
        if name in last_posted and hour - last_posted[name] <= 24:
            continue
        variant = x.copy()
        variant[0, j] = NORMAL[j]
        delta = as_posted - float(runtime.step(variant, elapsed, state).risk[0])
        if delta >= LEAD_FLOOR:
            gaps.append((name, round(delta, 6)))
    return sorted(gaps, key=lambda g: -g[1])[:k]


def test_not_measured_for_long_is_listed_after_the_values_with_a_memory(db_url, memory_root, models_root):
    """A step with a memory: a vital sign or lab not measured for more than 24 h (or never) whose
    gap raises the risk is listed after the values, basis "not measured", at most 2, equal to a
    direct computation; nothing posted in the last 24 h ever is. The fixture step keeps no memory:
    none there."""
    want = expected_gaps(GAP_ROWS)
    assert want, "the shipped model must read some gap of this stay as raising the risk"
    with client_for(db_url, memory_root) as c:
        results = c.post("/predict/batch", json={"observations": [obs("g1", h, **v) for h, v in GAP_ROWS]},
                         headers=hdr("ingest")).json()["results"]
        last = results[-1]["contributions"]
        basis = [x["basis"] for x in last]
        assert "not measured" in basis and basis == sorted(basis, key=["value", "not measured"].index)
        gaps = [x for x in last if x["basis"] == "not measured"]
        assert [x["feature"] for x in gaps] == [name for name, _ in want]
        assert [x["delta"] for x in gaps] == pytest.approx([d for _, d in want], abs=2e-6)
        for x in gaps:
            ref = REFERENCES[x["feature"]]
            assert (x["system"], x["reference"]) == (ref.system, ref.normal)
            first = GAP_ROWS[0][1].get(x["feature"])  # the admission's value, 29 h old; or never measured
            assert (x["value"], x["hours_since"]) == ((first, 29.0) if first is not None else (None, None))
        for r in results:
            if r["contributions"] is None:
                continue
            for x in (x for x in r["contributions"] if x["basis"] == "not measured"):
                assert x["feature"] not in ("HR", "MAP", "Resp"), "posted every hour: never a gap"
                assert x["hours_since"] is None or x["hours_since"] > 24
                assert x["delta"] >= LEAD_FLOOR
            assert sum(x["basis"] == "not measured" for x in r["contributions"]) <= 2
        # stored as answered
        timeline = c.get("/patients/g1", headers=hdr("viewer")).json()["timeline"]
        assert timeline[-1]["contributions"] == last
    with client_for(db_url, models_root) as c:  # the fixture step: no memory, no gaps
        results = c.post("/predict/batch", json={"observations": [obs("g2", h, **v) for h, v in GAP_ROWS]},
                         headers=hdr("ingest")).json()["results"]
        listed = [x for r in results for x in (r["contributions"] or [])]
        assert listed and all(x["basis"] == "value" for x in listed)


def test_contributions_stored_before_the_basis_read_as_values(db_url, models_root):
    """Contributions stored before "basis" existed (the JSON column holds no such key) still answer,
    as basis "value"."""
    from sqlalchemy import create_engine, text
    with client_for(db_url, models_root, model="always") as c:
        first = c.post("/predict", json=obs("o1", 0, HR=120.0, Lactate=3.1), headers=hdr("ingest")).json()
        old = [{k: v for k, v in x.items() if k != "basis"} for x in first["contributions"]]
        assert old and all(x["basis"] == "value" for x in first["contributions"])
        engine = create_engine(db_url)
        with engine.begin() as conn:
            for table in ("observations", "alarms"):
                conn.execute(text(f"update {table} set contributions = :c where patient_id = 'o1'"),
                             {"c": json.dumps(old)})
        engine.dispose()
        detail = c.get("/patients/o1", headers=hdr("viewer")).json()
        assert detail["timeline"][0]["contributions"] == first["contributions"]
        assert detail["alarms"][0]["contributions"] == first["contributions"]
        card = next(k for k in c.get("/alarms/queue", headers=hdr("viewer")).json()["cards"]
                    if k["patient_id"] == "o1")
        assert card["contributions"] == card["latest_contributions"] == first["contributions"]
