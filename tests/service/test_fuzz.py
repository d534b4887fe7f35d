"""Schema fuzzing: schemathesis sends what the published OpenAPI allows (and, in its negative
mode, what it does not) to every operation, on SQLite and on PostgreSQL, with an admin key so that
the keyed routes are reached. Any 5xx fails, and so does any answer the OpenAPI does not document:
an undocumented status code, another content type, a body that does not fit the documented schema.

Bounded in time: a fixed number of examples per operation (SEPSIS_FUZZ_EXAMPLES, default 25) and a
deadline per example; no example database is kept between runs.
"""
from __future__ import annotations

import datetime as dt
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from openapi_spec_validator import validate
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from service.app import create_app
from service.config import Settings
from tests.service.conftest import client_for, hdr, obs

EXAMPLES = int(os.environ.get("SEPSIS_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The spec the service publishes with its default settings (building it needs no database).
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture
def fuzz_client(db_url, models_root):
    """A service whose model alarms on every observation, with a few patients and alarms stored, so
    that fuzzed ids (small integers, the documented example id) meet real rows as well as missing ones."""
    with client_for(db_url, models_root, model="always") as c:
        for k, pid in enumerate(("p000001", "0", "A")):
            assert c.post("/predict", json=obs(pid, k, HR=90), headers=hdr("ingest")).status_code == 200
        c.post("/patients", json={"patient_id": "admitted", "icu_admit_time": "2024-03-01T08:00:00Z"}, headers=hdr())
        yield c


def send(client, case):
    """The generated request through the test client, with the admin key in place of any generated one."""
    kw = case.as_transport_kwargs(base_url="http://testserver")
    headers = {k: v for k, v in kw.get("headers", {}).items() if k.lower() != "x-api-key"}
    headers["X-API-Key"] = hdr("admin")["X-API-Key"]
    body = {}
    if "json" in kw:
        body["json"] = kw["json"]
    elif kw.get("data") is not None:
        body["content"] = kw["data"]
    return client.request(kw["method"], kw["url"], params=kw.get("params"), headers=headers,
                          cookies=kw.get("cookies") or None, **body)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=dt.timedelta(seconds=10), database=None, derandomize=False,
          phases=[Phase.explicit, Phase.generate, Phase.shrink],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_operation_answers_as_documented(case, fuzz_client):
    response = send(fuzz_client, case)
    case.validate_response(response, checks=CHECKS)


ANY_KEY = {"/whoami"}


@pytest.mark.parametrize("config", [Settings(), Settings(max_batch_rows=20000)])
def test_published_openapi_is_valid_and_documents_every_error(config):
    spec = create_app(config).openapi()
    validate(spec)  # OpenAPI 3.1 and its JSON Schema dialect
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key", "description": spec["components"]["securitySchemes"]
        ["APIKeyHeader"]["description"]}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            if op.get("security"):
                # every keyed route needs a role, except what any valid key may ask about itself
                assert ({"401", "422"} if path in ANY_KEY else {"401", "403", "422"}) <= codes, (method, path, codes)
            if "requestBody" in op:
                assert {"400", "413", "422"} <= codes, (method, path, codes)
            if "{" in path:
                assert "404" in codes, (method, path, codes)
            for code in codes - {"200", "201"}:
                if code != "503":
                    assert op["responses"][code]["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ApiError"}, (method, path, code)
    assert set(spec["paths"]["/predict/batch"]["post"]["responses"]) >= {"409", "413"}
    rows = spec["components"]["schemas"]["BatchRequest"]["properties"]["observations"]
    assert rows["maxItems"] == config.max_batch_rows
    assert "prefixItems" not in str(spec)  # schemathesis and OpenAPI 3.0 tools cannot read it
