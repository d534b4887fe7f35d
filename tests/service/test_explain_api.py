"""Contributions: every scored observation carries its top inputs, stored with it
and with the alarm it raised, equal to a direct computation of "risk as posted minus risk with the
value replaced by its clinical reference" on the fixture's numpy reference; SEPSIS_EXPLAIN=off stores null; the cost is
on its own histogram. PatientDetail carries the bedside context at the service clock's now."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from models.card import FEATURES
from models.explain import LEAD_FLOOR
from models.reference import NORMAL, REFERENCES
from models.operating_points import load_operating_points, risk_in_words
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
