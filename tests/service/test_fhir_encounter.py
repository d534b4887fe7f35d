"""The sender's Encounter named back (docs/fhir.md): a bundle's ICU Encounter, by its id or by its
identifier, is kept with the patient's stay, and every RiskAssessment and Flag of the stay names
it in `encounter` (read, searched, and answered to POST /fhir/Observation), each validated with
fhir.resources. No Encounter, or one with neither id nor identifier: no `encounter`. Too long or
malformed: a 422 naming the element, nothing stored. Another Encounter for the stay: a 409 (and
the stay of another patient: test_fhir_encounter_unique.py). An
Encounter kept by its id is read back at GET /fhir/Encounter/{id} (what a RiskAssessment's
`encounter.reference` resolves to here); one kept by its identifier only has no id to read."""
from __future__ import annotations

import pytest
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.riskassessment import RiskAssessment
from sqlalchemy import select

from service.storage.db import make_engine, migrate
from service.storage.tables import Patient
from tests.service.conftest import T0, client_for, hdr
from tests.service.test_fhir import FHIR, at, bundle, encounter, issues, observation, patient, post

OID = "urn:oid:2.16.840.1.113883.19.5"


@pytest.fixture
def c(db_url, models_root):
    with client_for(db_url, models_root, model="always") as client:  # every observation alarms: a Flag each
        yield client


def heart_rate(pid: str, hour: float, value: float = 90) -> dict:
    return observation(pid, hour, "8867-4", value, "/min")


def named(c, pid: str) -> list:
    """The `encounter`s (None when absent) that the patient's RiskAssessments and Flags carry, each
    once: every one searched and read, validated with fhir.resources; at least one of each."""
    out = []
    for kind, model in (("RiskAssessment", RiskAssessment), ("Flag", Flag)):
        found = c.get(f"/fhir/{kind}", params={"patient": pid}, headers=hdr("viewer"))
        assert found.status_code == 200, found.text
        entries = found.json().get("entry", [])
        assert entries, f"no {kind} of {pid}"
        for e in entries:
            read = c.get(f"/fhir/{kind}/{e['resource']['id']}", headers=hdr("viewer"))
            assert read.status_code == 200 and read.json() == e["resource"]
            model.model_validate(read.json())
            if read.json().get("encounter") not in out:
                out.append(read.json().get("encounter"))
    return out


def stored(db_url: str, pid: str):
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(Patient.encounter_id, Patient.encounter_system, Patient.encounter_value)
                                .where(Patient.id == pid)).first()
    finally:
        engine.dispose()


def test_risk_assessments_and_flags_name_the_encounter_by_its_id(c):
    e = encounter("e1", 0, eid="icu-stay-1")
    e["identifier"] = [{"system": OID, "value": "V100"}]
    assert post(c, bundle(patient("e1"), e, heart_rate("e1", 1))).status_code == 200
    r = post(c, heart_rate("e1", 2), path="/fhir/Observation")  # alone: the stay's Encounter all the same
    assert r.status_code == 201, r.text
    RiskAssessment.model_validate(r.json())
    assert r.json()["encounter"] == {"reference": "Encounter/icu-stay-1"}
    assert named(c, "e1") == [{"reference": "Encounter/icu-stay-1"}]


def test_an_encounter_with_only_an_identifier_is_named_by_it(c, db_url):
    e = encounter("e2", 0)
    del e["id"]  # in the bundle by its urn:uuid fullUrl only
    e["identifier"] = [{"system": OID}, {"system": OID, "value": "V200"}, {"value": "other"}]  # the first with a value
    assert post(c, bundle(patient("e2"), e, heart_rate("e2", 1))).status_code == 200
    ref = {"type": "Encounter", "identifier": {"system": OID, "value": "V200"}}
    assert named(c, "e2") == [ref]
    assert tuple(stored(db_url, "e2")) == (None, OID, "V200")


def test_an_encounter_id_is_read_from_a_url_full_url(c):
    e = encounter("e3", 0)
    del e["id"]
    b = bundle(patient("e3"), e, heart_rate("e3", 1))
    b["entry"][1]["fullUrl"] = "https://ehr.example.org/fhir/Encounter/enc-3"
    assert post(c, b).status_code == 200
    assert named(c, "e3") == [{"reference": "Encounter/enc-3"}]
    # a fullUrl that ends in no FHIR id is refused naming it
    e = encounter("e4", 0)
    del e["id"]
    b = bundle(patient("e4"), e, heart_rate("e4", 1))
    b["entry"][1]["fullUrl"] = "https://ehr.example.org/fhir/Encounter/enc_4"
    r = post(c, b)
    assert r.status_code == 422 and issues(r)[0]["expression"] == ["Bundle.entry[1].fullUrl"], r.text
    assert c.get("/patients/e4", headers=hdr("viewer")).status_code == 404
    # a URL that names no Encounter id gives none, and the answer says so; the identifier names it
    e = encounter("e5", 0)
    del e["id"]
    e["identifier"] = [{"system": OID, "value": "V500"}]
    b = bundle(patient("e5"), e, heart_rate("e5", 1))
    b["entry"][1]["fullUrl"] = "https://ehr.example.org/stays/77"
    r = post(c, b)
    assert r.status_code == 200, r.text
    [note] = r.json()["entry"][1]["response"]["outcome"]["issue"]
    assert note["severity"] == "information" and note["expression"] == ["Bundle.entry[1].resource.id"]
    assert named(c, "e5") == [{"type": "Encounter", "identifier": {"system": OID, "value": "V500"}}]


def test_no_encounter_or_one_without_id_or_identifier_names_none(c, db_url):
    assert post(c, bundle(patient("n1"), heart_rate("n1", 1))).status_code == 200
    assert named(c, "n1") == [None]
    anonymous = encounter("n2", 0)
    del anonymous["id"]
    r = post(c, bundle(patient("n2"), anonymous, heart_rate("n2", 1)))
    assert r.status_code == 200, r.text
    assert named(c, "n2") == [None]
    assert tuple(stored(db_url, "n2")) == (None, None, None)


@pytest.mark.parametrize("change, element", [
    (lambda e: e.update(id="a" * 65), "Bundle.entry[1].resource.id"),
    (lambda e: e.update(identifier=[{"system": OID, "value": "v" * 129}]), "Bundle.entry[1].resource.identifier[0].value"),
    (lambda e: e.update(identifier=[{"system": "urn:x:" + "s" * 250, "value": "v"}]),
     "Bundle.entry[1].resource.identifier[0].system"),
    (lambda e: e.update(identifier=[{"value": "ok"}, {"system": OID, "value": "a\x07b"}]),
     "Bundle.entry[1].resource.identifier[1].value"),
    (lambda e: e.update(identifier=[{"system": "urn:a b", "value": "v"}]), "Bundle.entry[1].resource.identifier[0].system"),
])
def test_an_overlong_or_malformed_encounter_id_or_identifier_is_refused_and_nothing_stored(c, change, element):
    e = encounter("x1", 0)
    change(e)
    r = post(c, bundle(patient("x1"), e, heart_rate("x1", 1)))
    assert r.status_code == 422, r.text
    [problem] = issues(r)
    assert problem["expression"] == [element] and "nothing was stored" in problem["diagnostics"]
    assert c.get("/patients/x1", headers=hdr("viewer")).status_code == 404
    # the longest kept fits the column (PostgreSQL enforces the length)
    assert post(c, bundle(patient("x2"), encounter("x2", 0, eid="b" * 64), heart_rate("x2", 1))).status_code == 200
    e = encounter("x3", 0)
    e["identifier"] = [{"system": "urn:x:" + "s" * 249, "value": "v" * 128}]
    assert post(c, bundle(patient("x3"), e, heart_rate("x3", 1))).status_code == 200


def test_the_stays_encounter_is_fixed_another_is_a_409_and_a_missing_part_is_filled_in(c, db_url):
    first = encounter("s1", 0)
    del first["id"]
    first["identifier"] = [{"system": OID, "value": "V1"}]
    assert post(c, bundle(patient("s1"), first, heart_rate("s1", 1))).status_code == 200
    # the same Encounter with its id now, its identifiers in another order: the id is filled in
    again = encounter("s1", 0, eid="stay-1")
    again["identifier"] = [{"value": "bed-7"}, {"system": OID, "value": "V1"}]
    assert post(c, bundle(patient("s1"), again, heart_rate("s1", 2))).status_code == 200
    assert tuple(stored(db_url, "s1")) == ("stay-1", OID, "V1")
    assert named(c, "s1") == [{"reference": "Encounter/stay-1"}]
    hours = c.get("/patients/s1", headers=hdr("viewer")).json()["timeline"]
    # another id, or identifiers without the stay's: another stay, a 409 naming the element; nothing stored
    other = encounter("s1", 0, eid="stay-2")
    r = post(c, bundle(patient("s1"), other, heart_rate("s1", 3)))
    assert r.status_code == 409 and issues(r)[0]["expression"] == ["Bundle.entry[1].resource.id"], r.text
    assert "stay-1" not in issues(r)[0]["diagnostics"]  # a feed's key is not told the stored Encounter
    other = encounter("s1", 0, eid="stay-1")
    other["identifier"] = [{"system": OID, "value": "V2"}]
    r = post(c, bundle(patient("s1"), other, heart_rate("s1", 3)))
    assert r.status_code == 409 and issues(r)[0]["expression"] == ["Bundle.entry[1].resource.identifier[0]"], r.text
    assert c.get("/patients/s1", headers=hdr("viewer")).json()["timeline"] == hours
    assert tuple(stored(db_url, "s1")) == ("stay-1", OID, "V1")
    # an Encounter without id nor identifier says nothing against it
    anonymous = encounter("s1", 0)
    del anonymous["id"]
    assert post(c, bundle(patient("s1"), anonymous, heart_rate("s1", 3))).status_code == 200
    assert tuple(stored(db_url, "s1")) == ("stay-1", OID, "V1")


def test_a_patient_stored_before_revision_0012_gets_its_encounter_from_the_next_bundle(db_url, models_root):
    from alembic import command
    from sqlalchemy import Float, Integer, String, column, table

    from service.storage.db import alembic_config
    from service.storage.tables import UTCDateTime

    engine = make_engine(db_url)
    try:
        migrate(engine, "0011")
        patients = table("patients", column("id", String), column("created_at", UTCDateTime()),
                         column("admitted_by", String), column("icu_admit_time", UTCDateTime()),
                         column("unit1", Float), column("unit2", Float), column("n_observations", Integer),
                         column("version", Integer))
        with engine.begin() as conn:  # admitted (MICU, at T0) as the code of revision 0011 stored it
            conn.execute(patients.insert().values(id="old", created_at=T0, admitted_by="admission", icu_admit_time=T0,
                                                  unit1=1.0, unit2=0.0, n_observations=0, version=0))
        migrate(engine)
        cfg = alembic_config()
        with engine.begin() as conn:  # down and up again: the columns go and come back
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0011")
        migrate(engine)
    finally:
        engine.dispose()
    assert tuple(stored(db_url, "old")) == (None, None, None)
    with client_for(db_url, models_root, model="always") as c:
        r = post(c, bundle(encounter("old", 0, eid="old-icu"), heart_rate("old", 1)))
        assert r.status_code == 200, r.text
        assert named(c, "old") == [{"reference": "Encounter/old-icu"}]
    assert tuple(stored(db_url, "old")) == ("old-icu", None, None)


def read_encounter(c, eid: str) -> dict:
    """GET /fhir/Encounter/{eid}, a 200 validated with fhir.resources."""
    r = c.get(f"/fhir/Encounter/{eid}", headers=hdr("viewer"))
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR), r.text
    Encounter.model_validate(r.json())
    return r.json()


def utc(text: str):
    import datetime as dt
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_an_encounter_kept_by_its_id_is_read_back_and_finished_after_the_discharge(c):
    e = encounter("r1", 0, eid="icu-stay-r1")
    e["identifier"] = [{"system": OID, "value": "V300"}]
    assert post(c, bundle(patient("r1"), e, heart_rate("r1", 1))).status_code == 200
    read = read_encounter(c, "icu-stay-r1")
    assert read["id"] == "icu-stay-r1" and read["identifier"] == [{"system": OID, "value": "V300"}]
    assert (read["status"], read["class"]["code"]) == ("in-progress", "ACUTE")
    assert read["subject"] == {"reference": "Patient/r1"}
    assert list(read["period"]) == ["start"] and utc(read["period"]["start"]) == utc(at(0))
    assert read["location"] == [{"location": {"display": "MICU"}}]  # the unit the admission named
    # moved to the SICU at hour 3 (a later location of the same Encounter): the unit now
    moved = encounter("r1", 0, eid="icu-stay-r1")
    moved["location"].append({"location": {"display": "Surgical intensive care unit (SICU) bed 4"},
                              "period": {"start": at(3)}})
    assert post(c, bundle(patient("r1"), moved)).status_code == 200
    assert read_encounter(c, "icu-stay-r1")["location"] == [{"location": {"display": "SICU"}}]
    # the stay ends: the same Encounter, finished at hour 5
    done = encounter("r1", 0, eid="icu-stay-r1")
    done.update(status="finished", period={"start": at(0), "end": at(5)})
    assert post(c, bundle(patient("r1"), done)).status_code == 200
    read = read_encounter(c, "icu-stay-r1")
    assert read["status"] == "finished"
    assert (utc(read["period"]["start"]), utc(read["period"]["end"])) == (utc(at(0)), utc(at(5)))


def test_a_risk_assessments_and_a_flags_encounter_reference_resolves_here(c):
    assert post(c, bundle(patient("r2"), encounter("r2", 0, eid="stay-r2"), heart_rate("r2", 1))).status_code == 200
    for kind in ("RiskAssessment", "Flag"):
        entries = c.get(f"/fhir/{kind}", params={"patient": "r2"}, headers=hdr("viewer")).json()["entry"]
        assert entries
        for found in entries:
            ref = found["resource"]["encounter"]["reference"]
            assert ref == "Encounter/stay-r2"
            read = read_encounter(c, ref.split("/")[1])
            assert read["subject"] == found["resource"]["subject"]  # the same stay's patient


def test_an_unknown_encounter_id_is_a_404_and_one_kept_by_its_identifier_only_is_not_readable(c):
    r = c.get("/fhir/Encounter/no-such-stay", headers=hdr("viewer"))
    assert r.status_code == 404 and issues(r)[0]["code"] == "not-found"
    e = encounter("r3", 0)  # its id would have been r3-icu
    del e["id"]
    e["identifier"] = [{"system": OID, "value": "V400"}]
    assert post(c, bundle(patient("r3"), e, heart_rate("r3", 1))).status_code == 200
    assert named(c, "r3") == [{"type": "Encounter", "identifier": {"system": OID, "value": "V400"}}]
    for eid in ("r3-icu", "V400", "r3"):
        r = c.get(f"/fhir/Encounter/{eid}", headers=hdr("viewer"))
        assert r.status_code == 404 and issues(r)[0]["code"] == "not-found", (eid, r.text)
    # the read needs a viewer's key, as every read
    assert post(c, bundle(patient("r4"), encounter("r4", 0, eid="stay-r4"), heart_rate("r4", 1))).status_code == 200
    assert c.get("/fhir/Encounter/stay-r4").status_code == 401
    assert c.get("/fhir/Encounter/stay-r4", headers=hdr("ingest")).status_code == 403


def test_a_stay_without_a_named_unit_has_no_location(c):
    assert post(c, bundle(patient("u1"), encounter("u1", 0, eid="stay-u1", unit=None),
                          heart_rate("u1", 1))).status_code == 200
    read = read_encounter(c, "stay-u1")
    assert "location" not in read and "identifier" not in read
    assert c.get(f"/fhir/{read['subject']['reference']}", headers=hdr("viewer")).status_code == 200
