"""FHIR as hospital systems send it (docs/fhir.md): US Core pulse oximetry with its inhaled oxygen
components, SpO2 coded 2708-6 in the vital-signs category, effectivePeriod, resources the service
does not read sent along, and fullUrls given twice. Every answer is validated with fhir.resources."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.riskassessment import RiskAssessment

from tests.service.conftest import client_for, hdr
from tests.service.test_fhir import (CATEGORY, LABORATORY, LOINC, at, bundle, encounter, issues, observation, patient,
                                     post, quantity)

VITAL_SIGNS = {"coding": [{"system": CATEGORY, "code": "vital-signs"}]}


def pulse_oximetry(pid: str, hour: float, spo2, *components) -> dict:
    """US Core pulse oximetry: 59408-5 and 2708-6, the oxygen breathed as components."""
    o = observation(pid, hour, "59408-5", spo2, "%")
    o["code"] = {"coding": [{"system": LOINC, "code": "59408-5"}, {"system": LOINC, "code": "2708-6"}]}
    o["component"] = [{"code": {"coding": [{"system": LOINC, "code": code}]}, "valueQuantity": quantity(value, unit)}
                      for code, value, unit in components]
    return o


@pytest.fixture
def c(db_url, models_root):
    with client_for(db_url, models_root) as client:
        yield client


def when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def vitals(c, pid: str) -> list[dict]:
    return [e["vitals"] for e in c.get(f"/patients/{pid}", headers=hdr("viewer")).json()["timeline"]]


def test_pulse_oximetry_gives_fio2_from_the_inhaled_oxygen_concentration_not_the_flow(c):
    o = pulse_oximetry("ox1", 0, 94, ("3151-8", 6, "L/min"), ("3150-0", 40, "%"))
    r = post(c, o, path="/fhir/Observation")
    assert r.status_code == 201, r.text
    RiskAssessment.model_validate(r.json())
    assert vitals(c, "ox1") == [{"O2Sat": 94.0, "FiO2": pytest.approx(0.4)}]
    # a fraction is taken as sent; the flow alone is no FiO2 and is listed as not read
    r = post(c, bundle(pulse_oximetry("ox1", 1, 95, ("3150-0", 0.35, "1")),
                       pulse_oximetry("ox1", 2, 96, ("3151-8", 2, "L/min"))))
    assert r.status_code == 200, r.text
    answer = Bundle.model_validate(r.json())
    assert vitals(c, "ox1")[1:] == [{"O2Sat": 95.0, "FiO2": 0.35}, {"O2Sat": 96.0}]
    scored, note = answer.entry[1].response.outcome.issue
    assert scored.diagnostics.startswith("scored by") and note.severity == "information"
    assert note.expression == ["Bundle.entry[1].resource.component[0]"]
    assert "3151-8" in note.diagnostics and "not read" in note.diagnostics
    # FiO2 in a unit it cannot be is refused at the component
    r = post(c, bundle(pulse_oximetry("ox1", 3, 96, ("3150-0", 6, "L/min"))))
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Bundle.entry[0].resource.component[0].valueQuantity.code"]
    # outside the plausible range (a fraction of 1.5) it is filed and scored as charted, with a warning on the element
    r = post(c, bundle(pulse_oximetry("ox1", 3, 96, ("3150-0", 150, "%"))))
    assert r.status_code == 200, r.text
    answer = Bundle.model_validate(r.json())
    [warning] = [i for i in answer.entry[0].response.outcome.issue if i.severity == "warning"]
    assert warning.expression == ["Bundle.entry[0].resource.component[0].valueQuantity.value"]
    assert "FiO2: 1.5 is outside the plausible range 0 to 1" in warning.diagnostics
    assert vitals(c, "ox1")[3] == {"O2Sat": 96.0, "FiO2": 1.5}
    # one Observation alone: its RiskAssessment carries the warning as a note
    r = post(c, pulse_oximetry("ox1", 4, 97, ("3150-0", 2, "1")), path="/fhir/Observation")
    assert r.status_code == 201, r.text
    ra = RiskAssessment.model_validate(r.json())
    assert any("warning: FiO2 2 is outside the plausible range" in n.text for n in ra.note)


def test_2708_6_is_spo2_in_the_vital_signs_category_and_the_blood_gas_saturation_otherwise(c):
    sp = observation("sat", 0, "2708-6", 93, "%", category=[VITAL_SIGNS])
    lab = observation("sat", 1, "2708-6", 91, "%", category=[LABORATORY])
    bare = observation("sat", 2, "2708-6", 90, "%")
    bare.pop("category")
    pulse = observation("sat", 3, "59408-5", 92, "%", category=[LABORATORY])  # 59408-5: always the oximeter
    assert post(c, bundle(sp, lab, bare, pulse)).status_code == 200
    assert vitals(c, "sat") == [{"O2Sat": 93.0}, {"SaO2": 91.0}, {"SaO2": 90.0}, {"O2Sat": 92.0}]


def test_resources_it_does_not_read_are_ignored_and_listed_as_information(c):
    practitioner = {"resourceType": "Practitioner", "id": "dr-1", "name": [{"family": "House"}]}
    device = {"resourceType": "Device", "id": "monitor-7"}
    specimen = {"resourceType": "Specimen", "id": "blood-1", "collection": {"collectedDateTime": at(0)}}
    b = bundle(patient("ig"), practitioner, encounter("ig", 0), device,
               observation("ig", 0, "8867-4", 88, "/min", performer=[{"reference": "Practitioner/dr-1"}]), specimen)
    r = post(c, b)
    assert r.status_code == 200, r.text
    answer = Bundle.model_validate(r.json())
    assert len(answer.entry) == 6
    for k, name in ((1, "Practitioner/dr-1"), (3, "Device/monitor-7"), (5, "Specimen/blood-1")):
        [note] = answer.entry[k].response.outcome.issue
        assert note.severity == "information" and note.expression == [f"Bundle.entry[{k}].resource"]
        assert note.diagnostics.startswith(f"Bundle.entry[{k}] ({name}): a {name.split('/')[0]} is not read")
    assert vitals(c, "ig") == [{"HR": 88.0}]
    # a resourceType that is no FHIR type is still refused, as is a Patient posted as an Observation
    r = post(c, bundle({"resourceType": "Practitioner2"}))
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Bundle.entry[0].resource.resourceType"]
    r = post(c, practitioner, path="/fhir/Observation")
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Observation.resourceType"]


def test_effective_period_is_read_at_its_start(c):
    drawn = observation("per", 0, "2524-7", 2.5, "mmol/L", category=[LABORATORY])
    drawn.pop("effectiveDateTime")
    drawn["effectivePeriod"] = {"start": at(0), "end": at(0.25)}
    r = post(c, bundle(drawn, observation("per", 0, "8867-4", 100, "/min")))
    assert r.status_code == 200, r.text
    stored = c.get("/patients/per", headers=hdr("viewer")).json()["timeline"]
    assert [(e["timestamp"], e["vitals"]) for e in stored] == [(at(0), {"Lactate": 2.5, "HR": 100.0})]
    open_ended = {**drawn, "effectivePeriod": {"end": at(1)}}
    r = post(c, bundle(open_ended))
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Bundle.entry[0].resource.effectivePeriod.start"]
    assert "effectivePeriod.start" in issues(r)[0]["diagnostics"]


def test_a_full_url_given_twice_is_refused_naming_both_entries(c):
    b = bundle(patient("u1"), patient("u2"), observation("u1", 0, "8867-4", 80, "/min"))
    b["entry"][1]["fullUrl"] = b["entry"][0]["fullUrl"]
    b["entry"][2]["resource"]["subject"] = {"reference": b["entry"][0]["fullUrl"]}
    r = post(c, b)
    assert r.status_code == 400
    [issue] = issues(r)
    assert issue["expression"] == ["Bundle.entry[1].fullUrl"] and issue["code"] == "duplicate"
    assert "Bundle.entry[0] and Bundle.entry[1]" in issue["diagnostics"]
    for pid in ("u1", "u2"):
        assert c.get(f"/patients/{pid}", headers=hdr("viewer")).status_code == 404


@pytest.mark.parametrize("resource, where", [
    ({"resourceType": "Practitioner", "id": "@@"}, "Bundle.entry[0].resource.id"),  # ignored, still not text
    ({"resourceType": "Encounter", "id": "e@@", "status": "finished", "class": {"code": "ACUTE"},
      "subject": {"reference": "Patient/x"}}, "Bundle.entry[0].resource.id"),
    ({"resourceType": "Location", "id": "@@"}, "Bundle.entry[0].resource.id"),
])
def test_a_lone_surrogate_in_any_id_is_a_400(c, resource, where):
    body = json.dumps(bundle(resource)).replace("@@", "\\udc00")
    r = c.post("/fhir", content=body.encode(), headers={**hdr("ingest"), "Content-Type": "application/fhir+json"})
    assert r.status_code == 400 and issues(r)[0]["expression"] == [where], r.text


def finished(pid: str, start_hour: float, end_hour: float | None, **extra) -> dict:
    e = encounter(pid, start_hour, **extra)
    e["status"] = "finished"
    if end_hour is not None:
        e["period"]["end"] = at(end_hour)
    return e


def test_a_finished_encounter_discharges_the_patient_at_period_end_once(db_url, models_root):
    with client_for(db_url, models_root, model="always") as c:  # every observation alarms
        assert post(c, bundle(patient("d1"), encounter("d1", 0), observation("d1", 1, "8867-4", 120, "/min"))).status_code == 200
        assert c.get("/patients/d1", headers=hdr("viewer")).json()["active_alarm_id"] is not None
        b = bundle(patient("d1"), finished("d1", 0, 5), observation("d1", 2, "8867-4", 110, "/min"))
        r = post(c, b)
        assert r.status_code == 200, r.text
        Bundle.model_validate(r.json())
        detail = c.get("/patients/d1", headers=hdr("viewer")).json()
        assert (detail["status"], detail["outcome"], detail["active_alarm_id"]) == ("discharged", None, None)
        assert [e["timestamp"] for e in detail["timeline"]] == [at(0), at(1), at(2)]  # hour 1 stepped empty
        [row] = [a for a in detail["audit"] if a["action"] == "discharge"]
        assert when(row["details"]["discharged_at"]) == when(at(5)) and row["details"]["outcome"] is None
        # the same bundle again changes nothing; another end, or data after it, is a 409 naming the element
        assert post(c, b).status_code == 200
        assert [a["action"] for a in c.get("/patients/d1", headers=hdr("viewer")).json()["audit"]].count("discharge") == 1
        r = post(c, bundle(patient("d1"), finished("d1", 0, 6)))
        assert r.status_code == 409 and issues(r)[0]["expression"] == ["Bundle.entry[1].resource.period.end"]
        assert "already discharged" in issues(r)[0]["diagnostics"]
        r = post(c, bundle(observation("d1", 6, "8867-4", 100, "/min")))
        assert r.status_code == 409
        # an outcome recorded later keeps the discharge; one naming another discharge time is a 409
        assert c.post("/patients/d1/outcome", json={"outcome": "no_sepsis", "discharged_at": at(7)},
                      headers=hdr("clinician")).status_code == 409
        r = c.post("/patients/d1/outcome", json={"outcome": "no_sepsis"}, headers=hdr("clinician"))
        assert r.status_code == 200 and r.json()["status"] == "discharged"
        assert c.get("/patients/d1", headers=hdr("viewer")).json()["outcome"] == "no_sepsis"


def test_a_finished_encounter_is_refused_without_its_end_or_with_data_after_it(c):
    r = post(c, bundle(patient("d2"), finished("d2", 0, None)))
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Bundle.entry[1].resource.period.end"]
    r = post(c, bundle(patient("d2"), finished("d2", 0, 2), observation("d2", 3, "8867-4", 90, "/min")))
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Bundle.entry[2].resource.effectiveDateTime"]
    assert "after patient d2's discharge" in issues(r)[0]["diagnostics"]
    r = post(c, bundle(patient("d2"), {**encounter("d2", 0), "period": {"start": at(0), "end": at(-1)}}))
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Bundle.entry[1].resource.period.end"]
    assert c.get("/patients/d2", headers=hdr("viewer")).status_code == 404
    # a new patient admitted and discharged in one bundle (period.end alone says the stay ended)
    r = post(c, bundle(patient("d3"), {**encounter("d3", 0), "period": {"start": at(0), "end": at(4)}},
                       observation("d3", 1, "8867-4", 90, "/min")))
    assert r.status_code == 200, r.text
    assert c.get("/patients/d3", headers=hdr("viewer")).json()["status"] == "discharged"


def moved(pid: str, *places) -> dict:
    """The ICU Encounter (admitted at hour 0) with its location history: (display, start hour or None)."""
    e = encounter(pid, 0, unit=None)
    e["location"] = [{"location": {"display": name}, **({"period": {"start": at(h)}} if h is not None else {})}
                     for name, h in places]
    return e


def test_a_later_location_is_a_transfer_with_its_time_and_the_model_keeps_the_admission_unit(c):
    first = bundle(patient("t1"), moved("t1", ("MICU bed 3", 0)), observation("t1", 1, "8867-4", 90, "/min"))
    assert post(c, first).status_code == 200
    later = bundle(patient("t1"), moved("t1", ("MICU bed 3", 0), ("SICU bed 12", 3)),
                   observation("t1", 4, "8867-4", 95, "/min"))
    r = post(c, later)
    assert r.status_code == 200, r.text
    Bundle.model_validate(r.json())
    detail = c.get("/patients/t1", headers=hdr("viewer")).json()
    assert (detail["unit"], detail["bed"]) == ("SICU", "SICU bed 12")
    assert (detail["unit1"], detail["unit2"]) == (1.0, 0.0)  # the model's demographics: the admission's MICU
    [row] = [a for a in detail["audit"] if a["action"] == "transfer"]
    assert when(row["details"].pop("transferred_at")) == when(at(3))
    assert row["details"] == {"from_unit": "MICU", "from_bed": None, "to_unit": "SICU",
                              "to_bed": "SICU bed 12"}
    listed = {p["patient_id"]: (p["unit"], p["bed"]) for p in c.get("/patients", headers=hdr("viewer")).json()}
    assert listed["t1"] == ("SICU", "SICU bed 12")
    # sent again, or with only the current location, nothing changes
    assert post(c, later).status_code == 200
    assert post(c, bundle(patient("t1"), moved("t1", ("SICU bed 12", 3)))).status_code == 200
    audit = c.get("/patients/t1", headers=hdr("viewer")).json()["audit"]
    assert [a["action"] for a in audit].count("transfer") == 1
    # a location without a time that differs from the admission's is still a conflicting admission
    r = post(c, bundle(patient("t1"), moved("t1", ("SICU bed 12", None))))
    assert r.status_code == 409 and "a transfer is a location with its period.start" in issues(r)[0]["diagnostics"]
    # a transfer after the discharge belongs to another stay
    discharged = finished("t1", 0, 5, unit=None)
    discharged["location"] = moved("t1", ("MICU bed 3", 0))["location"]
    assert post(c, bundle(patient("t1"), discharged)).status_code == 200
    r = post(c, bundle(patient("t1"), moved("t1", ("MICU bed 3", 0), ("MICU bed 1", 6))))
    assert r.status_code == 409 and issues(r)[0]["expression"] == ["Bundle.entry[1].resource.location[1].period.start"]
