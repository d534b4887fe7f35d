"""Bad input gets a JSON 422 naming the field and the reason; access needs the right key."""
from __future__ import annotations

import json

import pytest

from service.app import create_app
from tests.service.conftest import client_for, hdr, make_settings, obs


@pytest.mark.parametrize("name, value, words", [
    ("HR", 2e6, ["vitals.HR", "cannot be a value of HR in any unit"]),
    ("FiO2", -1e7, ["vitals.FiO2", "magnitude 1e+06 or more"]),
    ("Gender", 2, ["vitals.Gender", "0 or 1"]),
    ("Sodium", 140, ["vitals.Sodium", "unknown variable"]),
    ("ICULOS", 3, ["vitals.ICULOS", "derived by the service"]),
])
def test_unknown_or_impossible_values_are_422_naming_field_and_reason(client, name, value, words):
    r = client.post("/predict", json=obs("v1", 0, **{name: value}), headers=hdr("ingest"))
    assert r.status_code == 422
    body = r.json()
    text = body["detail"] + str(body["errors"])
    assert all(w in text for w in words), body
    assert body["errors"][0]["field"] == f"vitals.{name}"
    assert client.get("/patients/v1", headers=hdr("viewer")).status_code == 404  # nothing stored


@pytest.mark.parametrize("name, value, words", [
    ("HR", 420, ["0 to 300"]),
    ("Temp", 98.6, ["20 to 45", "deg C"]),     # Fahrenheit sent by mistake
    ("FiO2", 40, ["0 to 1", "fraction"]),        # percent instead of fraction
    ("FiO2", -50, ["0 to 1"]),                   # as the public archive holds it
    ("pH", 9.1, ["6.5 to 8"]),
])
def test_implausible_values_are_stored_and_scored_as_charted_with_a_warning(client, name, value, words):
    """The archive the model was validated on holds such charting: refusing it would leave the ward
    a risk no validation saw. The sender, the patient's page and /metrics all say it is doubtful."""
    pid = f"w{abs(hash((name, value))) % 10**6}"
    r = client.post("/predict", json=obs(pid, 0, **{name: value, "MAP": 70}), headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    [w] = r.json()["warnings"]
    assert w["field"] == f"vitals.{name}" and all(x in w["reason"] for x in words + ["plausible", "as charted"]), w
    entry = client.get(f"/patients/{pid}", headers=hdr("viewer")).json()["timeline"][0]
    assert entry["vitals"][name] == value and [x["field"] for x in entry["warnings"]] == [f"vitals.{name}"]
    messages = client.get(f"/patients/{pid}/messages", headers=hdr("viewer")).json()
    assert {m["variable"]: m["warning"] is not None for m in messages} == {name: True, "MAP": False}
    metrics = client.get("/metrics", headers=hdr("monitor")).text
    assert f'sepsis_implausible_values_total{{variable="{name}"}}' in metrics
    ok = client.post("/predict", json=obs(pid, 1, HR=80), headers=hdr("ingest"))
    assert ok.status_code == 200 and ok.json()["warnings"] == []


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
    items = [obs("v4", 0, HR=80), obs("v4", 1, O2Sat=float("1e7"))]
    r = client.post("/predict/batch", json={"observations": items}, headers=hdr("ingest"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "observations.1.vitals.O2Sat"
    two = client.post("/predict/batch", json={"observations": [obs("v4", 0, HR=4.2e6, ICULOS=3)]}, headers=hdr("ingest"))
    assert [e["field"] for e in two.json()["errors"]] == ["observations.0.vitals.HR", "observations.0.vitals.ICULOS"]


def test_outcome_validation(client):
    client.post("/predict", json=obs("v5", 0, HR=80), headers=hdr("ingest"))
    r = client.post("/patients/v5/outcome", json={"outcome": "sepsis"}, headers=hdr("clinician"))
    assert r.status_code == 422 and "onset_time" in r.json()["detail"]
    assert r.json()["errors"] == [{"field": "onset_time", "reason": "required when outcome is 'sepsis'"}]
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
    # probes stay open; /metrics needs a key with the metrics permission
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=hdr("viewer")).status_code == 403
    assert client.get("/metrics", headers=hdr("admin")).status_code == 200


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


# -- every input bounded at the schema (each of these was a 500 or silently accepted) ----

OUT_OF_RANGE = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:00:00-05:00", "1899-12-31T23:59:59Z",
                "2200-01-01T00:00:00Z", "1900-01-01T00:30:00+01:00"]


def _problem(r, field: str, *words: str):
    body = r.json()
    assert r.status_code == 422, (r.status_code, body)
    fields = [e["field"] for e in body["errors"]]
    assert field in fields, body
    reason = next(e["reason"] for e in body["errors"] if e["field"] == field)
    assert all(w in reason for w in words), body
    assert body["error_count"] == len(body["errors"])


@pytest.mark.parametrize("ts", OUT_OF_RANGE)
def test_timestamps_outside_1900_to_2200_are_422_everywhere(client, ts):
    ing, cli = hdr("ingest"), hdr("clinician")
    _problem(client.post("/predict", json={"patient_id": "t1", "timestamp": ts, "vitals": {"HR": 80}}, headers=ing),
             "timestamp", "1900-01-01", "2200-01-01")
    _problem(client.post("/patients", json={"patient_id": "t2", "icu_admit_time": ts}, headers=ing), "icu_admit_time", "1900")
    assert client.post("/predict", json=obs("t3", 0, HR=80), headers=ing).status_code == 200
    _problem(client.post("/patients/t3/outcome", json={"outcome": "sepsis", "onset_time": ts}, headers=cli),
             "onset_time", "1900")
    _problem(client.post("/patients/t3/outcome", json={"outcome": "no_sepsis", "discharged_at": ts}, headers=cli),
             "discharged_at", "1900")
    for path in ("/alarms", "/stats"):
        _problem(client.get(path, params={"since": ts}, headers=hdr("viewer")), "since", "2200")
    _problem(client.get("/alarms", params={"until": ts}, headers=hdr("viewer")), "until", "2200")
    assert [p["patient_id"] for p in client.get("/patients", headers=hdr("viewer")).json()] == ["t3"]
    assert client.get("/patients/t3", headers=hdr("viewer")).json()["outcome"] is None


def test_the_ends_of_the_time_range_are_stored_and_read_back(db_url, models_root):
    first, last = "1900-01-01T00:00:00Z", "2199-12-31T23:59:59Z"
    # the storage's range, so the clock check (SEPSIS_FUTURE_MARGIN_HOURS) is widened past 2200 here
    with client_for(db_url, models_root, future_margin_hours=2e6) as client:
        for pid, ts in (("e1", first), ("e2", last)):
            r = client.post("/predict", json={"patient_id": pid, "timestamp": ts, "vitals": {"HR": 80}},
                            headers=hdr("ingest"))
            assert r.status_code == 200, r.text
            timeline = client.get(f"/patients/{pid}", headers=hdr("viewer")).json()["timeline"]
            assert timeline[0]["timestamp"].startswith(ts[:19])
        assert client.get("/stats", params={"since": first}, headers=hdr("viewer")).json()["patients"] == 2
        assert client.get("/alarms", params={"since": first, "until": last}, headers=hdr("viewer")).status_code == 200


@pytest.mark.parametrize("action, body", [("ack", {"by": "x", "reason": "confirmed"}), ("snooze", {"by": "x", "minutes": 5}),
                                          ("resolve", {"by": "x"})])
@pytest.mark.parametrize("alarm_id", [0, 2**31, 2**63, -1])
def test_alarm_ids_outside_the_column_are_422(client, action, body, alarm_id):
    _problem(client.post(f"/alarms/{alarm_id}/{action}", json=body, headers=hdr("clinician")), "alarm_id")


def test_largest_alarm_id_is_a_plain_404(client):
    r = client.post(f"/alarms/{2**31 - 1}/ack", json={"by": "x", "reason": "confirmed"}, headers=hdr("clinician"))
    assert r.status_code == 404


@pytest.mark.parametrize("params, field", [({"offset": 2**63}, "offset"), ({"offset": 2**31}, "offset"),
                                           ({"offset": -1}, "offset"), ({"limit": 0}, "limit"), ({"limit": 10001}, "limit")])
def test_paging_is_bounded(client, params, field):
    _problem(client.get("/patients", params=params, headers=hdr("viewer")), field)
    assert client.get("/patients", params={"offset": 2**31 - 1}, headers=hdr("viewer")).json() == []


def test_text_with_nul_is_422_and_nothing_changes(db_url, models_root):
    with client_for(db_url, models_root, model="always") as c:
        alarm = c.post("/predict", json=obs("n1", 0, HR=80), headers=hdr("ingest")).json()["alarm_id"]
        cli = hdr("clinician")
        _problem(c.post(f"/alarms/{alarm}/ack", json={"by": "dr\x00x", "reason": "confirmed"}, headers=cli), "by", "NUL")
        _problem(c.post(f"/alarms/{alarm}/ack", json={"by": "x", "reason": "confirmed", "note": "a\x00"}, headers=cli),
                 "note", "NUL")
        _problem(c.post(f"/alarms/{alarm}/snooze", json={"by": "\x00", "minutes": 5}, headers=cli), "by")
        _problem(c.post(f"/alarms/{alarm}/resolve", json={"by": "x", "note": "\x00"}, headers=cli), "note")
        _problem(c.post("/patients/n1/outcome", json={"outcome": "no_sepsis", "recorded_by": "a\x00b"}, headers=cli),
                 "recorded_by", "NUL")
        raw = '{"by": "x\\ud800", "reason": "confirmed"}'  # a lone surrogate cannot be stored as UTF-8
        _problem(c.post(f"/alarms/{alarm}/ack", content=raw, headers={**cli, "content-type": "application/json"}),
                 "by", "unicode")
        _problem(c.get("/patients/a%00b", headers=hdr("viewer")), "patient_id")
        _problem(c.get("/alarms", params={"patient_id": "a\x00b"}, headers=hdr("viewer")), "patient_id")
        assert c.get("/alarms", headers=hdr("viewer")).json()[0]["state"] == "open"
        assert c.get("/patients/n1", headers=hdr("viewer")).json()["outcome"] is None


@pytest.mark.parametrize("path, body, field", [
    ("/predict", obs("s1", 0, HR=True), "vitals.HR"),
    ("/predict", obs("s1", 0, HR="80"), "vitals.HR"),
    ("/predict", {"patient_id": "s1", "timestamp": 1709280000, "vitals": {}}, "timestamp"),
    ("/predict", {"patient_id": "s1", "timestamp": "1709280000", "vitals": {}}, "timestamp"),
    ("/predict", {"patient_id": 7, "timestamp": "2024-03-01T08:00:00Z", "vitals": {}}, "patient_id"),
    ("/patients", {"patient_id": "s2", "gender": False, "icu_admit_time": "2024-03-01T08:00:00Z"}, "gender"),
    ("/patients", {"patient_id": "s2", "gender": 1, "age": True, "icu_admit_time": "2024-03-01T08:00:00Z"}, "age"),
    ("/patients", {"patient_id": "s2", "age": "70", "icu_admit_time": "2024-03-01T08:00:00Z"}, "age"),
    ("/patients", {"patient_id": "s2", "hosp_adm_time": False, "icu_admit_time": "2024-03-01T08:00:00Z"}, "hosp_adm_time"),
    ("/patients", {"patient_id": "s2", "icu_admit_time": 0}, "icu_admit_time"),
])
def test_numbers_and_booleans_are_strict(client, path, body, field):
    _problem(client.post(path, json=body, headers=hdr("ingest")), field)
    assert client.get("/patients", headers=hdr("viewer")).json() == []


def test_strict_types_on_outcome_snooze_and_queries(db_url, models_root):
    with client_for(db_url, models_root, model="always") as c:
        alarm = c.post("/predict", json=obs("s3", 0, HR=80), headers=hdr("ingest")).json()["alarm_id"]
        cli = hdr("clinician")
        _problem(c.post("/patients/s3/outcome", json={"outcome": "no_sepsis", "discharged_at": 0}, headers=cli),
                 "discharged_at", "ISO 8601")
        _problem(c.post(f"/alarms/{alarm}/snooze", json={"by": "x", "minutes": "5"}, headers=cli), "minutes")
        _problem(c.post(f"/alarms/{alarm}/snooze", json={"by": "x", "minutes": True}, headers=cli), "minutes")
        for q in ({"until": "0.5"}, {"since": "1709280000"}, {"since": "yesterday"}):
            _problem(c.get("/alarms", params=q, headers=hdr("viewer")), next(iter(q)), "ISO 8601")
        _problem(c.get("/stats", params={"since": "0"}, headers=hdr("viewer")), "since", "ISO 8601")
        assert c.get("/patients/s3", headers=hdr("viewer")).json()["outcome"] is None


def test_json_integers_are_still_numbers(client):
    r = client.post("/predict", json=obs("i1", 0, HR=80, Gender=1), headers=hdr("ingest"))
    assert r.status_code == 200, r.text
    assert client.get("/patients/i1", headers=hdr("viewer")).json()["timeline"][0]["vitals"] == {"HR": 80.0, "Gender": 1.0}
    r = client.post("/patients", json={"patient_id": "i2", "age": 70, "gender": 0, "hosp_adm_time": -2,
                                       "icu_admit_time": "2024-03-01T08:00:00+02:00"}, headers=hdr("ingest"))
    assert r.status_code == 201, r.text


# -- error bodies capped -------------------------------------------------------------------------

def test_many_problems_answer_the_first_20_and_the_count(client):
    bad = {"HR": 4e6, "O2Sat": 1.4e6, "Temp": -9e6, "Gender": 2, "Sodium": 40}
    items = [obs(f"c{i}", 0, **bad) for i in range(200)]
    r = client.post("/predict/batch", json={"observations": items}, headers=hdr("ingest"))
    body = r.json()
    assert r.status_code == 422
    assert len(body["errors"]) == 20 and body["error_count"] == 200 * 5
    assert body["errors"][0] == {"field": "observations.0.vitals.HR", "reason": body["errors"][0]["reason"]}
    assert "and 980 more (1000 problems in all)" in body["detail"]
    assert len(r.content) < 10_000


def test_a_flood_of_unknown_names_gets_a_small_answer(client):
    vitals = {f"X{i}": 1.0 for i in range(50_000)}
    r = client.post("/predict", json={"patient_id": "f1", "timestamp": "2024-03-01T08:00:00Z", "vitals": vitals},
                    headers=hdr("ingest"))
    assert r.status_code == 422 and len(r.content) < 2_000, (r.status_code, len(r.content))
    assert r.json()["errors"][0]["field"] == "vitals" and "40" in r.json()["errors"][0]["reason"]


def test_a_long_variable_name_is_not_echoed(client):
    r = client.post("/predict", json=obs("f2", 0, **{"X" * 100_000: 1}), headers=hdr("ingest"))
    assert r.status_code == 422 and len(r.content) < 2_000


# -- fairness: a cap on rows per batch, a cap on body size ---------------------------------------

def test_batch_over_the_row_cap_is_413_naming_the_limit(db_url, models_root):
    with client_for(db_url, models_root, max_batch_rows=5) as c:
        items = [obs("b1", h, HR=80) for h in range(6)]
        r = c.post("/predict/batch", json={"observations": items}, headers=hdr("ingest"))
        assert r.status_code == 413, r.text
        assert "at most 5" in r.json()["detail"] and r.json()["errors"][0]["field"] == "observations"
        assert c.get("/patients/b1", headers=hdr("viewer")).status_code == 404  # nothing stored
        assert c.post("/predict/batch", json={"observations": items[:5]}, headers=hdr("ingest")).status_code == 200
        # the key is checked first: no key, no row count
        assert c.post("/predict/batch", json={"observations": items}).status_code == 401
        spec = c.get("/openapi.json").json()
        assert spec["components"]["schemas"]["BatchRequest"]["properties"]["observations"]["maxItems"] == 5


def test_the_row_cap_must_lie_within_the_schema_ceiling(sqlite_url, models_root):
    with pytest.raises(ValueError, match="max_batch_rows"):
        create_app(make_settings(sqlite_url, models_root, max_batch_rows=20001))


def test_body_over_the_limit_is_413_before_parsing(sqlite_url, models_root):
    with client_for(sqlite_url, models_root, max_body_bytes=2000) as c:
        small = obs("l1", 0, HR=80)
        assert c.post("/predict", json=small, headers=hdr("ingest")).status_code == 200
        big = {"patient_id": "l2", "timestamp": "2024-03-01T08:00:00Z", "vitals": {"HR": 80}, "pad": "x" * 3000}
        r = c.post("/predict", json=big, headers=hdr("ingest"))
        assert r.status_code == 413 and "2000 bytes" in r.json()["detail"]
        raw = json.dumps(big).encode()
        chunked = c.post("/predict", content=iter([raw[:1500], raw[1500:]]),  # no Content-Length: chunked
                         headers={**hdr("ingest"), "content-type": "application/json"})
        assert chunked.status_code == 413
        chunks = json.dumps(obs("l3", 0, HR=80)).encode()
        ok = c.post("/predict", content=iter([chunks[:10], chunks[10:]]),
                    headers={**hdr("ingest"), "content-type": "application/json"})
        assert ok.status_code == 200, ok.text
        assert [p["patient_id"] for p in c.get("/patients", headers=hdr("viewer")).json()] == ["l1", "l3"]
