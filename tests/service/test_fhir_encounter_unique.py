"""An Encounter is one stay of one patient (docs/fhir.md): a bundle whose ICU Encounter, by its id
or by one of its identifiers, is another patient's stored stay is a 409 naming the element, and
nothing of it is stored; the same Encounter for the same patient again is not. The database holds
the rule too (migration 0013's unique indexes), so a writer that loses a race to store one
Encounter for two patients is answered the same 409, not a 500. The migration stops, changing
nothing, on a database that already holds an Encounter for two patients."""
from __future__ import annotations

import pytest
from sqlalchemy import inspect, insert, select, text
from sqlalchemy.exc import IntegrityError

from service.fhir import store as fhir_store
from service.scoring.ingest import Ingestor
from service.storage.db import make_engine, migrate
from service.storage.tables import Patient
from tests.service.conftest import T0, client_for, hdr
from tests.service.test_fhir import bundle, encounter, issues, patient, post
from tests.service.test_fhir_encounter import OID, heart_rate, stored

P = Patient.__table__


@pytest.fixture
def c(db_url, models_root):
    with client_for(db_url, models_root) as client:
        yield client


def with_identifiers(pid: str, *identifiers: dict, eid: str | None = None) -> dict:
    e = encounter(pid, 0, eid=eid)
    if eid is None:
        del e["id"]  # in the bundle by its urn:uuid fullUrl: known by its identifiers only
    e["identifier"] = list(identifiers)
    return e


def refused(r, element: str) -> dict:
    """The one issue of a 409 naming `element`; it names no other patient."""
    assert r.status_code == 409, r.text
    [problem] = issues(r)
    assert problem["code"] == "conflict" and problem["expression"] == [element], problem
    assert "another patient" in problem["diagnostics"] and "nothing was stored" in problem["diagnostics"], problem
    return problem


def timeline(c, pid: str):
    r = c.get(f"/patients/{pid}", headers=hdr("viewer"))
    return r.json()["timeline"] if r.status_code == 200 else r.status_code


def direct_row(conn, pid: str, **encounter_columns) -> None:
    """A patient stored by another writer (as the code of this release stores one)."""
    conn.execute(insert(P).values(id=pid, created_at=T0, admitted_by="admission", icu_admit_time=T0,
                                  n_observations=0, version=0, **encounter_columns))


def test_an_encounter_id_of_another_patients_stay_is_a_409_naming_it_and_nothing_is_stored(c, db_url):
    assert post(c, bundle(patient("t1"), encounter("t1", 0, eid="shared"), heart_rate("t1", 1))).status_code == 200
    problem = refused(post(c, bundle(patient("t2"), encounter("t2", 0, eid="shared"), heart_rate("t2", 1))),
                      "Bundle.entry[1].resource.id")
    assert "t1" not in problem["diagnostics"]  # a feed's key is not told whose stay it is
    assert timeline(c, "t2") == 404  # not admitted, nothing scored
    # a stored patient without an Encounter id is not given another's either (no fill-in, nothing scored)
    assert post(c, bundle(patient("t3"), with_identifiers("t3", {"system": OID, "value": "T3"}),
                          heart_rate("t3", 1))).status_code == 200
    hours = timeline(c, "t3")
    refused(post(c, bundle(patient("t3"), with_identifiers("t3", {"system": OID, "value": "T3"}, eid="shared"),
                           heart_rate("t3", 2))), "Bundle.entry[1].resource.id")
    assert timeline(c, "t3") == hours and tuple(stored(db_url, "t3")) == (None, OID, "T3")
    # the same Encounter for its own patient again is that stay, as before
    assert post(c, bundle(patient("t1"), encounter("t1", 0, eid="shared"), heart_rate("t1", 2))).status_code == 200
    read = c.get("/fhir/Encounter/shared", headers=hdr("viewer"))
    assert read.status_code == 200 and read.json()["subject"] == {"reference": "Patient/t1"}, read.text
    assert tuple(stored(db_url, "t1")) == ("shared", None, None)


def test_an_identifier_of_another_patients_stay_is_a_409_naming_it_with_or_without_a_system(c, db_url):
    assert post(c, bundle(patient("u1"), with_identifiers("u1", {"system": OID, "value": "V1"}),
                          heart_rate("u1", 1))).status_code == 200
    # any of the Encounter's identifiers: the second here
    refused(post(c, bundle(patient("u2"), with_identifiers("u2", {"system": OID, "value": "V2"}, {"system": OID, "value": "V1"}),
                           heart_rate("u2", 1))), "Bundle.entry[1].resource.identifier[1]")
    assert timeline(c, "u2") == 404
    # without a system: unique by value among the system-less; with another system it is another identifier
    assert post(c, bundle(patient("u3"), with_identifiers("u3", {"value": "bed-7"}), heart_rate("u3", 1))).status_code == 200
    refused(post(c, bundle(patient("u4"), with_identifiers("u4", {"value": "bed-7"}), heart_rate("u4", 1))),
            "Bundle.entry[1].resource.identifier[0]")
    assert timeline(c, "u4") == 404
    for pid, ident in (("u5", {"system": OID, "value": "bed-7"}), ("u6", {"system": "urn:other", "value": "V1"})):
        assert post(c, bundle(patient(pid), with_identifiers(pid, ident), heart_rate(pid, 1))).status_code == 200
    # the same Encounter for its own patient, its identifiers in another order and its id now: fine
    again = with_identifiers("u1", {"value": "u1-bed"}, {"system": OID, "value": "V1"}, eid="u1-stay")
    assert post(c, bundle(patient("u1"), again, heart_rate("u1", 2))).status_code == 200
    assert tuple(stored(db_url, "u1")) == ("u1-stay", OID, "V1")


def test_one_encounter_for_two_patients_of_one_bundle_is_refused_at_the_second(c):
    b = bundle(patient("b1"), encounter("b1", 0, eid="both"), patient("b2"), encounter("b2", 0, eid="both"),
               heart_rate("b1", 1), heart_rate("b2", 1))
    r = post(c, b)
    assert r.status_code == 422, r.text
    [problem] = issues(r)
    assert problem["expression"] == ["Bundle.entry[3].resource.id"] and "patient b1" in problem["diagnostics"], problem
    assert timeline(c, "b1") == 404 and timeline(c, "b2") == 404


def test_a_writer_that_loses_the_race_for_an_encounter_is_a_409_not_a_500(c, db_url, monkeypatch):
    """Another writer stores the Encounter for another patient between the bundle's check and its
    insert: the unique index refuses the insert, and the write, started over, refuses the bundle."""
    engine = c.app.state.services.engine
    original = Ingestor._store
    racers: list[tuple[str, dict]] = []  # the row another writer stores just before this write's next insert

    def store_after_a_racer(self, *args, **kw):
        if racers:
            pid, columns = racers.pop()
            with engine.begin() as conn:
                direct_row(conn, pid, **columns)
        return original(self, *args, **kw)

    monkeypatch.setattr(Ingestor, "_store", store_after_a_racer)
    racers.append(("racer1", dict(encounter_id="raced")))
    refused(post(c, bundle(patient("v1"), encounter("v1", 0, eid="raced"), heart_rate("v1", 1))),
            "Bundle.entry[1].resource.id")
    racers.append(("racer2", dict(encounter_system=OID, encounter_value="R2")))
    refused(post(c, bundle(patient("v2"), with_identifiers("v2", {"system": OID, "value": "R2"}), heart_rate("v2", 1))),
            "Bundle.entry[1].resource.identifier[0]")
    racers.append(("racer3", dict(encounter_value="R3")))
    refused(post(c, bundle(patient("v3"), with_identifiers("v3", {"value": "R3"}), heart_rate("v3", 1))),
            "Bundle.entry[1].resource.identifier[0]")
    assert not racers and [timeline(c, pid) for pid in ("v1", "v2", "v3")] == [404] * 3
    with engine.connect() as conn:
        assert conn.execute(select(P.c.id).where(P.c.encounter_id == "raced")).scalars().all() == ["racer1"]


def test_a_racer_storing_the_encounter_before_a_stored_patients_fill_in_is_a_409_not_a_500(c, db_url, monkeypatch):
    """The stored patient lacks the Encounter id; another writer stores it for another patient
    between the bundle's write and the filling in: the unique index refuses the update."""
    assert post(c, bundle(patient("f1"), with_identifiers("f1", {"system": OID, "value": "F1"}),
                          heart_rate("f1", 1))).status_code == 200
    engine = c.app.state.services.engine
    original = fhir_store._move_and_discharge

    def fill_in_after_a_racer(services, *args):
        with engine.begin() as conn:
            direct_row(conn, "racer", encounter_id="late")
        return original(services, *args)

    monkeypatch.setattr(fhir_store, "_move_and_discharge", fill_in_after_a_racer)
    refused(post(c, bundle(patient("f1"), with_identifiers("f1", {"system": OID, "value": "F1"}, eid="late"),
                           heart_rate("f1", 2))), "Bundle.entry[1].resource.id")
    assert tuple(stored(db_url, "f1")) == (None, OID, "F1")


# -- migration 0013 --------------------------------------------------------------------------


def indexes(engine) -> set[str]:
    with engine.connect() as conn:
        return {ix["name"] for ix in inspect(conn).get_indexes("patients")}


def version(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()


def test_the_upgrade_from_0012_keeps_the_encounters_and_indexes_them(db_url):
    engine = make_engine(db_url)
    try:
        migrate(engine, "0012")
        kept = {"m1": ("stay-1", OID, "V1"), "m2": ("stay-2", None, "V1"), "m3": (None, "urn:other", "V1"),
                "m4": (None, None, None), "m5": (None, None, None), "m6": (None, None, "V2")}
        with engine.begin() as conn:
            for pid, (eid, system, value) in kept.items():
                direct_row(conn, pid, encounter_id=eid, encounter_system=system, encounter_value=value)
        migrate(engine, "0013")
        assert version(engine) == "0013"
        assert {"ux_patients_encounter_id", "ux_patients_encounter_identifier",
                "ux_patients_encounter_value_no_system"} <= indexes(engine)
        with engine.connect() as conn:
            rows = conn.execute(select(P.c.id, P.c.encounter_id, P.c.encounter_system, P.c.encounter_value)).all()
        assert {r.id: tuple(r[1:]) for r in rows} == kept
        # the indexes refuse one Encounter for two patients, a system-less identifier's value included,
        # and allow many patients without one
        for pid, columns in (("d1", dict(encounter_id="stay-1")), ("d2", dict(encounter_system=OID, encounter_value="V1")),
                             ("d3", dict(encounter_value="V1")), ("d4", dict(encounter_value="V2"))):
            with pytest.raises(IntegrityError), engine.begin() as conn:
                direct_row(conn, pid, **columns)
        with engine.begin() as conn:
            direct_row(conn, "ok1", encounter_system="urn:third", encounter_value="V1")
            direct_row(conn, "ok2")
            direct_row(conn, "ok3", encounter_system=OID)  # a system without value is no identifier
            direct_row(conn, "ok4", encounter_system=OID)
    finally:
        engine.dispose()


def test_the_upgrade_stops_on_an_encounter_stored_for_two_patients_and_changes_nothing(db_url):
    engine = make_engine(db_url)
    try:
        migrate(engine, "0012")
        held = {"a1": ("dup-id", OID, "A1"), "a2": ("dup-id", None, None), "a3": (None, OID, "A1"),
                "a4": (None, None, "bed-1"), "a5": ("own", None, "bed-1"), "a6": ("single", OID, "bed-1")}
        with engine.begin() as conn:
            for pid, (eid, system, value) in held.items():
                direct_row(conn, pid, encounter_id=eid, encounter_system=system, encounter_value=value)
        with pytest.raises(RuntimeError) as stopped:
            migrate(engine, "0013")
        message = str(stopped.value)
        assert "3 Encounter(s)" in message and "nothing was changed" in message
        assert "Encounter id 'dup-id': patients a1, a2" in message
        assert f"system {OID!r} value 'A1': patients a1, a3" in message
        assert "system None value 'bed-1': patients a4, a5" in message
        assert "single" not in message and "a6" not in message
        assert version(engine) == "0012" and "ux_patients_encounter_id" not in indexes(engine)
        with engine.connect() as conn:
            rows = conn.execute(select(P.c.id, P.c.encounter_id, P.c.encounter_system, P.c.encounter_value)).all()
        assert {r.id: tuple(r[1:]) for r in rows} == held
        # the operator decides whose stay each is and clears the others': the next start-up upgrades
        with engine.begin() as conn:
            conn.execute(P.update().where(P.c.id == "a2").values(encounter_id=None))
            conn.execute(P.update().where(P.c.id.in_(["a3", "a5"])).values(encounter_system=None, encounter_value=None))
        migrate(engine, "0013")
        assert version(engine) == "0013" and "ux_patients_encounter_id" in indexes(engine)
    finally:
        engine.dispose()
