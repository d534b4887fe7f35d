"""Scoring: the service feeds the model exactly what the data contract says, keeps state between
observations, and treats repeats and out-of-order posts safely. Runs on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from tests.service.conftest import T0, hdr, iso, obs, reference_hourly, reference_risks, vitals_stream


def post_stream(client, patient, rows):
    out = []
    for hour, vitals in rows:
        r = client.post("/predict", json=obs(patient, hour, **vitals), headers=hdr("ingest"))
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def test_stream_matches_reference_model(client):
    rows = vitals_stream(12)
    rows[7] = (9.5, rows[7][1])  # a gap: hours 8 and 9 are stepped empty, as the training rows are
    rows = sorted(rows[:8], key=lambda r: r[0]) + [(10.0 + i, v) for i, (_, v) in enumerate(rows[8:])]
    got = post_stream(client, "p1", rows)
    assert [g["risk"] for g in got] == pytest.approx(reference_risks(rows), rel=1e-5, abs=1e-6)
    assert got[0]["elapsed_hours"] == 0 and got[0]["iculos"] == 1
    assert got[7]["elapsed_hours"] == 1.0 and got[7]["iculos"] == 10
    assert {g["model"] for g in got} == {"sepsis-cfc"} and {g["model_version"] for g in got} == {"1"}
    assert all(g["alarm"] == (g["risk"] >= g["threshold"]) for g in got)


def test_admission_sets_icu_time_and_demographics(client):
    r = client.post("/patients", json={"patient_id": "a1", "age": 71, "gender": 0, "unit": "SICU", "hosp_adm_time": -10,
                                       "icu_admit_time": iso(T0)}, headers=hdr("ingest"))
    assert r.status_code == 201, r.text
    rows = [(4.25, {"HR": 88.0}), (5.25, {"HR": 95.0, "Temp": 38.2})]
    got = post_stream(client, "a1", rows)
    assert [g["iculos"] for g in got] == [5, 6]  # floor(hours since ICU admission) + 1
    demo = {"Age": 71.0, "Gender": 0.0, "Unit1": 0.0, "Unit2": 1.0, "HospAdmTime": -10.0}
    assert [g["risk"] for g in got] == pytest.approx(reference_risks(rows, demo, icu_admit_hour=0.0), rel=1e-5, abs=1e-6)
    # the same admission again is a no-op; a different one is refused
    same = {"patient_id": "a1", "age": 71, "gender": 0, "unit": "SICU", "hosp_adm_time": -10, "icu_admit_time": iso(T0)}
    assert client.post("/patients", json=same, headers=hdr("ingest")).status_code == 200
    r = client.post("/patients", json={**same, "age": 50}, headers=hdr("ingest"))
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    # an ingest key learns nothing clinical from a repeat or a conflict; a key that may read patients does
    repeat = client.post("/patients", json=same, headers=hdr("ingest")).json()
    assert (repeat["n_observations"], repeat["last_risk"], repeat["last_observation"], repeat["active_alarm_id"],
            repeat["status"]) == (0, None, None, None, "monitoring")
    assert repeat["icu_admit_time"] == iso(T0) and repeat["unit"] == "SICU"
    assert "observations" not in r.json()["detail"]
    full = client.post("/patients", json=same, headers=hdr("admin")).json()
    # hours 1-4 had no value and were stepped empty: six hourly rows
    assert full["n_observations"] == 6 and full["last_risk"] == pytest.approx(got[-1]["risk"])
    r = client.post("/patients", json={**same, "age": 50}, headers=hdr("admin"))
    assert r.status_code == 409 and "with 6 observations" in r.json()["detail"]
    # the ward list carries the unit, so a unit filter needs no per-patient request
    listed = {p["patient_id"]: p for p in client.get("/patients", headers=hdr("viewer")).json()}
    assert listed["a1"]["unit"] == "SICU"


def test_observation_before_icu_admission_is_refused(client):
    client.post("/patients", json={"patient_id": "a2", "icu_admit_time": iso(T0)}, headers=hdr("ingest"))
    r = client.post("/predict", json=obs("a2", -2, HR=80), headers=hdr("ingest"))
    assert r.status_code == 409 and "precedes" in r.json()["detail"]


def test_repeat_identical_returns_stored_result_and_changes_nothing(client):
    first, second = post_stream(client, "d1", vitals_stream(2))
    again = client.post("/predict", json=obs("d1", 0.0, **vitals_stream(1)[0][1]), headers=hdr("ingest")).json()
    assert again["duplicate"] is True and again["risk"] == first["risk"]
    third = client.post("/predict", json=obs("d1", 2, HR=100), headers=hdr("ingest")).json()
    ref = reference_risks(vitals_stream(2) + [(2.0, {"HR": 100.0})])
    assert third["risk"] == pytest.approx(ref[2], rel=1e-5)  # the repeat did not advance the state
    detail = client.get("/patients/d1", headers=hdr("viewer")).json()
    assert detail["n_observations"] == 3 and len(detail["timeline"]) == 3


def test_a_charted_value_sent_again_with_another_value_is_409_and_stores_nothing(client):
    post_stream(client, "c1", vitals_stream(3))
    r = client.post("/predict", json=obs("c1", 1, HR=150), headers=hdr("ingest"))
    assert r.status_code == 409 and "amended" in r.json()["detail"] and "HR" in r.json()["detail"]
    detail = client.get("/patients/c1", headers=hdr("viewer")).json()
    assert [e["vitals"]["HR"] for e in detail["timeline"]] == [v["HR"] for _, v in vitals_stream(3)]
    nxt = client.post("/predict", json=obs("c1", 3, HR=90), headers=hdr("ingest")).json()
    assert nxt["risk"] == pytest.approx(reference_risks(vitals_stream(3) + [(3.0, {"HR": 90.0})])[3], rel=1e-5)


def test_a_late_value_is_filed_in_its_hour_and_every_later_hour_is_re_stepped(client):
    rows = vitals_stream(4)
    post_stream(client, "c2", rows)
    late = (1.5, {"HR": 150.0})  # measured in hour 2, arriving after hour 4's values
    r = client.post("/predict", json=obs("c2", *late[:1], **late[1]), headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    body = r.json()
    want = reference_risks(rows + [late])
    assert body["iculos"] == 2 and body["risk"] == pytest.approx(want[-1], rel=1e-5)
    assert body["revised_hours"] == [2, 3, 4] and body["latest_iculos"] == 4
    timeline = client.get("/patients/c2", headers=hdr("viewer")).json()["timeline"]
    hourly = reference_hourly(rows + [late])
    assert [e["risk"] for e in timeline] == pytest.approx([hourly[h] for h in (1, 2, 3, 4)], rel=1e-5, abs=1e-6)
    assert timeline[1]["vitals"]["HR"] == pytest.approx((rows[1][1]["HR"] + 150.0) / 2)  # the hour's median
    assert body["latest_risk"] == pytest.approx(hourly[4], rel=1e-5)
    # every value kept as received: the late one last, filed in hour 2, and it revised hours 2-4
    kept = client.get("/patients/c2/messages", headers=hdr("viewer")).json()
    assert len(kept) == sum(len(v) for _, v in rows) + 1
    assert (kept[-1]["variable"], kept[-1]["value"], kept[-1]["iculos"], kept[-1]["status"], kept[-1]["source"]) == (
        "HR", 150.0, 2, "final", "json")
    assert [e["revised_by"] for e in timeline] == [None, kept[-1]["id"], kept[-1]["id"], kept[-1]["id"]]
    assert timeline[3]["first_risk"] == pytest.approx(reference_hourly(rows)[4], rel=1e-5)
    assert client.get("/patients/nobody/messages", headers=hdr("viewer")).status_code == 404


def test_batch_equals_singles_and_runs_one_step_across_patients(client):
    streams = {f"b{i}": vitals_stream(4 + i, seed=i) for i in range(3)}
    items = [obs(pid, h, **v) for pid, rows in streams.items() for h, v in rows]
    items.reverse()  # arrival order inside a batch does not matter: each patient runs in time order
    r = client.post("/predict/batch", json={"observations": items}, headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_runs"] == 6  # the longest stay's length, not the number of observations
    by_key = {(x["patient_id"], x["timestamp"]): x["risk"] for x in body["results"]}
    assert [x["timestamp"] for x in body["results"]] == [i["timestamp"] for i in items]
    for pid, rows in streams.items():
        got = [by_key[(pid, iso(T0.replace(hour=8 + int(h))))] for h, _ in rows]
        assert got == pytest.approx(reference_risks(rows, seed=0), rel=1e-5, abs=1e-6)


def test_batch_is_all_or_nothing(client):
    post_stream(client, "e1", vitals_stream(3))
    # the last charts another HR at a time that already holds one, without saying it amends it
    items = [obs("e2", 0, HR=80), obs("e2", 1, HR=81), obs("e1", 0, HR=70)]
    r = client.post("/predict/batch", json={"observations": items}, headers=hdr("ingest"))
    assert r.status_code == 409 and "observations[2]" in r.json()["detail"]
    assert client.get("/patients/e2", headers=hdr("viewer")).status_code == 404
    assert client.get("/patients/e1", headers=hdr("viewer")).json()["n_observations"] == 3


def test_model_upgrade_rebuilds_state_from_history(db_url, models_root):
    from tests.service.conftest import client_for

    rows = vitals_stream(6)
    with client_for(db_url, models_root) as c:
        post_stream(c, "u1", rows[:4])
    with client_for(db_url, models_root, model_version="2") as c:
        got = post_stream(c, "u1", rows[4:])
    assert {g["model_version"] for g in got} == {"2"}
    assert [g["risk"] for g in got] == pytest.approx(reference_risks(rows, seed=7)[4:], rel=1e-5, abs=1e-6)
