"""FHIR R4 in and out (docs/fhir.md): POST /fhir (a transaction or batch Bundle) and
/fhir/Observation feed the model through the JSON API's own paths; GET /fhir/RiskAssessment and
/fhir/Flag read risks and alarms back. Refusals of FHIR content are OperationOutcomes
(application/fhir+json); a missing key, a role's refusal and a body over the size limit answer as
everywhere else in the service (ApiError, application/json)."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from models.fhir_codes import load_codes
from service.api.deps import Ingest, ServicesDep, Viewer
from service.fhir import reads, resources
from service.fhir.mapping import Mapped, map_entries
from service.fhir.outcome import Problem, Refusal, operation_outcome
from service.fhir.reading import Entry, media_type_ok, parse_json, read_bundle, read_resource
from service.fhir.store import store

FHIR_JSON = "application/fhir+json"
router = APIRouter(prefix="/fhir", tags=["fhir"])
# Read when the service starts: a missing or broken table fails the start, not every FHIR request.
CODES = load_codes()


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


_RESOURCE = {"type": "object", "required": ["resourceType"],
             "properties": {"resourceType": {"type": "string"}}, "additionalProperties": True}
_OUTCOME = {"type": "object", "required": ["resourceType", "issue"],
            "properties": {"resourceType": {"const": "OperationOutcome"}, "issue": {"type": "array", "items": {"type": "object"}}}}
_WHY = {400: "the body is not JSON (an OperationOutcome)",
        401: "missing, unknown or revoked API key (ApiError)",
        403: "the key's role may not do this (ApiError)",
        409: "conflicts with what is stored (an OperationOutcome naming the entry and element); nothing was stored",
        413: "the body is over SEPSIS_MAX_BODY_BYTES (ApiError), or the bundle holds more scored observations than "
             "SEPSIS_MAX_BATCH_ROWS (an OperationOutcome)",
        415: "the body is not application/fhir+json or application/json (an OperationOutcome)",
        422: "invalid: an OperationOutcome naming each resource (entry index, type, id), element (FHIRPath) and "
             "reason for FHIR content; ApiError for a query parameter; nothing was stored"}


def _errors(*codes: int) -> dict:
    """Each status with both bodies it can come as: the service's ApiError (application/json:
    authentication, size, query parameters) and FHIR's OperationOutcome (application/fhir+json)."""
    return {code: {"description": _WHY[code], "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}},
        FHIR_JSON: {"schema": _OUTCOME}}} for code in codes}


def _ok(description: str, status: int = 200) -> dict:
    return {status: {"description": description, "content": {FHIR_JSON: {"schema": _RESOURCE}}}}


_BODY = {"requestBody": {"required": True, "content": {FHIR_JSON: {"schema": _RESOURCE}, "application/json": {"schema": _RESOURCE}}}}
_POST_ERRORS = _errors(400, 401, 403, 409, 413, 415, 422)


def _refused(err: Refusal) -> FhirResponse:
    return FhirResponse(operation_outcome(err.problems), status_code=err.status)


async def _body(request: Request) -> bytes | None:
    """The raw body, None when its media type is not FHIR JSON (the route answers 415)."""
    if not media_type_ok(request.headers.get("content-type")):
        return None
    return await request.body()


Body = Annotated[bytes | None, Depends(_body)]
_UNSUPPORTED = Refusal(415, [Problem("Bundle", "send the body as application/fhir+json (or application/json)",
                                     code="not-supported")])


def _answer(mapped: Mapped, entries: list[Entry], results, created: dict[str, bool], kind: str) -> dict:
    """The transaction-response (or batch-response): one entry per request entry, in order."""
    out = []
    for (what, key), entry in zip(mapped.answers, entries):
        if what == "Patient":
            response = {"status": "201 Created" if created.get(key) else "200 OK", "location": f"Patient/{key}"}
        elif what == "Observation":
            r = results[key]
            rid = resources.observation_id(r.patient_id, r.timestamp)
            alarm = f", alarm {r.alarm_id} raised" if r.alarm_id is not None else ""
            response = {"status": "200 OK" if r.duplicate else "201 Created", "location": f"Observation/{rid}",
                        "outcome": {"resourceType": "OperationOutcome", "issue": [{
                            "severity": "information", "code": "informational",
                            "diagnostics": f"scored by {r.model} version {r.model_version}: risk {r.risk:.6f} "
                                           f"(threshold {r.threshold:g}){alarm}; RiskAssessment/{rid}"}]}}
        elif what == "skipped":
            response = {"status": "200 OK", "outcome": {"resourceType": "OperationOutcome", "issue": [{
                "severity": "information", "code": "informational",
                "diagnostics": "no value (dataAbsentReason): nothing was fed to the model"}]}}
        else:  # Encounter (stored as the patient's admission) and Location (read for the unit)
            response = {"status": "200 OK"}
        out.append({"response": response})
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": out}


@router.post("", response_class=FhirResponse, dependencies=[Ingest], openapi_extra=_BODY,
             responses={**_ok("a transaction-response (or batch-response) Bundle: one entry per request entry with "
                              "its status and location; each scored Observation's outcome gives the risk and "
                              "RiskAssessment id"), **_POST_ERRORS})
def post_bundle(services: ServicesDep, body: Body):
    """A FHIR R4 Bundle (transaction or batch) of Patient, Encounter (the ICU stay), Location and
    LOINC-coded Observation resources. One patient's Observations at one effectiveDateTime are
    scored as one observation. All or nothing, a batch too: a refused bundle stores nothing."""
    try:
        if body is None:
            raise _UNSUPPORTED
        kind, entries = read_bundle(parse_json(body), services.settings.max_batch_rows)
        mapped = map_entries(entries, CODES)
        results, created = store(services, mapped)
    except Refusal as err:
        return _refused(err)
    return FhirResponse(_answer(mapped, entries, results, created, kind))


@router.post("/Observation", response_class=FhirResponse, dependencies=[Ingest], openapi_extra=_BODY,
             responses={**_ok("the observation was already stored: its RiskAssessment"),
                        **_ok("scored: the RiskAssessment of the observation (Location: the stored Observation)", 201),
                        **_POST_ERRORS})
def post_observation(services: ServicesDep, body: Body):
    """One LOINC-coded Observation, scored at once (its patient's first observation admits them)."""
    try:
        if body is None:
            raise _UNSUPPORTED
        entry, problems = read_resource(parse_json(body), "Observation", ("Observation",))
        if problems:
            raise Refusal(422, problems)
        mapped = map_entries([entry], CODES)
        if not mapped.observations:
            raise Refusal(422, [Problem("Observation.value[x]", "no value to score (dataAbsentReason)", entry.label,
                                        "required")])
        results, _ = store(services, mapped)
    except Refusal as err:
        return _refused(err)
    r = results[0]
    ra = resources.risk_assessment(r.patient_id, r.timestamp, r.risk, r.threshold, r.model, r.model_version, r.alarm_id)
    return FhirResponse(ra, status_code=200 if r.duplicate else 201, headers={"Location": f"Observation/{ra['id']}"})


SubjectQuery = Annotated[str, Query(pattern=r"^Patient/[A-Za-z0-9][A-Za-z0-9._:-]*$", max_length=72,
                                    description="Patient/ID")]


def _patient(subject: str) -> str:
    return subject.removeprefix("Patient/")


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


@router.get("/RiskAssessment", response_class=FhirResponse, dependencies=[Viewer],
            responses={**_ok("a searchset Bundle of RiskAssessment, one per scored observation, in time order"),
                       **_errors(401, 403, 422)})
def risk_assessments(request: Request, services: ServicesDep, subject: SubjectQuery):
    """Every scored observation of the patient as a RiskAssessment, in time order (an unknown
    patient: none)."""
    found = reads.risk_assessments(services.factory, _patient(subject))
    return FhirResponse(resources.searchset(found, _base(request)))


@router.get("/Flag", response_class=FhirResponse, dependencies=[Viewer],
            responses={**_ok("a searchset Bundle of Flag: the alarms, active until resolved, newest first"),
                       **_errors(401, 403, 422)})
def flags(request: Request, services: ServicesDep, subject: Annotated[str | None, SubjectQuery] = None,
          status: Literal["active", "inactive"] | None = None,
          count: Annotated[int, Query(alias="_count", ge=1, le=10000)] = 500):
    """Alarms as Flags: status active = open, acknowledged or snoozed; inactive = resolved."""
    state = {"active": "active", "inactive": "resolved", None: None}[status]
    alarms = services.records.alarms(state, _patient(subject) if subject else None, None, None, count)
    return FhirResponse(resources.searchset([resources.flag(a) for a in alarms], _base(request)))
