"""The published OpenAPI says what the validation enforces: a body (or query parameter) the schema
allows is one the service accepts, and one it refuses the schema refuses too, for the rules that a
schema can state: the time range and zone, NUL in free text, the variables and their ranges, and
onset_time given exactly when the outcome is sepsis."""
from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import TypeAdapter, ValidationError

from service import schemas
from service.app import create_app
from service.config import Settings

SPEC = create_app(Settings()).openapi()
T = "2024-05-01T08:00:00Z"


def _schema_allows(schema: dict, value) -> bool:
    root = {**schema, "components": SPEC["components"]}
    return Draft202012Validator(root, format_checker=FormatChecker()).is_valid(value)


def _model_allows(model, value) -> bool:
    try:
        TypeAdapter(model).validate_python(value)
    except ValidationError:
        return False
    return True


def _obs(**kw) -> dict:
    return {"patient_id": "p1", "timestamp": T, "vitals": {"HR": 80}, **kw}


CASES = [
    (schemas.Observation, _obs()),
    (schemas.Observation, _obs(timestamp="2199-12-31T23:59:59.5+00:00")),
    (schemas.Observation, _obs(timestamp="1900-01-01T00:00:00-00:00")),
    (schemas.Observation, _obs(timestamp="1899-12-31T23:59:59Z")),
    (schemas.Observation, _obs(timestamp="2200-01-01T00:00:00Z")),
    (schemas.Observation, _obs(timestamp="0001-01-01T00:00:00Z")),
    (schemas.Observation, _obs(timestamp="9999-12-31T23:59:59+14:00")),
    (schemas.Observation, _obs(timestamp="2024-05-01T08:00:00")),  # no zone
    (schemas.Observation, _obs(vitals={"HR": 300, "Gender": 1, "pH": 6.5})),
    (schemas.Observation, _obs(vitals={"HR": 301})),
    (schemas.Observation, _obs(vitals={"pH": 6.4})),
    (schemas.Observation, _obs(vitals={"Gender": 0.5})),
    (schemas.Observation, _obs(vitals={"ICULOS": 3})),  # derived by the service
    (schemas.Observation, _obs(vitals={"Heart rate": 80})),
    (schemas.Admission, {"patient_id": "p1", "icu_admit_time": "1850-01-01T00:00:00Z"}),
    (schemas.Admission, {"patient_id": "p1", "icu_admit_time": T, "bed": "B\x0012"}),
    (schemas.Admission, {"patient_id": "p1", "icu_admit_time": T, "bed": "B12"}),
    (schemas.AckIn, {"by": "nurse\x00", "reason": "confirmed"}),
    (schemas.AckIn, {"by": "nurse", "reason": "confirmed", "note": "called\x00"}),
    (schemas.AckIn, {"by": "nurse", "reason": "confirmed", "note": "called the registrar"}),
    (schemas.OutcomeIn, {"outcome": "sepsis", "onset_time": T}),
    (schemas.OutcomeIn, {"outcome": "sepsis"}),
    (schemas.OutcomeIn, {"outcome": "sepsis", "onset_time": None}),
    (schemas.OutcomeIn, {"outcome": "no_sepsis"}),
    (schemas.OutcomeIn, {"outcome": "no_sepsis", "onset_time": None, "discharged_at": T}),
    (schemas.OutcomeIn, {"outcome": "no_sepsis", "onset_time": T}),
    (schemas.OutcomeIn, {"outcome": "sepsis", "onset_time": "2250-01-01T00:00:00Z"}),
]


@pytest.mark.parametrize("model,body", CASES, ids=[f"{m.__name__}-{i}" for i, (m, _) in enumerate(CASES)])
def test_the_published_schema_allows_what_validation_allows(model, body):
    published = {"$ref": f"#/components/schemas/{model.__name__}"}
    assert _schema_allows(published, body) == _model_allows(model, body), body


@pytest.mark.parametrize("value", ["2024-05-01T08:00:00Z", "1800-01-01T00:00:00Z", "2024-05-01T08:00:00",
                                  "2300-01-01T00:00:00+01:00"])
def test_a_time_query_parameter_is_published_as_validated(value):
    [since] = [p for p in SPEC["paths"]["/alarms"]["get"]["parameters"] if p["name"] == "since"]
    assert _schema_allows(since["schema"], value) == _model_allows(schemas.Timestamp, value)
