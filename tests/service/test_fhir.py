"""FHIR R4 in and out (docs/fhir.md): Bundles and Observations in the shapes of the FHIR
specification's examples (vital signs, the blood pressure panel, a transaction Bundle with
urn:uuid fullUrls) are mapped to the model's inputs in its units, refused with OperationOutcomes
that name the entry and element, and read back as RiskAssessment and Flag resources."""
from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.riskassessment import RiskAssessment

from tests.service.conftest import T0, client_for, hdr, iso, reference_hourly

FHIR = "application/fhir+json"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LABORATORY = {"coding": [{"system": CATEGORY, "code": "laboratory"}]}


def at(hour: float) -> str:
    return iso(T0 + dt.timedelta(hours=hour))


def patient(pid: str, birth: str = "1957-03-01", gender: str = "male") -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth}


def encounter(pid: str, start_hour: float, unit: str | None = "Medical intensive care unit (MICU)",
              part_of: str | None = None, eid: str | None = None) -> dict:
    e = {"resourceType": "Encounter", "id": eid or f"{pid}-icu", "status": "in-progress",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ACUTE"},
         "subject": {"reference": f"Patient/{pid}"}, "period": {"start": at(start_hour)}}
    if unit:
        e["location"] = [{"location": {"display": unit}}]
    if part_of:
        e["partOf"] = {"reference": part_of}
    return e


def quantity(value, unit: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def observation(pid: str, hour: float, loinc: str, value, unit: str, **extra) -> dict:
    o = {"resourceType": "Observation", "status": "final",
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                   "code": "vital-signs"}]}],
         "code": {"coding": [{"system": LOINC, "code": loinc}]}, "subject": {"reference": f"Patient/{pid}"},
         "effectiveDateTime": at(hour), "valueQuantity": quantity(value, unit)}
    o.update(extra)
    return o


def bp_panel(pid: str, hour: float, sbp=None, dbp=None, mean=None, unit: str = "mm[Hg]") -> dict:
    comps = [{"code": {"coding": [{"system": LOINC, "code": code}]}, "valueQuantity": quantity(v, unit)}
             for code, v in (("8480-6", sbp), ("8462-4", dbp), ("8478-0", mean)) if v is not None]
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "85354-9"}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": at(hour), "component": comps}


def bundle(*resources, kind: str = "transaction") -> dict:
    entries = []
    for k, r in enumerate(resources):
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{k:012d}", "resource": r,
                        "request": {"method": "POST", "url": r["resourceType"]}})
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post(c, body, role: str = "ingest", content_type: str = FHIR, path: str = "/fhir"):
    return c.post(path, content=json.dumps(body), headers={**hdr(role), "Content-Type": content_type})


def issues(r) -> list[dict]:
    assert r.headers["content-type"].startswith(FHIR), r.text
    OperationOutcome.model_validate(r.json())
    return r.json()["issue"]


@pytest.fixture
def c(db_url, models_root):
    with client_for(db_url, models_root) as client:
        yield client


def test_a_bundle_admits_the_patient_and_scores_each_time_once_in_the_model_units(c):
    hospital = encounter("p1", -30.0, unit=None, eid="p1-hospital")
    icu = encounter("p1", -2.0, part_of="Encounter/p1-hospital")
    b = bundle(patient("p1", gender="female"), icu, hospital,
               observation("p1", 0, "8867-4", 112, "/min"),
               observation("p1", 0, "8310-5", 101.3, "[degF]"),
               bp_panel("p1", 0, sbp=92, dbp=51, mean=64.7),
               observation("p1", 0, "3150-0", 40, "%"),
               observation("p1", 1, "8867-4", 118, "/min"),
               observation("p1", 1, "2345-7", 7.2, "mmol/L"),
               observation("p1", 1, "2160-0", 176.8, "umol/L"),
               observation("p1", 1, "32693-4", 4.1, "mmol/L"),
               observation("p1", 1, "777-3", 95, "10*9/L"),
               observation("p1", 1, "718-7", 98, "g/L"),
               observation("p1", 1, "2019-8", 4.0, "kPa"))
    r = post(c, b)
    assert r.status_code == 200, r.text
    answer = r.json()
    Bundle.model_validate(answer)
    assert answer["type"] == "transaction-response" and len(answer["entry"]) == len(b["entry"])
    assert answer["entry"][0]["response"] == {"status": "201 Created", "location": "Patient/p1"}
    locations = [e["response"].get("location") for e in answer["entry"][3:]]
    assert locations == ["Observation/p1-20240301T080000Z"] * 4 + ["Observation/p1-20240301T090000Z"] * 7

    detail = c.get("/patients/p1", headers=hdr("viewer")).json()
    assert detail["admitted_by"] == "admission" and detail["unit"] == "MICU" and detail["gender"] == 0.0
    assert detail["icu_admit_time"] == at(-2.0) and detail["hosp_adm_time"] == -28.0
    assert detail["age"] == pytest.approx((T0 - dt.timedelta(hours=2) - dt.datetime(1957, 3, 1, tzinfo=dt.timezone.utc))
                                          .total_seconds() / (365.25 * 86400), abs=1e-6)
    # one hourly row per hour since the ICU admission (2 h before the first value): two empty, then
    # each effective time's Observations in their hour
    assert detail["n_observations"] == 4 and [e["vitals"] for e in detail["timeline"][:2]] == [{}, {}]
    first, second = (e["vitals"] for e in detail["timeline"][2:])
    assert first == pytest.approx({"HR": 112, "Temp": (101.3 - 32) * 5 / 9, "SBP": 92, "DBP": 51, "MAP": 64.7,
                                   "FiO2": 0.4})
    assert second == pytest.approx({"HR": 118, "Glucose": 7.2 * 18.0156, "Creatinine": 176.8 * 0.011312,
                                    "Lactate": 4.1, "Platelets": 95, "Hgb": 9.8, "PaCO2": 4.0 * 7.50062})
    demographics = {"Age": detail["age"], "Gender": 0.0, "Unit1": 1.0, "Unit2": 0.0, "HospAdmTime": -28.0}
    expected = reference_hourly([(0.0, first), (1.0, second)], demographics, icu_admit_hour=-2.0)
    assert [e["risk"] for e in detail["timeline"]] == pytest.approx([expected[h] for h in (1, 2, 3, 4)], abs=1e-6)


def test_the_unit_comes_from_location_service_type_or_class(c):
    sicu = encounter("s1", 0, unit=None)
    sicu["serviceType"] = {"text": "Surgical ICU"}
    other = encounter("o1", 0, unit="Cardiac ICU bed 4")
    by_location = encounter("l1", 0, unit=None)
    by_location["location"] = [{"location": {"reference": "urn:uuid:loc-1"}}]
    location = {"resourceType": "Location", "id": "loc-sicu", "name": "SICU east"}
    b = bundle(patient("s1"), sicu, patient("o1"), other, patient("n1"), encounter("n1", 0, unit=None),
               patient("l1"), by_location)
    b["entry"].append({"fullUrl": "urn:uuid:loc-1", "resource": location})
    assert post(c, b).status_code == 200
    units = {p["patient_id"]: p["unit"] for p in c.get("/patients", headers=hdr("viewer")).json()}
    assert units == {"s1": "SICU", "o1": "other", "n1": None, "l1": "SICU"}


def test_observations_without_an_admission_admit_by_first_observation_and_reference_by_fullurl(c):
    pat = patient("q1")
    b = bundle(pat, {**observation("q1", 0, "8867-4", 90, "/min"), "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}},
               observation("q1", 0, "59408-5", 97, "%", code={"coding": [{"system": LOINC, "code": "59408-5"},
                                                                         {"system": LOINC, "code": "2708-6"}]}),
               observation("q1", 0, "2708-6", 93, "%", category=[LABORATORY]))
    r = post(c, b, content_type="application/json")
    assert r.status_code == 200, r.text
    detail = c.get("/patients/q1", headers=hdr("viewer")).json()
    assert detail["admitted_by"] == "first_observation"
    # US Core pulse oximetry carries 59408-5 and 2708-6: O2Sat; 2708-6 in a laboratory report is the arterial SaO2
    assert detail["timeline"][0]["vitals"] == {"HR": 90.0, "O2Sat": 97.0, "SaO2": 93.0}


def test_a_unit_it_cannot_convert_is_refused_naming_entry_element_unit_and_accepted_ones(c):
    b = bundle(patient("p2"), encounter("p2", 0), observation("p2", 0, "8867-4", 80, "/min"),
               observation("p2", 0, "2345-7", 99, "g/L"))
    r = post(c, b)
    assert r.status_code == 422
    [issue] = issues(r)
    assert issue["expression"] == ["Bundle.entry[3].resource.valueQuantity.code"]
    assert "Bundle.entry[3] (Observation)" in issue["diagnostics"] and "'g/L'" in issue["diagnostics"]
    assert "accepted (UCUM): mg/dL, mmol/L" in issue["diagnostics"]
    assert c.get("/patients/p2", headers=hdr("viewer")).status_code == 404  # nothing stored, not even the admission


def test_every_problem_of_a_bundle_is_reported_with_its_element(c):
    b = bundle(patient("p3"), encounter("p3", 0),
               observation("p3", 0, "8867-4", 4e6, "/min", id="hr-1"),           # no heart rate in any unit
               observation("p3", 0, "1234-5", 1, "/min"),                         # a code the model does not read
               {**observation("p3", 0, "9279-1", 20, "/min"), "effectiveDateTime": "2024-03-01"},  # no time
               observation("p3", 0, "8310-5", 37, "Cel", status="cancelled"),                # no value to file
               bp_panel("p3", 0, sbp=120, dbp=80, unit="cm[H2O]"),
               observation("p3", 0, "8867-4", "fast", "/min"))                    # not a FHIR decimal
    r = post(c, b)
    assert r.status_code == 422
    found = {i["expression"][0]: i["diagnostics"] for i in issues(r)}
    assert set(found) == {"Bundle.entry[7].resource.valueQuantity.value"}  # structure first: the bundle is not read further
    b["entry"].pop()
    found = {i["expression"][0]: i["diagnostics"] for i in issues(post(c, b))}
    assert "4e+06 cannot be a value of HR in any unit" in found["Bundle.entry[2].resource.valueQuantity.value"]
    assert "(Observation/hr-1)" in found["Bundle.entry[2].resource.valueQuantity.value"]
    assert "1234-5" in found["Bundle.entry[3].resource.code.coding"]
    assert "time and zone" in found["Bundle.entry[4].resource.effectiveDateTime"]
    assert "cancelled" in found["Bundle.entry[5].resource.status"]
    assert "cm[H2O]" in found["Bundle.entry[6].resource.component[0].valueQuantity.code"]
    assert "Bundle.entry[6].resource.component[1].valueQuantity.code" in found
    assert c.get("/patients/p3", headers=hdr("viewer")).status_code == 404


def test_a_conflict_refuses_the_whole_bundle_and_stores_no_admission(c):
    assert post(c, bundle(patient("a"), encounter("a", 0), observation("a", 5, "8867-4", 80, "/min"))).status_code == 200
    # a new patient's admission and observation, and an observation of "a" before its ICU admission
    b = bundle(patient("b"), encounter("b", 0), observation("b", 1, "8867-4", 90, "/min"),
               observation("a", -2, "8867-4", 85, "/min"))
    r = post(c, b)
    assert r.status_code == 409
    [issue] = issues(r)
    assert issue["code"] == "conflict" and issue["expression"] == ["Bundle.entry[3].resource.effectiveDateTime"]
    assert "precedes patient a's ICU admission" in issue["diagnostics"]
    assert c.get("/patients/b", headers=hdr("viewer")).status_code == 404
    # an admission that differs from the stored one, beside another patient's new admission
    r = post(c, bundle(patient("c"), encounter("c", 0), patient("a"), encounter("a", 1)))
    assert r.status_code == 409 and issues(r)[0]["expression"] == ["Bundle.entry[3].resource.period.start"]
    assert c.get("/patients/c", headers=hdr("viewer")).status_code == 404
    # an observation before its own bundle's ICU admission
    r = post(c, bundle(patient("d"), encounter("d", 3), observation("d", 1, "8867-4", 90, "/min")))
    assert r.status_code == 422 and "precedes patient d's ICU admission" in issues(r)[0]["diagnostics"]
    assert c.get("/patients/d", headers=hdr("viewer")).status_code == 404
    # from the future: nothing stored either
    future = iso(dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=5))
    late = {**observation("e", 0, "8867-4", 90, "/min"), "effectiveDateTime": future}
    r = post(c, bundle(patient("e"), encounter("e", 0), late))
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Bundle.entry[2].resource.effectiveDateTime"]
    assert c.get("/patients/e", headers=hdr("viewer")).status_code == 404
    assert c.get("/patients/a", headers=hdr("viewer")).json()["n_observations"] == 6  # hours 1-6 of its stay


def test_two_bundles_admitting_one_new_patient_at_once_store_one_and_nothing_of_the_other(c):
    """Two feeds admit the same new patient at the same moment, on different units: one bundle is
    stored whole; the other is a 409 at its Encounter and stores nothing, its admission included
    (admission and observations are one transaction). The refused feed's hour stays storable: its
    observation posted alone is then scored (here: the winner's identical row, a duplicate)."""
    units = {"MICU": "Medical intensive care unit (MICU)", "SICU": "Surgical intensive care unit (SICU)"}
    for k in range(8):
        pid = f"race{k}"
        answers = {}
        barrier = threading.Barrier(2)

        def send(unit):
            barrier.wait()
            answers[unit] = post(c, bundle(patient(pid), encounter(pid, 0, unit=units[unit]),
                                           observation(pid, 1, "8867-4", 80, "/min")))

        threads = [threading.Thread(target=send, args=(u,)) for u in units]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in answers.values())
        assert codes == [200, 409], [r.text for r in answers.values()]
        winner = next(u for u, r in answers.items() if r.status_code == 200)
        loser = answers[next(u for u in units if u != winner)]
        [issue] = issues(loser)
        assert issue["expression"] == ["Bundle.entry[1].resource.period.start"] and "already exists" in issue["diagnostics"]
        assert "observations" not in issue["diagnostics"]  # a feed is not told what the stored patient holds
        stored = c.get(f"/patients/{pid}", headers=hdr("viewer")).json()
        assert (stored["unit"], stored["n_observations"], stored["admitted_by"]) == (winner, 2, "admission")
        again = post(c, bundle(observation(pid, 1, "8867-4", 80, "/min")))
        assert again.status_code == 200 and again.json()["entry"][0]["response"]["status"] == "200 OK"


def test_the_same_variable_twice_at_one_time_with_other_values_is_refused(c):
    # without an identifier or id, a value is known by its variable and time: another value there
    # is a correction that does not say so
    r = post(c, bundle(observation("f", 0, "8867-4", 80, "/min"), observation("f", 0, "8867-4", 81, "/min")))
    assert r.status_code == 409 and issues(r)[0]["expression"] == ["Bundle.entry[1].resource.effectiveDateTime"]
    assert "amended" in issues(r)[0]["diagnostics"]
    same = bundle(observation("f", 0, "8867-4", 80, "/min"), observation("f", 0, "8867-4", 80, "/min"))
    assert post(c, same).status_code == 200
    again = post(c, same)  # posted again: the stored result, nothing changes
    assert again.status_code == 200 and again.json()["entry"][0]["response"]["status"] == "200 OK"
    assert c.get("/patients/f", headers=hdr("viewer")).json()["n_observations"] == 1


def test_post_observation_answers_its_risk_assessment(c):
    o = observation("g", 0, "8867-4", 101, "/min")
    r = post(c, o, path="/fhir/Observation")
    assert r.status_code == 201 and r.headers["location"] == "Observation/g-20240301T080000Z"
    ra = RiskAssessment.model_validate(r.json())
    stored = c.get("/patients/g", headers=hdr("viewer")).json()["timeline"][0]
    assert float(ra.prediction[0].probabilityDecimal) == stored["risk"]
    assert post(c, o, path="/fhir/Observation").status_code == 200  # the same again: already stored
    r = post(c, {**o, "valueQuantity": quantity(101, "mg")}, path="/fhir/Observation")
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Observation.valueQuantity.code"]
    r = post(c, bundle(o), path="/fhir/Observation")
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Observation.resourceType"]


def test_bodies_that_are_not_fhir_json_and_keys_without_the_role(c):
    b = bundle(observation("h", 0, "8867-4", 80, "/min"))
    assert post(c, b, content_type="text/plain").status_code == 415
    r = c.post("/fhir", content=b"{not json", headers={**hdr("ingest"), "Content-Type": FHIR})
    assert r.status_code == 400 and issues(r)[0]["code"] == "structure"
    for junk in ([], {"resourceType": "Patient"}, {**b, "type": "collection"}, {**b, "entry": [{"resource": 1}]},
                 {**b, "entry": [{"resource": {"resourceType": "Medicine"}}]},  # no FHIR type (a known one is ignored)
                 {**b, "entry": [{"resource": {**b["entry"][0]["resource"], "contained": [{"resourceType": "Nope"}]}}]}):
        r = post(c, junk)
        assert r.status_code == 422, (junk, r.text)
        issues(r)
    assert post(c, b, role="viewer").status_code == 403
    assert c.post("/fhir", content=json.dumps(b), headers={"Content-Type": FHIR}).status_code == 401
    assert c.get("/patients/h", headers=hdr("viewer")).status_code == 404


def test_risk_assessments_and_flags_read_back_as_valid_fhir(db_url, models_root):
    with client_for(db_url, models_root, model="always") as c:  # threshold 0: every observation alarms
        b = bundle(patient("k"), encounter("k", 0), observation("k", 0, "8867-4", 90, "/min"),
                   observation("k", 1, "8867-4", 95, "/min"), observation("other", 0, "8867-4", 70, "/min"))
        answer = post(c, b).json()
        r = c.get("/fhir/RiskAssessment", params={"subject": "Patient/k"}, headers=hdr("viewer"))
        assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR)
        found = Bundle.model_validate(r.json())
        assert found.type == "searchset" and found.total == 2
        timeline = c.get("/patients/k", headers=hdr("viewer")).json()["timeline"]
        for entry, t, posted in zip(found.entry, timeline, answer["entry"][2:4]):
            ra = RiskAssessment.model_validate(entry.resource.model_dump())
            assert float(ra.prediction[0].probabilityDecimal) == t["risk"]
            assert ra.subject.reference == "Patient/k" and ra.occurrenceDateTime == dt.datetime.fromisoformat(t["timestamp"])
            assert ra.method.text == "always version 1"
            assert [x.reference for x in ra.basis] == [posted["response"]["location"]]
        flags = c.get("/fhir/Flag", params={"subject": "Patient/k", "status": "active"}, headers=hdr("viewer")).json()
        [flag] = [Flag.model_validate(e["resource"]) for e in flags["entry"]]  # one active alarm per patient
        assert flag.status == "active" and flag.subject.reference == "Patient/k"
        alarm_id = int(flag.id)
        assert c.post(f"/alarms/{alarm_id}/resolve", json={"by": "dr x"}, headers=hdr("clinician")).status_code == 200
        active = c.get("/fhir/Flag", params={"subject": "Patient/k", "status": "active"}, headers=hdr("viewer")).json()
        assert active["total"] == 0
        inactive = c.get("/fhir/Flag", params={"status": "inactive"}, headers=hdr("viewer")).json()
        assert [e["resource"]["id"] for e in inactive["entry"]] == [str(alarm_id)]
        assert inactive["entry"][0]["resource"]["period"]["end"]
        nobody = c.get("/fhir/RiskAssessment", params={"subject": "Patient/nobody"}, headers=hdr("viewer")).json()
        assert nobody["total"] == 0 and nobody["entry"] == []
        assert c.get("/fhir/RiskAssessment", params={"subject": "k"}, headers=hdr("viewer")).status_code == 400
        assert c.get("/fhir/RiskAssessment", params={"subject": "Patient/k"}, headers=hdr("ingest")).status_code == 403


_HR = observation("j", 0, "8867-4", 80, "/min")


@pytest.mark.parametrize("body, expression", [
    (json.dumps(bundle(_HR)).replace('"value": 80', '"value": NaN'), "Bundle.entry[0].resource.valueQuantity.value"),
    (json.dumps(bundle({**_HR, "effectiveDateTime": "0001-01-01T00:00:00+14:00"})),
     "Bundle.entry[0].resource.effectiveDateTime"),  # converting it to UTC overflows
    (json.dumps(bundle({**_HR, "effectiveDateTime": "2200-01-01T00:00:00Z"})), "Bundle.entry[0].resource.effectiveDateTime"),
    (json.dumps(bundle(patient("j"), encounter("j", 0, part_of="Encounter/j-icu"))), "Bundle.entry[1].resource.partOf"),
    (json.dumps(bundle(patient("j", birth="2030-01-01"), encounter("j", 0))), "Bundle.entry[0].resource.birthDate"),
    (json.dumps(bundle({**_HR, "valueQuantity": {"value": 80, "system": "http://other.org", "code": "x"}})),
     "Bundle.entry[0].resource.valueQuantity.system"),
    (json.dumps(bundle({**_HR, "contained": [{"resourceType": "Nope"}]})), "Bundle.entry[0].resource"),
    (json.dumps(bundle({**_HR, "valueQuantity": {**quantity(80, "/min"), "comparator": "<"}})),
     "Bundle.entry[0].resource.valueQuantity.comparator"),
    ("[" * 100000, "Bundle"),
])
def test_junk_is_refused_at_its_element_never_a_500(c, body, expression):
    r = c.post("/fhir", content=body, headers={**hdr("ingest"), "Content-Type": FHIR})
    assert r.status_code in (400, 422), r.text
    assert expression in [i["expression"][0] for i in issues(r)]
    assert c.get("/patients/j", headers=hdr("viewer")).status_code == 404
