"""A string that is not text (a lone UTF-16 surrogate, sent as a \\ud800 escape) is a 4xx naming where
it is, in every string field and key of the JSON API and of FHIR resources; nothing is stored. An
answer that echoed one could not be encoded: FHIR ids were 500s."""
from __future__ import annotations

import json

import pytest

from tests.service.conftest import client_for, hdr, obs

LONE = "\\ud800"  # as it stands in the JSON text
T = "2024-03-01T08:00:00Z"
_HR = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}


def _observation(rid="hr-1", subject="Patient/s1", **extra) -> dict:
    return {"resourceType": "Observation", "id": rid, "status": "final", "code": _HR, "subject": {"reference": subject},
            "effectiveDateTime": T, "valueQuantity": {"value": 80, "unit": "/min"}, **extra}


def _bundle(*resources, full_url="urn:uuid:0") -> dict:
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"fullUrl": full_url if i == 0 else f"urn:uuid:{i}", "resource": r,
                       "request": {"method": "POST", "url": r["resourceType"]}} for i, r in enumerate(resources)]}


def _lone(body: dict, mark: str = "@@") -> bytes:
    """The body as JSON with every `mark` replaced by a lone-surrogate escape."""
    return json.dumps(body).replace(mark, LONE).encode()


JSON_API = {
    "predict patient_id": ("/predict", obs("@@", 0, HR=80)),
    "predict vitals key": ("/predict", {"patient_id": "s1", "timestamp": T, "vitals": {"@@": 80}}),
    "predict unknown key": ("/predict", {**obs("s1", 0, HR=80), "@@": 1}),
    "predict timestamp": ("/predict", {"patient_id": "s1", "timestamp": "2024-03-01T08:00:00@@", "vitals": {}}),
    "batch patient_id": ("/predict/batch", {"observations": [obs("s1", 0, HR=80), obs("a@@", 1, HR=80)]}),
    "admission patient_id": ("/patients", {"patient_id": "@@", "icu_admit_time": T}),
    "admission bed": ("/patients", {"patient_id": "s2", "bed": "B@@", "icu_admit_time": T}),
    "admission unit": ("/patients", {"patient_id": "s2", "unit": "@@", "icu_admit_time": T}),
    "outcome recorded_by": ("/patients/s1/outcome", {"outcome": "no_sepsis", "recorded_by": "@@"}),
    "outcome value": ("/patients/s1/outcome", {"outcome": "@@"}),
    "ack by": ("/alarms/1/ack", {"by": "@@", "reason": "confirmed"}),
    "ack note": ("/alarms/1/ack", {"by": "x", "reason": "confirmed", "note": "n@@"}),
    "snooze by": ("/alarms/1/snooze", {"by": "@@", "minutes": 5}),
    "resolve note": ("/alarms/1/resolve", {"by": "x", "note": "@@"}),
    "operating point id": ("/units/MICU/operating-point", {"point_id": "@@", "by": "x"}),
    "model switch name": ("/models/active", {"name": "@@", "version": "1", "by": "x"}),
    "model switch note": ("/models/active", {"name": "sepsis-cfc", "version": "2", "by": "x", "note": "@@"}),
}

FHIR = {
    "Observation id": ("/fhir/Observation", _observation(rid="@@"), "Observation.id"),
    "Observation resourceType": ("/fhir/Observation", {"resourceType": "@@"}, "body.resourceType"),
    "Observation subject reference": ("/fhir/Observation", _observation(subject="Patient/@@"),
                                      "Observation.subject.reference"),
    "Observation unit": ("/fhir/Observation", _observation(valueQuantity={"value": 80, "unit": "@@"}),
                         "Observation.valueQuantity.unit"),
    "Observation extension key": ("/fhir/Observation", _observation(**{"@@": 1}), "Observation (a key)"),
    "Bundle id": ("/fhir", {**_bundle(_observation()), "id": "@@"}, "Bundle.id"),
    "Bundle fullUrl": ("/fhir", _bundle(_observation(), full_url="urn:uuid:@@"), "Bundle.entry[0].fullUrl"),
    "Patient id": ("/fhir", _bundle({"resourceType": "Patient", "id": "@@"}, _observation()),
                   "Bundle.entry[0].resource.id"),
    "Patient name": ("/fhir", _bundle({"resourceType": "Patient", "id": "s1", "name": [{"text": "@@"}]}),
                     "Bundle.entry[0].resource.name[0].text"),
    "Encounter reference": ("/fhir", _bundle({"resourceType": "Encounter", "id": "e1", "status": "in-progress",
                                              "class": {"code": "ACUTE"}, "subject": {"reference": "Patient/@@"}}),
                            "Bundle.entry[0].resource.subject.reference"),
    "Observation code": ("/fhir", _bundle(_observation(code={"coding": [{"system": "http://loinc.org",
                                                                         "code": "8867@@"}]})),
                         "Bundle.entry[0].resource.code.coding[0].code"),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory, models_root):
    with client_for(f"sqlite:///{tmp_path_factory.mktemp('strings') / 's.db'}", models_root) as c:
        assert c.post("/predict", json=obs("s1", 0, HR=80), headers=hdr("ingest")).status_code == 200
        yield c


def _stored(c) -> int:
    return sum(p["n_observations"] for p in c.get("/patients", headers=hdr()).json())


@pytest.mark.parametrize("name", JSON_API)
def test_a_lone_surrogate_in_a_json_field_is_a_422_naming_it(client, name):
    path, body = JSON_API[name]
    before = _stored(client)
    method = client.put if path.startswith("/units") else client.post
    r = method(path, content=_lone(body), headers={**hdr(), "content-type": "application/json"})
    assert r.status_code == 422, (name, r.status_code, r.text)
    assert r.json()["errors"] and r.json()["detail"].startswith("invalid request")
    assert _stored(client) == before


@pytest.mark.parametrize("name", FHIR)
def test_a_lone_surrogate_in_a_fhir_resource_is_a_400_naming_it(client, name):
    path, body, where = FHIR[name]
    before = _stored(client)
    r = client.post(path, content=_lone(body), headers={**hdr(), "content-type": "application/fhir+json"})
    assert r.status_code == 400, (name, r.status_code, r.text)
    issue = r.json()["issue"][0]
    assert "lone UTF-16 surrogate" in issue["diagnostics"] and issue["expression"] == [where]
    assert _stored(client) == before


def test_a_surrogate_pair_is_a_character(client):
    """An escaped pair (an emoji) is text: the bed is stored as sent."""
    body = json.dumps({"patient_id": "s3", "bed": "B@@", "icu_admit_time": T}).replace("@@", "\\ud83d\\ude00")
    r = client.post("/patients", content=body.encode(), headers={**hdr(), "content-type": "application/json"})
    assert r.status_code == 201 and r.json()["bed"] == "B\U0001F600"
    fhir = _lone(_bundle({"resourceType": "Patient", "id": "s4", "name": [{"text": "@@"}]})).replace(
        LONE.encode(), b"\\ud83d\\ude00")
    assert client.post("/fhir", content=fhir, headers={**hdr(), "content-type": "application/fhir+json"}).status_code == 200


def test_surrogate_bytes_are_refused_like_the_escape(client):
    """json.loads reads a surrogate's UTF-8-like bytes (ED A0 80) as the same lone surrogate."""
    raw = _lone(_observation(rid="@@")).replace(LONE.encode(), b"\xed\xa0\x80")
    r = client.post("/fhir/Observation", content=raw, headers={**hdr(), "content-type": "application/fhir+json"})
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["Observation.id"], r.text
    raw = _lone(obs("@@", 0, HR=80)).replace(LONE.encode(), b"\xed\xa0\x80")
    r = client.post("/predict", content=raw, headers={**hdr(), "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "patient_id", r.text
