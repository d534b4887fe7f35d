"""The API's request and response bodies (pydantic v2)."""
from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from service.ranges import DERIVED, check_value

PatientId = str
_ID = dict(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Observation(_In):
    patient_id: PatientId = Field(**_ID, examples=["p000001"])
    timestamp: AwareDatetime = Field(description="ISO 8601 with a zone, e.g. 2024-05-01T08:00:00Z")
    vitals: dict[str, float] = Field(
        description="Any subset of the PhysioNet 2019 variable names (PhysioNet units); omit what was not measured. "
                    "ICULOS is derived by the service.",
        examples=[{"HR": 97, "MAP": 75.3, "Temp": 38.1}])

    @field_validator("vitals")
    @classmethod
    def _check_vitals(cls, vitals: dict[str, float]) -> dict[str, float]:
        problems = []
        for name, value in vitals.items():
            if name in DERIVED:
                problems.append(f"vitals.{name}: is derived by the service from the ICU admission time, do not send it")
                continue
            reason = check_value(name, value)
            if reason:
                problems.append(f"vitals.{name}: {reason}")
        if problems:
            raise ValueError("; ".join(problems))
        return {k: float(v) for k, v in vitals.items()}


class PredictResult(BaseModel):
    patient_id: str
    timestamp: dt.datetime
    risk: float
    alarm: bool = Field(description="risk >= the model card's threshold")
    alarm_id: int | None = Field(None, description="the alarm this observation raised; null if none was raised "
                                                   "(below threshold, or one is already open/acknowledged/snoozed)")
    threshold: float
    model: str
    model_version: str
    elapsed_hours: float = Field(description="hours since the patient's previous observation (0 for the first)")
    iculos: float = Field(description="ICU length of stay fed to the model: floor(hours since ICU admission) + 1")
    duplicate: bool = Field(False, description="true when this exact observation was already stored; "
                                               "the stored result is returned and nothing changes")


class BatchRequest(_In):
    observations: list[Observation] = Field(min_length=1, max_length=20000)


class BatchResponse(BaseModel):
    results: list[PredictResult] = Field(description="one per posted observation, in request order")
    model_runs: int = Field(description="model steps run (each covers every patient with an observation at that step)")


class Admission(_In):
    patient_id: PatientId = Field(**_ID)
    age: float | None = Field(None, ge=0, le=120, description="years")
    gender: Literal[0, 1] | None = Field(None, description="0 female, 1 male (PhysioNet coding)")
    unit: Literal["MICU", "SICU", "other"] | None = Field(None, description="ICU type: MICU -> Unit1, SICU -> Unit2")
    hosp_adm_time: float | None = Field(None, ge=-100000, le=24,
                                        description="hours between hospital and ICU admission (PhysioNet HospAdmTime, usually <= 0)")
    icu_admit_time: AwareDatetime = Field(description="ICU admission time; ICULOS counts from here")


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
    resolved_at: dt.datetime | None = None
    resolved_by: str | None = None
    verdict: Literal["true", "false", "unknown"] = Field(
        "unknown", description="once the outcome is known: true if raised 12 h before to 3 h after onset")


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


class PatientSummary(BaseModel):
    patient_id: str
    admitted_by: str
    unit: str | None = None  # "MICU", "SICU", "other"; None when not recorded
    icu_admit_time: dt.datetime | None
    first_observation: dt.datetime | None
    last_observation: dt.datetime | None
    n_observations: int
    last_risk: float | None = None
    active_alarm_id: int | None = None
    outcome: str | None
    onset_time: dt.datetime | None = None


class PatientDetail(PatientSummary):
    age: float | None
    gender: float | None
    unit1: float | None
    unit2: float | None
    hosp_adm_time: float | None
    discharged_at: dt.datetime | None
    timeline: list[TimelineEntry]
    alarms: list[AlarmOut]


class OutcomeIn(_In):
    outcome: Literal["sepsis", "no_sepsis"] = Field(description="sepsis (give onset_time) or discharged without sepsis")
    onset_time: AwareDatetime | None = None
    discharged_at: AwareDatetime | None = None
    recorded_by: str | None = Field(None, max_length=128)

    @model_validator(mode="after")
    def _onset_iff_sepsis(self):
        if self.outcome == "sepsis" and self.onset_time is None:
            raise ValueError("onset_time: required when outcome is 'sepsis'")
        if self.outcome == "no_sepsis" and self.onset_time is not None:
            raise ValueError("onset_time: must be empty when outcome is 'no_sepsis'")
        return self


class AckIn(_In):
    by: str = Field(min_length=1, max_length=128, description="who acknowledges")
    reason: Literal["confirmed", "false_alarm", "already_treated"]
    note: str | None = Field(None, max_length=1000)


class SnoozeIn(_In):
    by: str = Field(min_length=1, max_length=128)
    minutes: float = Field(gt=0, le=7 * 24 * 60, description="snooze length; no new alarm for this patient until it ends")


class ResolveIn(_In):
    by: str = Field(min_length=1, max_length=128)
    note: str | None = Field(None, max_length=1000)


class Stats(BaseModel):
    since: dt.datetime | None
    alarms: int
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
    septic_patients_alarmed_in_time: int
    median_lead_time_hours: float | None = Field(description="onset minus the first true alarm, over septic patients with one")
    window_hours: tuple[float, float] = (-12.0, 3.0)


class ApiError(BaseModel):
    detail: str
    errors: list[dict] | None = None

