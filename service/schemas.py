"""The API's request and response bodies (pydantic v2)."""
from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, StringConstraints,
                      field_validator, model_validator)

from pydantic_core import PydanticCustomError

from service.ranges import BINARY, DERIVED, FEATURES, HARD_LIMIT, LIMITS, check_value, implausible


def field_problems(problems: list[tuple[str, str]]) -> PydanticCustomError:
    """One validation error that names several fields, relative to where it was raised (a vitals
    name inside `vitals`, a field of the model): the error handler reads them from its context."""
    return PydanticCustomError("field_problems", "{summary}",
                               {"summary": "; ".join(f"{f}: {r}" for f, r in problems), "problems": problems})

# -- bounded input types --------------------------------------------------------------------------
# Every input is bounded here, at the schema, so that nothing out of range reaches the database
# (year 1 or 9999 overflowed on conversion to UTC, NUL failed on PostgreSQL, 2^63 on any driver).

UTC = dt.timezone.utc
# Both databases and Python's datetime hold far more; this is what a clinical timestamp can be.
EARLIEST = dt.datetime(1900, 1, 1, tzinfo=UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=UTC)
TIME_RANGE = f"from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} (UTC)"
# The columns are INTEGER on PostgreSQL (tables.py): an id beyond it cannot exist.
MAX_ID = 2**31 - 1
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")
_TIME_FORMAT = "must be an ISO 8601 date-time string with a time zone, e.g. 2024-05-01T08:00:00Z"


def _iso_string(value):
    """Only ISO 8601 strings: pydantic would otherwise read 0, 0.5 or "1700000000" as Unix time."""
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not _ISO.match(value):
        raise ValueError(_TIME_FORMAT)
    return value


def _sane_time(value: dt.datetime) -> dt.datetime:
    if value.utcoffset() is None:
        raise ValueError("needs a time zone (e.g. 2024-05-01T08:00:00Z)")
    # the year first: converting year 1 or 9999 with an offset to UTC overflows
    if not EARLIEST.year <= value.year < LATEST.year or not EARLIEST <= value.astimezone(UTC) < LATEST:
        raise ValueError(f"must be {TIME_RANGE}")
    return value


# What the two validators above accept, for the published schema: a year from 1900 to 2199 and a
# zone (the range is checked on the UTC instant too, which a pattern cannot say: 1900-01-01T00:30+01:00
# matches it and is refused).
TIME_PATTERN = (r"^(19|20|21)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt ]([01]\d|2[0-3]):[0-5]\d"
                r"(:[0-5]\d([.,]\d+)?)?([Zz]|[+-]([01]\d|2[0-3]):?[0-5]\d)$")
Timestamp = Annotated[dt.datetime, BeforeValidator(_iso_string), AfterValidator(_sane_time),
                      Field(description=f"ISO 8601 with a zone, e.g. 2024-05-01T08:00:00Z; {TIME_RANGE}",
                            json_schema_extra={"pattern": TIME_PATTERN})]


NO_NUL_PATTERN = "^[^\\u0000]*$"  # what _no_nul enforces, as the published schema says it


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def Text(max_length: int, min_length: int = 0):  # noqa: N802  (a type factory)
    """Free text a person types: bounded and without NUL, which PostgreSQL cannot store (pydantic
    itself refuses lone surrogates)."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length), AfterValidator(_no_nul),
                     Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]


def _not_bool(value):
    """JSON true/false are not the numbers 1/0 (pydantic's lax mode would take them)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


# A number: JSON integers are fine (80 -> 80.0), true/false and strings ("80") are not.
Number = StrictFloat
PATIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
PatientId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=PATIENT_ID_PATTERN)]
# No PhysioNet name is longer than 16 characters; a longer key is refused before it is echoed.
VariableName = Annotated[str, StringConstraints(max_length=32)]


SourceId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[!-~]+$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Observation(_In):
    patient_id: PatientId = Field(examples=["p000001"])
    timestamp: Timestamp
    vitals: dict[VariableName, Number] = Field(
        max_length=len(FEATURES),
        description="Any subset of the PhysioNet 2019 variable names (PhysioNet units); omit what was not measured. "
                    "ICULOS is derived by the service.",
        examples=[{"HR": 97, "MAP": 75.3, "Temp": 38.1}],
        json_schema_extra={"additionalProperties": False, "properties": {
            name: {"type": "number",
                   **({"enum": [0, 1]} if name in BINARY else {"exclusiveMinimum": -HARD_LIMIT,
                                                               "exclusiveMaximum": HARD_LIMIT}),
                   "description": lim.unit if name in BINARY else
                   f"{lim.unit}; plausible {lim.low:g} to {lim.high:g} (outside it: stored and scored as charted, "
                   f"with a warning)"} for name, lim in LIMITS.items() if name not in DERIVED}})

    status: Literal["final", "preliminary", "amended", "corrected", "entered-in-error"] = Field(
        "final", description="the values' status, as FHIR Observation.status names it (models/grid.py): final and "
                             "preliminary chart a value; amended or corrected replace the value of the same source "
                             "(source_id, else the same variable and timestamp); entered-in-error removes it for good")
    source_id: SourceId | None = Field(
        None, description="the sender's identifier of this message (a FHIR Observation id, a lab accession): each "
                          "value is known by it and its variable, so a later message with the same source_id amends "
                          "or removes it. Without it a value is known by its variable and timestamp.")

    @field_validator("vitals")
    @classmethod
    def _check_vitals(cls, vitals: dict[str, float]) -> dict[str, float]:
        problems = []
        for name, value in vitals.items():
            if name in DERIVED:
                problems.append((name, "is derived by the service from the ICU admission time, do not send it"))
                continue
            reason = check_value(name, value)
            if reason:
                problems.append((name, reason))
        if problems:
            raise field_problems(problems)
        return {k: float(v) for k, v in vitals.items()}


class _Out(BaseModel):
    """A response body whose producer may add fields (extend, never rename): extras pass through."""
    model_config = ConfigDict(extra="allow")


class Contribution(_Out):
    """One input behind a risk (models/explain.py). basis "value": the change in risk when the
    variable's latest value is replaced by its clinical reference (models/reference_values.csv) in
    the step that produced it, at the same age; administrative fields are compared with "not
    recorded". basis "not measured": one of the 13 sepsis-defining vital signs and labs (those with a
    documented abnormal value) never measured or last measured more than 24 h before, and the change in risk had it been measured at its reference now (only gaps that
    raise the risk are listed)."""
    feature: str = Field(examples=["Lactate"], description="PhysioNet variable name")
    value: float | None = Field(description="the value the step read (posted now, or carried from earlier); for "
                                            "basis 'not measured', the last value measured (null: never measured)")
    delta: float = Field(description="risk as posted minus risk with this value at its normal reference (basis "
                                     "'not measured': with the variable measured at its reference now): "
                                     "> 0 pushed the risk up")
    system: str | None = Field(None, examples=["cardiovascular"],
                               description="the variable's organ system (administrative for Age, Gender, units, "
                                           "HospAdmTime)")
    reference: float | None = Field(None, description="the normal value it was compared with; null for "
                                                      "administrative fields")
    unit: str | None = Field(None, examples=["mmol/L"], description="the unit of value and reference (PhysioNet's, "
                                                                    "models/reference_values.csv); null for "
                                                                    "administrative fields and for contributions "
                                                                    "stored before it was given")
    hours_since: float | None = Field(None, description="the value's age in hours at this step (0: posted now; "
                                                        "null: never measured)")
    basis: Literal["value", "not measured"] = Field(
        "value", description="'value': the variable's latest value moved the risk (compared with its reference at "
                             "the same age); 'not measured': the variable was never measured or not for more than "
                             "24 h, and a normal value measured now would lower the risk by delta (> 0 always). "
                             "Contributions stored before this field existed are 'value'")


CONTRIBUTIONS_DOC = ("the inputs behind this risk: first at most 5 values (basis 'value'), vital signs and labs "
                     "moving the risk by 0.05 points or more first, largest |delta| first, zero deltas left out; then "
                     "at most 2 of the 13 sepsis-defining vital signs and labs not measured for more than 24 h or never (basis 'not measured'), "
                     "only those whose gap raises the risk by 0.05 points or more, largest first (none from a model "
                     "that keeps no per-variable memory); null when the service runs with SEPSIS_EXPLAIN off or the "
                     "risk predates explanations")


KIND_DOC = ("what the alarm is (models.alarm_policy): 'raised' (a new episode), 're-alert: lockout ended' (the risk "
            "is still at or above the threshold a lockout after the previous alarm was acknowledged, or after it "
            "went unanswered), 're-alert: risk doubled' (the risk reached the unit's rise factor x the acknowledged "
            "risk), 'escalation: next tier'")


class FieldWarning(_Out):
    field: str = Field(examples=["vitals.Temp"], description="the value's field")
    reason: str = Field(description="why it is doubtful (outside the plausible range, naming it); the value was "
                                    "stored and scored as charted")


class PredictResult(BaseModel):
    patient_id: str
    timestamp: dt.datetime
    risk: float
    alarm: bool = Field(description="risk >= threshold (the patient's unit's operating point; GET /operating-points) "
                                    "in an hour at or after the patient's first measured one (the first with a vital "
                                    "sign or lab): before it nothing alarms")
    alarm_id: int | None = Field(None, description="the alarm this observation raised; null if none was raised "
                                                   "(below threshold, one is already open/acknowledged/snoozed, "
                                                   "or the patient's outcome is recorded)")
    alarm_kind: str | None = Field(None, description=KIND_DOC + "; null when no alarm was raised")
    threshold: float
    model: str
    model_version: str
    elapsed_hours: float = Field(description="hours since the previous hourly step: 0 for the stay's first hour, else 1")
    iculos: float = Field(description="the hour of the stay this observation was filed in (the model's step): "
                                      "floor(hours since ICU admission) + 1")
    duplicate: bool = Field(False, description="true when this exact observation was already stored; "
                                               "the stored result is returned and nothing changes")
    contributions: list[Contribution] | None = Field(None, description=CONTRIBUTIONS_DOC)
    hour_start: dt.datetime | None = Field(None, description="the start of the hour this observation was filed in: "
                                                             "the hourly row's (and its FHIR RiskAssessment's) time")
    latest_iculos: int | None = Field(None, description="the patient's latest hour of the stay after this request "
                                                        "(a late value's own hour is earlier)")
    latest_risk: float | None = Field(None, description="the risk of that latest hour, as revised by this request")
    revised_hours: list[int] = Field(default_factory=list, description=(
        "stored hours (ICULOS) whose risk this request changed: the values' own hour when it had been stepped, and "
        "every later hour a late or amended value re-stepped (GET /patients/{id}/observations shows each hour's "
        "first and revised risk)"))
    warnings: list[FieldWarning] = Field(default_factory=list, description=(
        "values of this observation outside their plausible range (service/ranges.py): accepted, stored and scored "
        "as charted, since the model was validated on charting that holds such values; check the sender's unit"))


# The most rows a batch may ever carry; a deployment's cap (Settings.max_batch_rows) is at most this.
MAX_BATCH_ROWS = 20000


class BatchRequest(_In):
    observations: list[Observation] = Field(min_length=1, max_length=MAX_BATCH_ROWS)


class BatchResponse(BaseModel):
    results: list[PredictResult] = Field(description="one per posted observation, in request order")
    model_runs: int = Field(description="model steps run (each covers every patient with an observation at that step)")


class Admission(_In):
    patient_id: PatientId
    age: Number | None = Field(None, ge=0, le=120, description="years")
    gender: Annotated[Literal[0, 1], BeforeValidator(_not_bool)] | None = Field(
        None, description="0 female, 1 male (PhysioNet coding)")
    unit: Literal["MICU", "SICU", "other"] | None = Field(None, description="ICU type: MICU -> Unit1, SICU -> Unit2")
    bed: Text(32, 1) | None = Field(None, description="the bed as the ward names it, e.g. 'B12' (display only)")
    hosp_adm_time: Number | None = Field(None, ge=-100000, le=24,
                                        description="hours between hospital and ICU admission (PhysioNet HospAdmTime, usually <= 0)")
    icu_admit_time: Timestamp = Field(description=f"ICU admission time; ICULOS counts from here; {TIME_RANGE}")


class AuditActor(BaseModel):
    key_id: int | None = Field(None, description="the API key the request carried (null for the service itself)")
    key_name: str | None = None
    role: str = Field(description="the key's role, or 'system' for a change the service made on its own")
    person: str | None = Field(None, description="the person's name given with the action (a station key is shared)")


class AuditEntry(BaseModel):
    id: int
    at: dt.datetime = Field(description="when the action happened, on the service clock (GET /clock)")
    recorded_at: dt.datetime = Field(description="when the row was written, on the wall clock")
    action: str = Field(description="alarm_raised, acknowledge, snooze, resolve, alarm_superseded, "
                                    "alarm_resolved_by_outcome, outcome, discharge, correction, threshold_change, model_switch")
    patient_id: str | None = None
    alarm_id: int | None = None
    unit: str | None = None
    actor: AuditActor
    note: str | None = None
    details: dict | None = Field(None, description="the action's particulars, e.g. snoozed_until, reason, minutes")


class WhoAmI(BaseModel):
    key_id: int
    key_name: str | None
    prefix: str = Field(description="the key's first characters, as listings show them")
    role: str
    permissions: list[str] = Field(description="ingest, clinician (act on alarms and outcomes), viewer, metrics, admin")


class ClockOut(BaseModel):
    mode: Literal["wall", "simulated"] = Field(description="wall: the machine's clock; simulated: the feed's time "
                                                          "(the latest observation stored) stamps actions")
    now: dt.datetime = Field(description="the service clock's time now: what an action would be stamped with")
    wall: dt.datetime = Field(description="the machine's clock")
    latest_observation: dt.datetime | None = Field(None, description="the latest observation time stored")


class AlarmOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_id: str
    raised_at: dt.datetime
    risk: float
    threshold: float
    model_name: str
    model_version: str
    state: str
    acknowledged_by: str | None = None
    acknowledged_at: dt.datetime | None = None
    ack_reason: str | None = None
    ack_note: str | None = None
    snoozed_until: dt.datetime | None = None
    snoozed_by: str | None = None
    snoozed_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    resolved_by: str | None = None
    resolve_note: str | None = Field(None, description="the resolver's note, or why the service resolved it "
                                                      "(an outcome recorded, the stay ended, superseded by a newer alarm)")
    verdict: Literal["true", "false", "unknown"] = Field(
        "unknown", description="once the outcome is known: true if raised 12 h before to 3 h after onset")
    history: list[AuditEntry] = Field(default_factory=list, description="the alarm's audit, oldest first: raised, "
                                                                        "acknowledged, snoozed, resolved, by whom and when")
    contributions: list[Contribution] | None = Field(None, description="the raising observation's: " + CONTRIBUTIONS_DOC)
    kind: str = Field("raised", description=KIND_DOC)
    previous_alarm_id: int | None = Field(None, description="the active alarm this one superseded (a re-alert's "
                                                            "acknowledged or unanswered alarm); null if none")
    late_result: bool = Field(False, description="raised when a late or amended value revised an earlier hour "
                                                 "(the risk crossed on a result that arrived after later values)")


class TimelineEntry(BaseModel):
    timestamp: dt.datetime
    vitals: dict[str, float]
    iculos: float
    elapsed_hours: float
    risk: float
    alarm: bool
    alarm_id: int | None
    model: str
    model_version: str
    contributions: list[Contribution] | None = Field(None, description=CONTRIBUTIONS_DOC)
    first_risk: float | None = Field(None, description="the hour's risk as first shown; `risk` is as last revised")
    revisions: int = Field(0, description="how many times a later value changed this hour's risk")
    revised_at: dt.datetime | None = Field(None, description="when it last changed")
    revised_by: int | None = Field(None, description="the message (GET /patients/{id}/messages) whose filing last "
                                                     "changed it: a late, amended or same-hour value")
    warnings: list[FieldWarning] = Field(default_factory=list, description="the hour's values outside their "
                                         "plausible range (stored and scored as charted)")


class MessageOut(BaseModel):
    """One value as received (service/scoring/filing.py); `value` in the model's unit."""
    model_config = ConfigDict(from_attributes=True)
    id: int
    variable: str | None = Field(description="the PhysioNet name; null for an observation posted without values")
    value: float | None
    unit: str | None
    timestamp: dt.datetime = Field(validation_alias="ts", description="when it was measured (a lab: drawn)")
    iculos: int = Field(validation_alias="hour", description="the hour of the stay it was filed in")
    status: str
    source: Literal["json", "fhir"]
    source_id: str | None = Field(description="the sender's id of the message (a FHIR Observation's), if given")
    received_at: dt.datetime
    warning: str | None = Field(None, description="why the value is doubtful (outside its plausible range); it was "
                                                 "stored and scored as charted")

    @model_validator(mode="after")
    def _warn(self):
        if self.variable in LIMITS and self.variable not in BINARY and self.value is not None:
            self.warning = implausible(self.variable, self.value)
        return self


class PatientSummary(BaseModel):
    patient_id: str
    admitted_by: str
    unit: str | None = None  # "MICU", "SICU", "other"; None when not recorded
    bed: str | None = Field(None, description="the bed given at admission, if any")
    icu_admit_time: dt.datetime | None
    first_observation: dt.datetime | None
    last_observation: dt.datetime | None
    last_measured: dt.datetime | None = Field(None, description="the latest observation that carried a vital or "
                                                               "lab value (posts with only demographics or no values "
                                                               "do not count)")
    first_measured: dt.datetime | None = Field(None, description="the start of the first hour with a vital sign or "
                                                                 "lab: the patient is monitored from it (no alarm "
                                                                 "before it; the figures count hours from it)")
    n_observations: int
    last_risk: float | None = None
    active_alarm_id: int | None = None
    outcome: str | None
    onset_time: dt.datetime | None = None
    status: Literal["monitoring", "in_treatment", "discharged"] = Field(
        "monitoring", description="monitoring until an outcome: in_treatment once sepsis is recorded (the patient "
                                  "stays listed), discharged once the stay ended or no_sepsis is recorded")


class PatientDetail(PatientSummary):
    age: float | None
    gender: float | None
    unit1: float | None
    unit2: float | None
    hosp_adm_time: float | None
    discharged_at: dt.datetime | None
    timeline: list[TimelineEntry]
    alarms: list[AlarmOut]
    audit: list[AuditEntry] = Field(default_factory=list, description="every action on this patient and its alarms, "
                                                                      "oldest first")
    bedside: Bedside | None = Field(None, description="qSOFA, SIRS, SOFA components, lactate and every variable's "
                                                      "latest value with its age, from the stored observations at the "
                                                      "service clock's now (service/patients/bedside.py)")
    threshold: float | None = Field(None, description="the alarm threshold in force for the patient's unit")
    operating_point: str | None = Field(None, description="the unit's chosen operating point; null = the card's threshold")
    risk_in_words: str | None = Field(None, description="last_risk and what it meant on validation, at the threshold")


class OutcomeIn(_In):
    # the rule of _onset_iff_sepsis below, as the published schema says it
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"properties": {"outcome": {"const": "sepsis"}, "onset_time": {"type": "string"}}, "required": ["onset_time"]},
        {"properties": {"outcome": {"const": "no_sepsis"}, "onset_time": {"type": "null"}}}]})

    outcome: Literal["sepsis", "no_sepsis"] = Field(description="sepsis (give onset_time) or discharged without sepsis")
    onset_time: Timestamp | None = None
    discharged_at: Timestamp | None = None
    recorded_by: Text(128) | None = None

    @model_validator(mode="after")
    def _onset_iff_sepsis(self):
        if self.outcome == "sepsis" and self.onset_time is None:
            raise field_problems([("onset_time", "required when outcome is 'sepsis'")])
        if self.outcome == "no_sepsis" and self.onset_time is not None:
            raise field_problems([("onset_time", "must be empty when outcome is 'no_sepsis'")])
        return self


class AckIn(_In):
    by: Text(128, min_length=1) = Field(description="who acknowledges")
    reason: Literal["confirmed", "false_alarm", "already_treated"]
    note: Text(1000) | None = None


class SnoozeIn(_In):
    by: Text(128, min_length=1)
    minutes: Number = Field(gt=0, le=7 * 24 * 60, description="snooze length; no new alarm for this patient until it ends")


class ResolveIn(_In):
    by: Text(128, min_length=1)
    note: Text(1000) | None = None


class AlarmFigures(BaseModel):
    """The alarm burden and quality figures of GET /stats (service/stats.py), for the live model and,
    in GET /stats/models, for each shadow's would-be alarms."""
    patients: int
    patient_days: float
    alarms_per_patient_day: float | None
    alarms_with_outcome: int
    true_alarms: int
    false_alarms: int
    positive_predictive_value: float | None = Field(description="true alarms / alarms whose patient has an outcome")
    false_positive_rate: float | None = Field(
        description="patients discharged without sepsis who had any alarm / all patients discharged without sepsis")
    septic_patients: int
    septic_patients_alarmed_in_time: int = Field(
        description="septic patients caught in time: an alarm raised in the window [onset - 12 h, onset + 3 h], or "
                    "raised before it and still open (not acknowledged, snoozed or resolved) when it began")
    median_lead_time_hours: float | None = Field(
        description="onset minus the raise time of the alarm that caught the patient in time, median over those caught")
    caught_in_window: float | None = Field(None, description="septic_patients_alarmed_in_time / septic_patients: "
                                                             "the first line of alarm quality")
    alarmed_before_onset: float | None = Field(None, description="second line, the older figure: septic patients "
                                                                 "with any alarm at or before onset / septic patients")
    median_lead_time_before_onset_hours: float | None = Field(
        None, description="second line: onset minus the patient's first alarm, median over septic patients alarmed at "
                          "or before onset")
    ppv_per_stay: float | None = Field(None, description="patients with an outcome and any alarm that are septic / "
                                                         "patients with an outcome and any alarm")
    alarms_by_kind: dict[str, int] = Field(default_factory=dict, description="alarms by kind: raised, re-alerts, "
                                                                             "escalations (models.alarm_policy)")
    red_share: float | None = Field(None, description="share of patient-hours with an open alarm")


class Stats(AlarmFigures):
    since: dt.datetime | None
    alarms: int
    # A list, not a tuple: a tuple is published as prefixItems, which schemathesis and OpenAPI 3.0
    # tools cannot read. The same two numbers on the wire.
    window_hours: list[float] = Field([-12.0, 3.0], min_length=2, max_length=2,
                                      description="the true-alarm window: [from, to] hours relative to sepsis onset")


class OperatingPeriod(AlarmFigures):
    """One unit's operating-point period (service/ward/periods.py) with its own alarm figures."""
    unit: Literal["MICU", "SICU", "other"]
    point_id: str | None = Field(description="the point in force; null: the model card's threshold")
    threshold: float
    start: dt.datetime | None = Field(description="when the point came into force (service clock); null: from the "
                                                  "beginning of the record")
    end: dt.datetime | None = Field(description="when the next point replaced it; null: still in force")
    chosen_by: str | None = Field(description="who chose the point, or switched the model (null for a unit's first "
                                              "period)")
    cause: Literal["point_change", "model_switch"] | None = Field(
        None, description="what opened the period: an admin's choice of point, or a model switch that changed the "
                          "unit's threshold in force (a switch that kept it opens none); null for a unit's first "
                          "period")
    model: str | None = Field(None, description="the model in force when the period opened (null: not recorded)")
    model_version: str | None = Field(None, description="that model's version")
    alarms: int


class StatsPeriods(BaseModel):
    """GET /stats/periods: the figures of GET /stats per unit and operating-point period, never added
    across a threshold change."""
    definition: str
    window_hours: list[float] = Field([-12.0, 3.0], min_length=2, max_length=2,
                                      description="the true-alarm window: [from, to] hours relative to sepsis onset")
    periods: list[OperatingPeriod]


class FieldProblem(BaseModel):
    field: str = Field(description="where, e.g. observations.3.vitals.HR; body for the request as a whole")
    reason: str


class ApiError(BaseModel):
    detail: str
    errors: list[FieldProblem] | None = Field(None, description="the first problems (at most 20)")
    error_count: int | None = Field(None, description="how many problems there were in all")


class CorrectionOut(BaseModel):
    """What an admin's correction removed and what remains (the audit row's id included)."""
    correction_id: int
    patient_id: str
    after: dt.datetime
    removed_observations: int
    removed_alarms: int
    remaining_observations: int
    last_observation: dt.datetime | None
    corrected_at: dt.datetime
    corrected_by: str


class WardPatients(BaseModel):
    monitoring: int
    in_treatment: int
    discharged: int
    on_ward: int = Field(description="monitoring + in_treatment")


class WardAlarms(BaseModel):
    open: int
    acknowledged: int
    snoozed: int
    active: int = Field(description="open + acknowledged + snoozed")
    patients_with_open_alarm: int


class Ward(BaseModel):
    """Counts for the ward's header; alarms are those of patients still on the ward, counted as
    GET /alarms?state=... lists them."""
    patients: WardPatients
    alarms: WardAlarms
    clock: ClockOut


# -- explanations, the alarm queue and operating points ------------------------------------------------

class MeasuredValue(_Out):
    value: float | str | None = None
    unit: str | None = None
    measured_at: dt.datetime | None = None
    age_hours: float | None = Field(None, description="hours from measured_at to the service clock's now")


class LatestValue(MeasuredValue):
    feature: str


class BedsideCriterion(MeasuredValue):
    name: str
    met: bool | None = Field(None, description="null when the input was never measured")


class BedsideScore(_Out):
    score: int | None = Field(None, description="criteria met; null when no criterion could be assessed")
    criteria: list[BedsideCriterion] = Field(default_factory=list)


class SofaComponent(MeasuredValue):
    name: str
    score: int | None = None


class Sofa(_Out):
    components: list[SofaComponent] = Field(default_factory=list)
    total_available: int | None = Field(None, description="the sum over the components whose inputs exist")


class Bedside(_Out):
    """Familiar bedside context from the same observations the model saw (service/patients/bedside.py)."""
    qsofa: BedsideScore | None = None
    sirs: BedsideScore | None = None
    sofa: Sofa | None = None
    lactate: MeasuredValue | None = None
    latest: list[LatestValue] = Field(default_factory=list, description="every measured variable's latest value")


class RiskPoint(BaseModel):
    timestamp: dt.datetime
    risk: float


class QueueCard(BaseModel):
    """One active alarm as a nurse works it."""
    alarm_id: int
    state: Literal["open", "acknowledged", "snoozed"]
    kind: str = Field("raised", description=KIND_DOC)
    previous_alarm_id: int | None = None
    late_result: bool = Field(False, description="raised by a late or amended value for an earlier hour")
    raised_at: dt.datetime
    open_minutes: float = Field(description="minutes from raised_at to the service clock's now")
    acknowledged_by: str | None = None
    acknowledged_at: dt.datetime | None = None
    ack_reason: str | None = None
    snoozed_until: dt.datetime | None = None
    patient_id: str
    unit: str | None = Field(None, description="MICU, SICU, other; null when never recorded (alarms as 'other')")
    bed: str | None = None
    status: Literal["monitoring", "in_treatment", "discharged"] = "monitoring"
    threshold: float = Field(description="the alarm threshold in force for the patient's unit")
    operating_point: str | None = Field(None, description="the unit's chosen point id; null = the card's threshold")
    risk_at_raise: float
    risk: float | None = Field(None, description="the latest risk")
    risk_at: dt.datetime | None = Field(None, description="the latest observation's time")
    trend: list[RiskPoint] = Field(description="the last risks (at most 12), oldest first, the latest included")
    risk_in_words: str | None = None
    contributions: list[Contribution] | None = Field(None, description="behind the alarm (the raising observation's)")
    latest_contributions: list[Contribution] | None = Field(None, description="behind the latest risk")
    latest: list[LatestValue] = Field(default_factory=list, description="latest vitals and labs with their age")
    bedside: Bedside | None = None


class AlarmQueueOut(BaseModel):
    now: dt.datetime = Field(description="the service clock's now, which open_minutes and the ages count to")
    clock: str = Field(description="wall or simulated")
    count: int
    cards: list[QueueCard] = Field(description="open before acknowledged before snoozed; then current risk, highest "
                                               "first; then the longest open")


class AlarmPolicyOut(BaseModel):
    """A unit's alarm policy (models.alarm_policy.AlarmPolicy) at its threshold."""
    threshold: float
    lockout_hours: float | None = Field(description="an acknowledged (or unanswered) alarm is sent again when the "
                                                    "risk is still at or above the threshold this long after; null: never")
    rise_factor: float | None = Field(description="an acknowledged alarm is sent again when the risk reaches this x "
                                                  "the acknowledged risk; null: off")
    tiers: list[float] = Field(description="risk levels above the threshold whose crossing escalates")
    description: str


class UnitChoice(BaseModel):
    unit: Literal["MICU", "SICU", "other"]
    point_id: str | None = Field(description="the point in force: the chosen one, else the table's default_point; "
                                             "null = neither, the model card's threshold")
    threshold: float = Field(description="the threshold in force for the unit's alarms")
    alarm_policy: AlarmPolicyOut | None = Field(None, description="the re-alert policy the unit's alarms follow")
    label: str | None = None
    chosen_by: str | None = None
    chosen_at: dt.datetime | None = None
    note: str | None = None
    chosen_on: str | None = Field(None, description="'<model> <version>' the choice was made on")


class OperatingPointsOut(BaseModel):
    model: str
    model_version: str
    card_threshold: float = Field(description="the model card's threshold: a unit's default when the table names no "
                                              "default_point")
    default_point: str | None = Field(None, description="the table's point a unit alarms at unless it chooses another")
    table: dict | None = Field(description="the model's operating_points.json (points with validation and test "
                                           "figures, risk bands, definitions); null when it ships none")
    units: list[UnitChoice]


class OperatingPointIn(_In):
    point_id: Text(64, 1) = Field(description="an id from GET /operating-points (table.points[].id)",
                                  examples=["alarms_per_day_0.2"])
    by: Text(128, 1) = Field(description="who chooses (the person; the key is recorded too)")
    note: Text(1000) | None = Field(None, description="why: kept in the audit")



# -- models: the active one, shadows, switches (service/api/models.py) ------------------------------

class ModelSwitchIn(_In):
    name: Text(64, 1) = Field(examples=["sepsis-cfc"], description="a model in the registry")
    version: Text(32, 1) = Field(examples=["3"])
    by: Text(128, 1) = Field(description="who switches (the person; the key is recorded too)")
    note: Text(1000) | None = Field(None, description="why: kept in the audit")


class UpgradeProgress(BaseModel):
    """A model switch, while it runs and after (service/lifecycle/upgrades.py)."""
    state: Literal["idle", "running", "done", "failed"]
    from_model: str | None = Field(None, description="name:version active before the switch")
    to_model: str | None = None
    phase: Literal["rebuild", "catch_up", "swap"] | None = None
    patients_total: int = Field(description="monitored patients (not discharged, with observations)")
    patients_rebuilt: int
    hours_rebuilt: int = Field(description="observations stepped through the new model (caught-up ones twice)")
    caught_up: int = Field(description="patients rebuilt again under the locks: they advanced during the rebuild")
    left_for_lazy_rebuild: int = Field(description="changed by another process at the write: rebuilt on their "
                                                   "next observation")
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    rebuild_seconds: float | None = None
    pause_seconds: float | None = Field(None, description="how long this process's writes waited for the swap")
    seconds: float | None = None
    patients_per_second: float | None = None
    hours_per_second: float | None = None
    error: str | None = None
    by: str | None = None
    note: str | None = None


class ModelOut(BaseModel):
    model: str
    version: str
    threshold: float
    state_size: int
    provider: str


class ModelsOut(BaseModel):
    active: ModelOut
    shadows: list[ModelOut] = Field(description="scored silently on every observation (SEPSIS_SHADOW_MODELS)")


class ModelFigures(AlarmFigures):
    role: Literal["active", "shadow"]
    model: str
    version: str
    threshold: float
    scored_observations: int = Field(description="all observations this model scored (the comparison uses the "
                                                 "ones every listed model scored)")
    auroc: float | None = Field(description="patient-hour AUROC (see auroc_definition); null without both classes")
    hours_with_outcome: int
    hours_in_window: int
    alarms: int = Field(description="alarms (a shadow's: would-be alarms) raised at the compared observations")


class ModelComparison(BaseModel):
    """The active model and the shadows on the same observations and recorded outcomes, with the
    definitions of GET /stats."""
    since: dt.datetime | None
    observations: int = Field(description="observations every listed model scored")
    patients: int
    patients_with_outcome: int
    auroc_definition: str
    window_hours: list[float] = Field(min_length=2, max_length=2)
    models: list[ModelFigures]


PatientDetail.model_rebuild()  # its bedside field names Bedside, defined above after it
