"""Round trip: a real-format stay (a PhysioNet .psv file) sent as FHIR by the replay encoder
(training/sepsis/fhir_bundle.py) gets exactly the risks the same stay gets through /predict as the
JSON replay lays it out (training/sepsis/replay.plan_stay), read back as RiskAssessments."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
from fhir.resources.R4B.bundle import Bundle

from service.ranges import FEATURES
from tests.service.conftest import client_for, hdr
from tests.service.test_replay import write_psv
from training.sepsis.data import iter_stays
from training.sepsis.fhir_bundle import drop_refused_values, stay_bundles
from training.sepsis.replay import plan_stay

START = dt.datetime(2024, 2, 1, 6, 0, tzinfo=dt.timezone.utc)


def stay_rows(n: int, first_iculos: int, unit: str | None, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n):
        r = [np.nan] * 41
        r[FEATURES.index("HR")] = round(float(rng.uniform(60, 140)), 1)
        if t % 2 == 0:
            r[FEATURES.index("SBP")] = round(float(rng.uniform(80, 160)))
            r[FEATURES.index("MAP")] = round(float(rng.uniform(55, 100)), 2)
            r[FEATURES.index("O2Sat")] = round(float(rng.uniform(88, 100)))
        if t % 3 == 0:
            r[FEATURES.index("Temp")] = round(float(rng.uniform(35.5, 40)), 2)
            r[FEATURES.index("Resp")] = round(float(rng.uniform(10, 35)), 1)
        if t % 4 == 1:
            for name, lo, hi in (("Lactate", 0.5, 6), ("WBC", 2, 25), ("Creatinine", 0.4, 4), ("Glucose", 60, 300),
                                 ("FiO2", 0.21, 1.0), ("Platelets", 20, 400), ("BUN", 5, 80), ("pH", 7.1, 7.5)):
                r[FEATURES.index(name)] = round(float(rng.uniform(lo, hi)), 2)
        if unit is not None:
            r[FEATURES.index("Age")] = 71.38
            r[FEATURES.index("Gender")] = 1
            r[FEATURES.index("Unit1")] = 1 if unit == "MICU" else 0
            r[FEATURES.index("Unit2")] = 1 if unit == "SICU" else 0
            r[FEATURES.index("HospAdmTime")] = -13.07
        else:
            r[FEATURES.index("Age")] = 48.0
            r[FEATURES.index("Gender")] = 0
        r[FEATURES.index("ICULOS")] = first_iculos + t
        r[40] = 0
        rows.append(r)
    return rows


def test_a_stay_sent_as_fhir_gets_exactly_the_risks_it_gets_through_predict(tmp_path, sqlite_url, models_root):
    data = tmp_path / "setA"
    data.mkdir()
    write_psv(data / "p000001.psv", stay_rows(9, first_iculos=1, unit="MICU", seed=1))
    write_psv(data / "p000002.psv", stay_rows(6, first_iculos=4, unit="SICU", seed=2))
    write_psv(data / "p000003.psv", stay_rows(5, first_iculos=2, unit=None, seed=3))  # no unit, no HospAdmTime
    stays = list(iter_stays(tmp_path))
    assert len(stays) == 3
    with client_for(sqlite_url, models_root) as c:
        for stay in stays:
            plan = plan_stay(f"json-{stay.patient_id}", stay.values, stay.labels, START)
            assert c.post("/patients", json=plan.admission, headers=hdr("ingest")).status_code == 201
            for o in plan.observations:
                assert c.post("/predict", json=o["body"], headers=hdr("ingest")).status_code == 200
            sent = 0
            for ts, b in stay_bundles(f"fhir-{stay.patient_id}", stay.values, START):
                Bundle.model_validate(b)  # what the encoder writes is FHIR
                r = c.post("/fhir", content=json.dumps(b), headers={**hdr("ingest"), "Content-Type": "application/fhir+json"})
                assert r.status_code == 200, r.text
                sent += 1
            assert sent == len(stay.values)

            via_json = c.get(f"/patients/json-{stay.patient_id}", headers=hdr("viewer")).json()
            via_fhir = c.get(f"/patients/fhir-{stay.patient_id}", headers=hdr("viewer")).json()
            for field in ("age", "gender", "unit1", "unit2", "hosp_adm_time", "icu_admit_time"):
                assert np.float32(via_fhir[field]) == np.float32(via_json[field]) if isinstance(via_json[field], float) \
                    else via_fhir[field] == via_json[field], field
            assert [t["vitals"] for t in via_fhir["timeline"]] == [t["vitals"] for t in via_json["timeline"]]
            assert [t["iculos"] for t in via_fhir["timeline"]] == [t["iculos"] for t in via_json["timeline"]]
            found = c.get("/fhir/RiskAssessment", params={"subject": f"Patient/fhir-{stay.patient_id}"},
                          headers=hdr("viewer")).json()
            fhir_risks = [(e["resource"]["occurrenceDateTime"], e["resource"]["prediction"][0]["probabilityDecimal"])
                          for e in found["entry"]]
            json_risks = [(t["timestamp"], t["risk"]) for t in via_json["timeline"]]
            assert fhir_risks == json_risks  # exactly: same times, same floats
            assert len(set(r for _, r in json_risks)) > 1


def test_the_encoder_writes_one_bundle_per_measured_row_admission_first():
    rows = np.array(stay_rows(4, first_iculos=3, unit="MICU", seed=4), np.float32)[:, :40]
    rows[2, :34] = np.nan  # nothing measured in the third hour: nothing to send
    out = list(stay_bundles("x1", rows, START))
    assert [ts for ts, _ in out] == [START, START + dt.timedelta(hours=1), START + dt.timedelta(hours=3)]
    first = out[0][1]
    types = [e["resource"]["resourceType"] for e in first["entry"]]
    assert types[:3] == ["Patient", "Encounter", "Encounter"] and set(types[3:]) == {"Observation"}
    icu = first["entry"][1]["resource"]
    assert icu["period"]["start"] == "2024-02-01T04:00:00Z"  # ICULOS 3 at START: admitted two hours before
    assert icu["location"] == [{"location": {"display": "MICU"}}] and icu["partOf"] == {"reference": "Encounter/x1-hospital"}
    panel = [e["resource"] for e in first["entry"][3:] if e["resource"]["code"]["coding"][0]["code"] == "85354-9"]
    assert [c["code"]["coding"][0]["code"] for c in panel[0]["component"]] == ["8480-6", "8478-0"]
    assert all(e["resource"]["resourceType"] == "Observation" for e in out[1][1]["entry"])
    for _, b in out:
        Bundle.model_validate(b)


def test_values_the_service_refuses_are_dropped_and_the_rest_of_the_hour_is_kept(sqlite_url, models_root):
    rows = np.array(stay_rows(2, first_iculos=1, unit="MICU", seed=5), np.float32)[:, :40]
    rows[0, FEATURES.index("HR")] = 4e6     # garbage: no heart rate in any unit
    rows[0, FEATURES.index("MAP")] = 9e6    # inside the blood pressure panel
    with client_for(sqlite_url, models_root) as c:
        headers = {**hdr("ingest"), "Content-Type": "application/fhir+json"}
        (_, first), (_, second) = stay_bundles("d1", rows, START)
        r = c.post("/fhir", content=json.dumps(first), headers=headers)
        assert r.status_code == 422
        fixed, dropped = drop_refused_values(first, r.json())
        assert dropped == 2 and len(fixed["entry"]) == len(first["entry"]) - 1  # HR gone, the panel keeps SBP
        assert c.post("/fhir", content=json.dumps(fixed), headers=headers).status_code == 200
        assert c.post("/fhir", content=json.dumps(second), headers=headers).status_code == 200
        vitals = c.get("/patients/d1", headers=hdr("viewer")).json()["timeline"][0]["vitals"]
        assert "HR" not in vitals and "MAP" not in vitals and vitals["SBP"] == float(rows[0, FEATURES.index("SBP")])
    conflict = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "conflict",
                                                               "expression": ["Bundle.entry[3].resource.effectiveDateTime"]}]}
    assert drop_refused_values(first, conflict) is None
