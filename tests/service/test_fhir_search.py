"""FHIR out as a FHIR client reads it: searches by patient, subject, date and status with paging,
strict about parameters (an unknown one is a 400 OperationOutcome, never ignored), reads by id of
Patient, Observation, RiskAssessment and Flag (404 OperationOutcome when absent), and the
CapabilityStatement. Every resource and Bundle answered is validated with fhir.resources (R4B)."""
from __future__ import annotations

import datetime as dt
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.riskassessment import RiskAssessment

from service.fhir import search
from tests.service.conftest import T0, client_for, hdr, iso, obs

FHIR = "application/fhir+json"
MODELS = {"RiskAssessment": RiskAssessment, "Flag": Flag, "Observation": Observation, "Patient": Patient}


def at(hour: float) -> str:
    return iso(T0 + dt.timedelta(hours=hour))


def get(c, path: str, role: str | None = "viewer", **params):
    return c.get(path, params=params, headers=hdr(role) if role else {})


def found(r) -> dict:
    """A searchset, each entry's resource validated by its own model."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(FHIR)
    Bundle.model_validate(r.json())
    body = r.json()
    assert body["type"] == "searchset"
    for e in body["entry"]:
        MODELS[e["resource"]["resourceType"]].model_validate(e["resource"])
    return body


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle["entry"]]


def refused(r, status: int = 400) -> list[dict]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(FHIR)
    OperationOutcome.model_validate(r.json())
    return r.json()["issue"]


def predict(c, pid: str, hour: float, **vitals) -> dict:
    r = c.post("/predict", json=obs(pid, hour, **vitals), headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    return r.json()


def resolve(c, alarm_id: int) -> None:
    assert c.post(f"/alarms/{alarm_id}/resolve", json={"by": "dr x"}, headers=hdr("clinician")).status_code == 200


@pytest.fixture
def ward(db_url, models_root):
    """Model `always` (threshold 0: every observation alarms while no alarm is active): patient a
    at hours 0-4 (alarm at 0 resolved, then alarm at 1 active), b at 0 and 2 (alarm at 0 active),
    c with a patient id FHIR cannot carry (`c_1`)."""
    with client_for(db_url, models_root, model="always") as c:
        for h in range(5):
            predict(c, "a", h, HR=80 + h, Temp=37.0)
            if h == 0:
                [alarm] = c.get("/alarms", params={"patient_id": "a"}, headers=hdr("viewer")).json()
                resolve(c, alarm["id"])
        predict(c, "b", 0, HR=120, Lactate=3.1)
        predict(c, "b", 2, HR=125)
        predict(c, "c_1", 1, HR=90, MAP=70.5)
        yield c


def test_flag_search_by_patient_returns_only_that_patients_flags(ward):
    every = found(get(ward, "/fhir/Flag"))
    assert every["total"] == 4
    for value in ("Patient/b", "b"):
        b = found(get(ward, "/fhir/Flag", patient=value))
        assert b["total"] == 1 and {e["resource"]["subject"]["reference"] for e in b["entry"]} == {"Patient/b"}
    a = found(get(ward, "/fhir/Flag", subject="Patient/a"))
    assert a["total"] == 2 and {e["resource"]["subject"]["reference"] for e in a["entry"]} == {"Patient/a"}
    assert found(get(ward, "/fhir/Flag", patient="a,b"))["total"] == 3
    assert found(get(ward, "/fhir/Flag", patient="Patient/nobody"))["total"] == 0
    assert found(get(ward, "/fhir/Flag", patient="a", subject="Patient/b"))["total"] == 0  # both must hold
    active = found(get(ward, "/fhir/Flag", patient="a", status="active"))
    inactive = found(get(ward, "/fhir/Flag", patient="a", status="http://hl7.org/fhir/flag-status|inactive"))
    assert [e["resource"]["status"] for e in active["entry"]] == ["active"]
    assert [e["resource"]["status"] for e in inactive["entry"]] == ["inactive"]
    assert found(get(ward, "/fhir/Flag", status="entered-in-error"))["total"] == 0


def test_risk_assessment_search_by_patient_and_subject(ward):
    a = found(get(ward, "/fhir/RiskAssessment", patient="a"))
    assert a["total"] == 5
    assert [e["resource"]["occurrenceDateTime"] for e in a["entry"]] == [at(h) for h in range(5)]
    assert ids(found(get(ward, "/fhir/RiskAssessment", subject="Patient/a"))) == ids(a)
    # every patient's hourly rows, in time order: b's hour between its two values was stepped empty
    assert found(get(ward, "/fhir/RiskAssessment"))["total"] == 9


@pytest.mark.parametrize("params, names", [
    ({"patinet": "Patient/a"}, ["patinet"]),                     # a typo is not ignored
    ({"_sort": "-date"}, ["_sort"]),
    ({"patient:missing": "true"}, ["patient:missing"]),          # modifiers are not supported
    ({"status": "active"}, ["status"]),                          # a Flag parameter, not a RiskAssessment one
    ({"_format": "xml"}, ["_format"]),
    ({"_count": "ten"}, ["_count"]),
    ({"_count": "10001"}, ["_count"]),
    ({"_offset": "-1"}, ["_offset"]),
    ({"date": "2024-13-01"}, ["date"]),
    ({"date": "ge2024-03-01T08:00:00"}, ["date"]),               # a time without its zone
    ({"date": "ge2024-03-01T08:00:00 01:00"}, ["date"]),         # a '+' sent unencoded
    ({"date": "ap2024-03-01"}, ["date"]),
    ({"subject": "a"}, ["subject"]),                             # subject names its type
    ({"patient": "Group/g1"}, ["patient"]),
    ({"patient": ""}, ["patient"]),
    ({"patinet": "a", "date": "yesterday"}, ["patinet", "date"]),  # every problem at once
])
def test_unknown_or_malformed_search_parameters_are_400_naming_each(ward, params, names):
    issues = refused(get(ward, "/fhir/RiskAssessment", **params))
    assert [i["expression"][0] for i in issues] == names
    assert all(i["severity"] == "error" for i in issues)


def test_unknown_parameters_on_flag_and_repeated_paging_are_refused(ward):
    [issue] = refused(get(ward, "/fhir/Flag", patient="Patient/a", _include="Flag:subject"))
    assert issue["code"] == "not-supported" and "_include" in issue["diagnostics"]
    r = ward.get("/fhir/Flag?_count=1&_count=2", headers=hdr("viewer"))
    assert [i["expression"][0] for i in refused(r)] == ["_count"]
    assert found(get(ward, "/fhir/Flag", _format="application/fhir+json"))["total"] == 4


def test_date_search_with_prefixes_on_risk_assessments(ward):
    def hours(**params) -> list[str]:
        return [e["resource"]["occurrenceDateTime"] for e in found(get(ward, "/fhir/RiskAssessment", patient="a",
                                                                       **params))["entry"]]
    assert hours(date="2024-03-01") == [at(h) for h in range(5)]            # the whole UTC day
    assert hours(date="2024-03") == [at(h) for h in range(5)]
    assert hours(date="2024-02-29") == []
    assert hours(date="eq2024-03-01T09:00:00Z") == [at(1)]                  # that second
    assert hours(date="2024-03-01T09:00Z") == [at(1)]                       # that minute
    assert hours(date="2024-03-01T10:00:00%2B01:00".replace("%2B", "+")) == [at(1)]  # the same instant in +01:00
    assert hours(date="gt2024-03-01T10:00:00Z") == [at(3), at(4)]
    assert hours(date="ge2024-03-01T10:00:00Z") == [at(2), at(3), at(4)]
    assert hours(date="lt2024-03-01T10:00:00Z") == [at(0), at(1)]
    assert hours(date="le2024-03-01T10:00:00Z") == [at(0), at(1), at(2)]
    assert hours(date="ne2024-03-01T10:00:00Z") == [at(0), at(1), at(3), at(4)]
    assert hours(date="sa2024-03-01T10:00:00Z") == [at(3), at(4)]
    assert hours(date="eb2024-03-01T10:00:00Z") == [at(0), at(1)]
    # repeated: both hold (a range); comma-separated: either
    assert ward.get("/fhir/RiskAssessment?patient=a&date=ge2024-03-01T09:00:00Z&date=lt2024-03-01T11:00:00Z",
                    headers=hdr("viewer")).json()["total"] == 2
    assert hours(date="2024-03-01T08:00:00Z,2024-03-01T12:00:00Z") == [at(0), at(4)]


def test_date_search_on_flags_compares_the_alarm_period(ward):
    """Patient a: alarm 1 raised at hour 0, resolved (period [0 h, resolved]); alarm 2 raised at
    hour 1 and active (period [1 h, open)). The resolution is stamped on the wall clock, after T0."""
    flags = found(get(ward, "/fhir/Flag", patient="a"))["entry"]
    [active] = [e["resource"] for e in flags if e["resource"]["status"] == "active"]
    [resolved] = [e["resource"] for e in flags if e["resource"]["status"] == "inactive"]
    assert active["period"] == {"start": at(1)} and resolved["period"]["start"] == at(0)

    def flag_ids(value: str) -> set[str]:
        return set(ids(found(get(ward, "/fhir/Flag", patient="a", date=value))))
    assert flag_ids("gt2024-03-01T08:30:00Z") == {active["id"], resolved["id"]}  # both reach past 08:30
    assert flag_ids("sa2024-03-01T08:30:00Z") == {active["id"]}                  # only alarm 2 starts after it
    assert flag_ids("lt2024-03-01T08:30:00Z") == {resolved["id"]}
    assert flag_ids("eb2024-03-01T08:30:00Z") == set()                           # alarm 1 ended later
    assert flag_ids("eq2024-03-01") == set()                                     # no period lies within that day
    assert flag_ids("ge2024") == {active["id"], resolved["id"]}


def test_count_pages_with_links_that_walk_every_match(ward):
    every = found(get(ward, "/fhir/RiskAssessment"))
    first = found(get(ward, "/fhir/RiskAssessment", _count=3))
    assert first["total"] == 9 and len(first["entry"]) == 3
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert set(links) == {"self", "first", "next"}
    walked, page = [], first
    while True:
        walked += ids(page)
        nxt = {link["relation"]: link["url"] for link in page["link"]}.get("next")
        if nxt is None:
            break
        url = urlsplit(nxt)
        assert url.path == "/fhir/RiskAssessment"
        page = found(ward.get(url.path, params=parse_qsl(url.query), headers=hdr("viewer")))
        assert page["total"] == 9
    assert walked == ids(every)
    last = {link["relation"]: link["url"] for link in page["link"]}
    assert "previous" in last and "next" not in last and len(page["entry"]) == 3
    url = urlsplit(last["previous"])
    assert ids(found(ward.get(url.path, params=parse_qsl(url.query), headers=hdr("viewer")))) == ids(every)[3:6]
    # the criteria travel in the links
    b = found(get(ward, "/fhir/Flag", patient="a", _count=1))
    nxt = dict(parse_qsl(urlsplit({x["relation"]: x["url"] for x in b["link"]}["next"]).query))
    assert nxt == {"patient": "a", "_count": "1", "_offset": "1"}
    only_total = found(get(ward, "/fhir/RiskAssessment", patient="a", _count=0))
    assert only_total["total"] == 5 and only_total["entry"] == []
    assert found(get(ward, "/fhir/RiskAssessment", _offset=100))["entry"] == []


def test_risk_assessment_read_and_its_basis_resolve_to_the_stored_observation(ward):
    timeline = ward.get("/patients/a", headers=hdr("viewer")).json()["timeline"]
    entry = found(get(ward, "/fhir/RiskAssessment", patient="a"))["entry"][1]
    r = get(ward, f"/fhir/RiskAssessment/{entry['resource']['id']}")
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR)
    ra = r.json()
    RiskAssessment.model_validate(ra)
    assert ra == entry["resource"]
    assert ra["id"] == "a-20240301T090000Z" and ra["prediction"][0]["probabilityDecimal"] == timeline[1]["risk"]
    assert ra["method"]["coding"][0]["system"] == "urn:liquid-sepsis:model"
    assert ra["method"]["coding"][0]["code"] == "always/1"
    assert ra["prediction"][0]["whenRange"] == {"high": {"value": 6, "unit": "h", "system": "http://unitsofmeasure.org",
                                                         "code": "h"}}
    assert ra["meta"]["lastUpdated"]
    [basis] = ra["basis"]
    o = get(ward, f"/fhir/{basis['reference']}")
    assert o.status_code == 200
    observation = Observation.model_validate(o.json()).model_dump(mode="json", exclude_none=True)
    assert observation["id"] == ra["id"] and observation["effectiveDateTime"] == at(1)
    assert observation["subject"] == {"reference": "Patient/a"}
    values = {c["code"]["text"]: c["valueQuantity"]["value"] for c in o.json()["component"]}
    assert values == timeline[1]["vitals"] == {"HR": 81.0, "Temp": 37.0}
    hr = o.json()["component"][0]
    assert hr["code"]["coding"][0] == {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}
    assert hr["valueQuantity"]["code"] == "/min"


def test_observation_ids_the_ingest_answers_round_trip(db_url, models_root):
    with client_for(db_url, models_root) as c:
        o = {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/f1"},
             "code": {"coding": [{"system": "http://loinc.org", "code": "2524-7"}]},
             "effectiveDateTime": "2024-03-01T08:15:30.250000Z",
             "valueQuantity": {"value": 2.5, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}}
        r = c.post("/fhir/Observation", content=json.dumps(o), headers={**hdr("ingest"), "Content-Type": FHIR})
        assert r.status_code == 201, r.text
        location = r.headers["location"]
        assert location == "Observation/f1-20240301T081530.250000Z"
        read = get(c, f"/fhir/{location}")
        assert read.status_code == 200
        Observation.model_validate(read.json())
        [component] = read.json()["component"]
        assert component["code"]["coding"][0]["code"] == "2524-7" and component["valueQuantity"]["value"] == 2.5
        assert get(c, f"/fhir/RiskAssessment/{location.split('/')[1]}").json()["basis"] == [{"reference": location}]
        # the same instant spelt otherwise is not an id the service gave
        assert get(c, "/fhir/Observation/f1-20240301T081530.250Z").status_code == 404


def test_a_patient_id_fhir_cannot_carry_reads_by_its_hashed_id(ward):
    [ra] = found(get(ward, "/fhir/RiskAssessment", patient="c_1"))["entry"]  # the service's id finds it
    ref = ra["resource"]["subject"]["reference"]
    assert ref.startswith("Patient/h") and len(ref) == len("Patient/h") + 16
    assert ids(found(get(ward, "/fhir/RiskAssessment", subject=ref))) == [ra["resource"]["id"]]
    p = get(ward, f"/fhir/{ref}")
    assert p.status_code == 200
    Patient.model_validate(p.json())
    assert p.json()["identifier"] == [{"system": "urn:liquid-sepsis:patient-id", "value": "c_1"}]
    o = get(ward, f"/fhir/Observation/{ra['resource']['id']}")
    assert o.status_code == 200 and o.json()["subject"]["reference"] == ref
    [issue] = refused(get(ward, "/fhir/Patient/c_1"), 404)
    assert ref.removeprefix("Patient/") in issue["diagnostics"]


def test_an_observation_of_a_patient_whose_id_is_too_long_for_it_reads_by_its_hashed_id(sqlite_url, models_root):
    pid = "p" * 50  # a FHIR id itself, but not beside the time (at most 64 characters)
    with client_for(sqlite_url, models_root) as c:
        predict(c, pid, 0, HR=77)
        [entry] = found(get(c, "/fhir/RiskAssessment", patient=pid))["entry"]
        rid = entry["resource"]["id"]
        assert rid.startswith("h") and rid.endswith("-20240301T080000Z")
        o = get(c, f"/fhir/Observation/{rid}")
        assert o.status_code == 200 and o.json()["subject"] == {"reference": f"Patient/{pid}"}
        assert get(c, f"/fhir/Patient/{pid}").json()["id"] == pid


def test_patient_and_flag_reads(ward):
    ward.post("/patients", json={"patient_id": "adm", "icu_admit_time": at(0), "gender": 1, "age": 70},
              headers=hdr("ingest"))
    p = get(ward, "/fhir/Patient/adm")
    assert p.status_code == 200
    assert Patient.model_validate(p.json()).gender == "male" and p.json()["meta"]["lastUpdated"]
    assert "gender" not in get(ward, "/fhir/Patient/a").json()  # admitted by a first observation: not recorded
    flags = found(get(ward, "/fhir/Flag", patient="a"))["entry"]
    for e in flags:
        r = get(ward, f"/fhir/Flag/{e['resource']['id']}")
        assert r.status_code == 200 and r.json() == e["resource"]
        Flag.model_validate(r.json())
    resolved = next(e["resource"] for e in flags if e["resource"]["status"] == "inactive")
    assert resolved["meta"]["lastUpdated"] == resolved["period"]["end"]  # resolving changed it last


@pytest.mark.parametrize("path", ["/fhir/Patient/nobody", "/fhir/Observation/a-20240301T083000Z",
                                  "/fhir/Observation/nonsense", "/fhir/RiskAssessment/b-20240301T093000Z",
                                  "/fhir/Flag/999", "/fhir/Flag/x", "/fhir/Flag/99999999999",
                                  "/fhir/Encounter/nobody", "/fhir/Encounter/a_b"])
def test_absent_resources_are_404_operation_outcomes(ward, path):
    [issue] = refused(get(ward, path), 404)
    assert issue["code"] == "not-found"


def test_reads_and_searches_need_a_viewer_key(ward):
    for path in ("/fhir/Patient/a", "/fhir/Observation/a-20240301T080000Z", "/fhir/RiskAssessment/a-20240301T080000Z",
                 "/fhir/Flag/1", "/fhir/Flag", "/fhir/RiskAssessment", "/fhir/Encounter/a-icu"):
        assert get(ward, path, role=None).status_code == 401
        assert get(ward, path, role="ingest").status_code == 403
        assert get(ward, path, role="clinician").status_code != 403


def test_capability_statement_states_what_is_served(ward):
    r = get(ward, "/fhir/metadata", role=None)  # open: clients read it before they authenticate
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR)
    cs = CapabilityStatement.model_validate(r.json())
    assert cs.fhirVersion == "4.0.1" and "application/fhir+json" in cs.format
    [rest] = cs.rest
    served = {res.type: res for res in rest.resource}
    assert {t: sorted(i.code for i in res.interaction) for t, res in served.items()} == {
        "Patient": ["create", "read"], "Encounter": ["create", "read"], "Observation": ["create", "read"],
        "RiskAssessment": ["read", "search-type"], "Flag": ["read", "search-type"]}
    examples = {"patient": "a", "subject": "Patient/a", "date": "ge2024-03-01", "status": "active", "_count": "2",
                "_offset": "1"}
    for rtype in ("RiskAssessment", "Flag"):
        names = [p.name for p in served[rtype].searchParam]
        assert names == [p.name for p in search.SEARCHES[rtype] + search.PAGING if p.name != "_format"]
        for name in names:  # every parameter it states is one the search takes
            found(get(ward, f"/fhir/{rtype}", **{name: examples[name]}))


def test_a_risk_assessment_names_the_senders_observations_and_they_are_readable(client):
    """The sender's Observation ids are kept: an hour's RiskAssessment lists them in its basis
    beside the hour's own Observation, each readable by its id, amended as amended, gone once
    entered in error."""
    def send(rid: str, loinc: str, value, unit: str, minutes: int, status: str = "final"):
        o = {"resourceType": "Observation", "id": rid, "status": status,
             "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
             "subject": {"reference": "Patient/s1"}, "effectiveDateTime": iso(T0 + dt.timedelta(minutes=minutes)),
             "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}
        r = client.post("/fhir/Observation", json=o, headers={**hdr("ingest"), "Content-Type": FHIR})
        assert r.status_code in (200, 201), r.text
        return r.json()

    send("hr-7", "8867-4", 118, "/min", 10)
    ra = send("lac-7", "2524-7", 4.2, "mmol/L", 25)
    RiskAssessment.model_validate(ra)
    hour = resources_id = ra["id"]
    assert [b["reference"] for b in ra["basis"]] == [f"Observation/{hour}", "Observation/hr-7", "Observation/lac-7"]
    read = found_one(get(client, f"/fhir/RiskAssessment/{resources_id}"))
    assert [b["reference"] for b in read["basis"]] == [b["reference"] for b in ra["basis"]]
    lactate = found_one(get(client, "/fhir/Observation/lac-7"))
    assert lactate["valueQuantity"]["value"] == 4.2 and lactate["status"] == "final"
    assert lactate["subject"] == {"reference": "Patient/s1"}
    send("lac-7", "2524-7", 2.4, "mmol/L", 25, status="amended")  # the lab corrects its result
    lactate = found_one(get(client, "/fhir/Observation/lac-7"))
    assert (lactate["valueQuantity"]["value"], lactate["status"]) == (2.4, "amended")
    send("hr-7", "8867-4", 118, "/min", 10, status="entered-in-error")
    assert get(client, "/fhir/Observation/hr-7").status_code == 404
    bases = [b["reference"] for b in found_one(get(client, f"/fhir/RiskAssessment/{hour}"))["basis"]]
    assert bases == [f"Observation/{hour}", "Observation/lac-7"]


def found_one(r) -> dict:
    assert r.status_code == 200, r.text
    MODELS[r.json()["resourceType"]].model_validate(r.json())
    return r.json()
