"""FHIR R4 in and out (docs/fhir.md): POST /fhir (a transaction or batch Bundle) and
/fhir/Observation feed the model through the JSON API's own paths; GET reads Patient, Observation,
Encounter (the stay, by the sender's Encounter id), RiskAssessment and Flag by id, searches RiskAssessment and Flag (service/fhir/search.py), and
/fhir/metadata states what is supported. Refusals of FHIR content and of search parameters are
OperationOutcomes (application/fhir+json); a missing key, a role's refusal and a body over the size limit answer as
everywhere else in the service (ApiError, application/json)."""
from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from models.fhir_codes import load_codes
from service.api.deps import Caller, Ingest, ServicesDep, Viewer
from service.fhir import queries, resources, search
from service.fhir.capability import capability_statement
from service.fhir.mapping import Mapped, map_entries
from service.fhir.outcome import Problem, Refusal, issue, operation_outcome
from service.fhir.reading import Entry, media_type_ok, parse_json, read_bundle, read_resource
from service.fhir.store import store
from service.patients.status import placed

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
        if entry.ignored:
            out.append({"response": {"status": "200 OK", "outcome": {"resourceType": "OperationOutcome", "issue": [
                issue(Problem(entry.path, entry.ignored, entry.label, "informational"), "information")]}}})
            continue
        if what == "Patient":
            response = {"status": "201 Created" if created.get(key) else "200 OK", "location": f"Patient/{key}"}
        elif what == "Observation":
            r = results[key]
            rid = resources.observation_id(r.patient_id, r.hour_start)
            alarm = f", alarm {r.alarm_id} raised" if r.alarm_id is not None else ""
            response = {"status": "200 OK" if r.duplicate else "201 Created", "location": f"Observation/{rid}",
                        "outcome": {"resourceType": "OperationOutcome", "issue": [{
                            "severity": "information", "code": "informational",
                            "diagnostics": f"scored by {r.model} version {r.model_version}: risk {r.risk:.6f} "
                                           f"(threshold {r.threshold:g}){alarm}; RiskAssessment/{rid}"}]}}
            group = mapped.groups[key]
            for w in r.warnings:  # accepted as charted: the sender hears why the value is doubtful
                name = w.field.removeprefix("vitals.")
                where, label = group.sources.get(name, group.times[0])
                response["outcome"]["issue"].append(issue(Problem(where, f"{name}: {w.reason}", label, "value"),
                                                          "warning"))
        elif what == "skipped":
            response = {"status": "200 OK", "outcome": {"resourceType": "OperationOutcome", "issue": [{
                "severity": "information", "code": "informational",
                "diagnostics": "no value (dataAbsentReason): nothing was fed to the model"}]}}
        else:  # Encounter (stored as the patient's admission) and Location (read for the unit)
            response = {"status": "200 OK"}
        if notes := mapped.notes.get(entry.path):
            outcome = response.setdefault("outcome", {"resourceType": "OperationOutcome", "issue": []})
            outcome["issue"] += [issue(n, "information") for n in notes]
        out.append({"response": response})
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": out}


@router.post("", response_class=FhirResponse, dependencies=[Ingest], openapi_extra=_BODY,
             responses={**_ok("a transaction-response (or batch-response) Bundle: one entry per request entry with "
                              "its status and location; each scored Observation's outcome gives the risk and "
                              "RiskAssessment id"), **_POST_ERRORS})
def post_bundle(services: ServicesDep, body: Body, caller: Caller):
    """A FHIR R4 Bundle (transaction or batch) of Patient, Encounter (the ICU stay), Location and
    LOINC-coded Observation resources. Each Observation's values are filed in the hour of the
    stay they were measured in (several in one hour: their median), known by the Observation's id:
    an amended, corrected or entered-in-error one replaces them. All or nothing, a batch too: a
    refused bundle stores nothing."""
    try:
        if body is None:
            raise _UNSUPPORTED
        kind, entries = read_bundle(parse_json(body), services.settings.max_batch_rows)
        mapped = map_entries(entries, CODES)
        results, created = store(services, mapped, caller)
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
    with services.engine.connect() as conn:
        row = queries.scored(conn, resources.observation_id(r.patient_id, r.hour_start))
        senders = queries.senders_by_hour(conn, [row]) if row is not None else {}
    ra = resources.risk_assessment(r.patient_id, r.hour_start, r.risk, r.threshold, r.model, r.model_version, r.alarm_id,
                                   senders=senders.get((r.patient_id, r.hour_start), []),
                                   stay=queries.stay(row) if row is not None else None,
                                   monitored=row is None or queries.monitored(row))
    ra["note"] += [{"text": f"warning: {w.field.removeprefix('vitals.')} {w.reason}"} for w in r.warnings]
    return FhirResponse(ra, status_code=200 if r.duplicate else 201, headers={"Location": f"Observation/{ra['id']}"})


_READ_WHY = {400: "an unknown, repeated, empty or malformed search parameter: an OperationOutcome naming each "
                  "(unknown parameters are refused, never ignored)",
             401: "missing, unknown or revoked API key (ApiError)",
             403: "the key's role may not do this (ApiError)",
             404: "no such resource (an OperationOutcome; ApiError for a path that names no resource type)",
             422: "listed as on every keyed route; a search parameter is never a 422 (see 400)"}


def _read_errors(*codes: int) -> dict:
    """A read's or search's error statuses, each with both bodies as on the POST routes: its own
    refusals are OperationOutcomes, the key's (401, 403) the service's ApiError."""
    return {code: {"description": _READ_WHY[code], "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}, FHIR_JSON: {"schema": _OUTCOME}}}
        for code in codes}


def _parameters(resource: str) -> dict:
    """The search parameters in the OpenAPI, from the table the search parses."""
    def schema(p: search.Param) -> dict:
        if p.name == "_count":
            return {"type": "integer", "minimum": 0, "maximum": search.MAX_COUNT}
        if p.name == "_offset":
            return {"type": "integer", "minimum": 0, "maximum": search.MAX_OFFSET}
        return {"type": "string"}
    return {"parameters": [{"name": p.name, "in": "query", "required": False, "description": p.doc,
                            "schema": schema(p)} for p in search.SEARCHES[resource] + search.PAGING]}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _not_found(what: str) -> FhirResponse:
    return FhirResponse(operation_outcome([Problem(what.split("/")[0], f"no {what[:120]} here", code="not-found")],
                                          stored_nothing=False), status_code=404)


def _parsed(request: Request, resource: str) -> search.Search | FhirResponse:
    try:
        return search.parse(resource, request.query_params.multi_items())
    except Refusal as err:
        return FhirResponse(operation_outcome(err.problems, stored_nothing=False), status_code=err.status)


def _risk(row, senders: dict | None = None) -> dict:
    return resources.risk_assessment(row.patient_id, row.ts, row.risk, row.threshold, row.model_name,
                                     row.model_version, row.alarm_id, row.received_at,
                                     (senders or {}).get((row.patient_id, row.ts), []), queries.stay(row),
                                     queries.monitored(row))


# Read when the router is built: the statement's date (a server's capabilities change with its code).
_STARTED = dt.datetime.now(dt.timezone.utc)


@router.get("/metadata", response_class=FhirResponse,
            responses=_ok("the CapabilityStatement: interactions, search parameters and formats this server supports"))
def metadata(request: Request):
    """What this FHIR server does. Open without a key, as FHIR clients fetch it first to learn
    the server; it holds no patient data."""
    return FhirResponse(capability_statement(_base(request), request.app.title, request.app.version, _STARTED))


@router.get("/RiskAssessment", response_class=FhirResponse, dependencies=[Viewer], openapi_extra=_parameters("RiskAssessment"),
            operation_id="risk_assessments_fhir_RiskAssessment_get",  # as published before: generated clients keep working
            responses={**_ok("a searchset Bundle of RiskAssessment, one per scored observation, in time order, "
                             "one page of them (Bundle.total counts all; Bundle.link next and previous page)"),
                       **_read_errors(400, 401, 403, 422)})
def search_risk_assessments(request: Request, services: ServicesDep):
    """Scored observations as RiskAssessments, by patient and date (docs/fhir.md)."""
    found = _parsed(request, "RiskAssessment")
    if isinstance(found, FhirResponse):
        return found
    with services.engine.connect() as conn:
        total, rows = queries.risk_assessments(conn, found)
        senders = queries.senders_by_hour(conn, rows)
    return FhirResponse(search.searchset([_risk(r, senders) for r in rows], total, found, _base(request)))


@router.get("/Flag", response_class=FhirResponse, dependencies=[Viewer], openapi_extra=_parameters("Flag"),
            operation_id="flags_fhir_Flag_get",  # as published before
            responses={**_ok("a searchset Bundle of Flag: the alarms, newest first, one page of them"),
                       **_read_errors(400, 401, 403, 422)})
def search_flags(request: Request, services: ServicesDep):
    """Alarms as Flags, by patient, date and status: active = open, acknowledged or snoozed;
    inactive = resolved."""
    found = _parsed(request, "Flag")
    if isinstance(found, FhirResponse):
        return found
    with services.engine.connect() as conn:
        total, rows = queries.flags(conn, found)
    out = [resources.flag(r, queries.last_changed(r), queries.stay(r)) for r in rows]
    return FhirResponse(search.searchset(out, total, found, _base(request)))


FhirId = Annotated[str, Path(description="the resource's logical id")]
_READ = {"dependencies": [Viewer], "response_class": FhirResponse}


@router.get("/Patient/{rid}", **_READ, responses={**_ok("the Patient"), **_read_errors(401, 403, 404, 422)})
def read_patient(services: ServicesDep, rid: FhirId):
    """A stored patient: the id (and the service's own in `identifier`) and gender."""
    with services.engine.connect() as conn:
        row = queries.patient(conn, rid)
    if row is None or resources.patient_id(row.id) != rid:
        return _not_found(f"Patient/{rid}" + (f" (patient {row.id}'s FHIR id is {resources.patient_id(row.id)})"
                                              if row is not None else ""))
    return FhirResponse(resources.patient(row.id, row.gender, row.created_at))


@router.get("/Observation/{rid}", **_READ, responses={**_ok("the stored observation: the values of one patient at "
                                                            "one time, as components"), **_read_errors(401, 403, 404, 422)})
def read_observation(services: ServicesDep, rid: FhirId):
    """An hour's values as the model stepped them, by the id the ingest answered (`{patient}-{UTC
    hour start}`), or a sender's Observation by its own id (as a RiskAssessment's basis names it)."""
    with services.engine.connect() as conn:
        row = queries.scored(conn, rid)
        sent = queries.sender_observation(conn, rid) if row is None else []
    if row is not None:
        return FhirResponse(resources.observation(row.patient_id, row.ts, row.vitals, row.received_at, CODES))
    if sent:
        return FhirResponse(resources.sent_observation(rid, sent, CODES))
    return _not_found(f"Observation/{rid}")


@router.get("/Encounter/{rid}", **_READ, responses={**_ok("the ICU stay under the sender's Encounter id"),
                                                    **_read_errors(401, 403, 404, 422)})
def read_encounter(services: ServicesDep, rid: FhirId):
    """The stay a RiskAssessment's or Flag's `encounter.reference` names, by the id its Encounter
    was sent with: status, class, subject, period (ICU admission to discharge) and the unit. An
    Encounter sent with an identifier only has no id here to read."""
    with services.engine.connect() as conn:
        row = queries.encounter(conn, rid)
    if row is None:
        return _not_found(f"Encounter/{rid}")
    unit, _ = placed(row)
    return FhirResponse(resources.stay_encounter(row, unit))


@router.get("/RiskAssessment/{rid}", **_READ, responses={**_ok("the RiskAssessment of one scored observation"),
                                                         **_read_errors(401, 403, 404, 422)})
def read_risk_assessment(services: ServicesDep, rid: FhirId):
    """The risk of one stored observation (the same id as its Observation)."""
    with services.engine.connect() as conn:
        row = queries.scored(conn, rid)
        senders = queries.senders_by_hour(conn, [row]) if row is not None else {}
    if row is None:
        return _not_found(f"RiskAssessment/{rid}")
    return FhirResponse(_risk(row, senders))


@router.get("/Flag/{rid}", **_READ, responses={**_ok("the alarm as a Flag"), **_read_errors(401, 403, 404, 422)})
def read_flag(services: ServicesDep, rid: FhirId):
    """One alarm by its id."""
    with services.engine.connect() as conn:
        row = queries.flag(conn, rid)
    if row is None:
        return _not_found(f"Flag/{rid}")
    return FhirResponse(resources.flag(row, queries.last_changed(row), queries.stay(row)))
