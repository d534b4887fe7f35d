"""Bad input gets a JSON 422 naming the field and the reason; access needs the right key."""
from __future__ import annotations

import pytest

from tests.service.conftest import hdr, obs


@pytest.mark.parametrize("name, value, words", [
    ("HR", 420, ["vitals.HR", "0 to 300"]),
    ("Temp", 98.6, ["vitals.Temp", "20 to 45", "deg C"]),     # Fahrenheit sent by mistake
    ("FiO2", 40, ["vitals.FiO2", "0 to 1", "fraction"]),        # percent instead of fraction
    ("pH", 9.1, ["vitals.pH", "6.5 to 8"]),
    ("Gender", 2, ["vitals.Gender", "0 or 1"]),
    ("Sodium", 140, ["vitals.Sodium", "unknown variable"]),
    ("ICULOS", 3, ["vitals.ICULOS", "derived by the service"]),
])
def test_implausible_or_unknown_values_name_field_and_range(client, name, value, words):
    r = client.post("/predict", json=obs("v1", 0, **{name: value}), headers=hdr("ingest"))
    assert r.status_code == 422
    body = r.json()
    text = body["detail"] + str(body["errors"])
    assert all(w in text for w in words), body
    assert body["errors"][0]["field"] == f"vitals.{name}"
    assert client.get("/patients/v1", headers=hdr("viewer")).status_code == 404  # nothing stored


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_422(client, literal):
    raw = '{"patient_id": "v2", "timestamp": "2024-03-01T08:00:00Z", "vitals": {"HR": %s}}' % literal
    r = client.post("/predict", content=raw, headers={**hdr("ingest"), "content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["errors"] == [{"field": "vitals.HR", "reason": "must be a finite number (omit a variable that was not measured)"}]


def test_timestamp_needs_a_zone_and_body_must_be_json(client):
    r = client.post("/predict", json={"patient_id": "v3", "timestamp": "2024-03-01T08:00:00", "vitals": {}},
                    headers=hdr("ingest"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "timestamp"
    r = client.post("/predict", content="not json", headers={**hdr("ingest"), "content-type": "application/json"})
    assert r.status_code == 422 and "detail" in r.json()
    r = client.post("/predict", json={"patient_id": "v3", "timestamp": "2024-03-01T08:00:00Z", "vitals": {}, "x": 1},
                    headers=hdr("ingest"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "x"


def test_batch_errors_name_the_item(client):
    items = [obs("v4", 0, HR=80), obs("v4", 1, O2Sat=140)]
    r = client.post("/predict/batch", json={"observations": items}, headers=hdr("ingest"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "observations.1.vitals.O2Sat"


def test_outcome_validation(client):
    client.post("/predict", json=obs("v5", 0, HR=80), headers=hdr("ingest"))
    r = client.post("/patients/v5/outcome", json={"outcome": "sepsis"}, headers=hdr("clinician"))
    assert r.status_code == 422 and "onset_time" in r.json()["detail"]
    assert client.post("/patients/nobody/outcome", json={"outcome": "no_sepsis"},
                       headers=hdr("clinician")).status_code == 404


def test_roles(client):
    body = obs("r1", 0, HR=80)
    assert client.post("/predict", json=body).status_code == 401
    assert client.post("/predict", json=body, headers={"X-API-Key": "sk_wrong"}).status_code == 401
    r = client.post("/predict", json=body, headers=hdr("viewer"))
    assert r.status_code == 403 and "ingest" in r.json()["detail"]
    assert client.post("/predict", json=body, headers=hdr("ingest")).status_code == 200
    assert client.get("/patients", headers=hdr("ingest")).status_code == 403
    assert client.get("/patients", headers=hdr("viewer")).status_code == 200
    assert client.get("/patients", headers=hdr("clinician")).status_code == 200
    out = {"outcome": "no_sepsis"}
    assert client.post("/patients/r1/outcome", json=out, headers=hdr("viewer")).status_code == 403
    assert client.post("/patients/r1/outcome", json=out, headers=hdr("admin")).status_code == 200
    # operations endpoints stay open for probes and Prometheus
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200


def test_ready_reports_model_provider_and_database(client):
    r = client.get("/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] and body["database"] == "ok"
    assert (body["model"], body["model_version"], body["provider"]) == ("sepsis-cfc", "1", "CPUExecutionProvider")


def test_openapi_docs_served(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/predict", "/predict/batch", "/patients", "/patients/{patient_id}", "/patients/{patient_id}/outcome",
              "/alarms", "/alarms/{alarm_id}/ack", "/alarms/{alarm_id}/snooze", "/alarms/{alarm_id}/resolve", "/stats"):
        assert p in paths
