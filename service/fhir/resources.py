"""What the service says in FHIR: each scored observation as a RiskAssessment, each alarm as a Flag,
searchset and transaction-response Bundles. Pure: stored rows in, resource dicts out (tests
validate them with fhir.resources.R4B)."""
from __future__ import annotations

import datetime as dt
import hashlib
import re

UTC = dt.timezone.utc
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
SEPSIS = {"system": "http://snomed.info/sct", "code": "91302008", "display": "Sepsis (disorder)"}
FLAG_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/flag-category", "code": "clinical", "display": "Clinical"}


def instant(ts: dt.datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def observation_id(patient_id: str, ts: dt.datetime) -> str:
    """The stable logical id of a stored observation (a patient's values at one time), also its
    RiskAssessment's: `{patient}-{UTC time}`; a patient id that cannot be part of a FHIR id (`_`,
    `:`, too long) is replaced by a hash of it."""
    t = ts.astimezone(UTC)
    stamp = t.strftime("%Y%m%dT%H%M%S") + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"
    ident = f"{patient_id}-{stamp}"
    if _FHIR_ID.fullmatch(ident):
        return ident
    return f"h{hashlib.sha256(patient_id.encode()).hexdigest()[:16]}-{stamp}"


def risk_assessment(patient_id: str, ts: dt.datetime, risk: float, threshold: float, model: str, version: str,
                    alarm_id: int | None) -> dict:
    rid = observation_id(patient_id, ts)
    alarm = f"; alarm {alarm_id} raised" if alarm_id is not None else ""
    return {
        "resourceType": "RiskAssessment", "id": rid, "status": "final",
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": instant(ts),
        "method": {"coding": [{"code": f"{model}/{version}", "display": f"{model} version {version}"}],
                   "text": f"{model} version {version}"},
        "basis": [{"reference": f"Observation/{rid}"}],
        "prediction": [{"outcome": {"coding": [SEPSIS], "text": "sepsis (PhysioNet 2019 label: onset within 6 h)"},
                        "probabilityDecimal": risk}],
        "note": [{"text": f"alarm threshold {threshold:g}: {'at or above' if risk >= threshold else 'below'}{alarm}"}],
    }


def flag(alarm) -> dict:
    """An alarm (schemas.AlarmOut) as a Flag: active until resolved."""
    period = {"start": instant(alarm.raised_at)}
    if alarm.resolved_at is not None:
        period["end"] = instant(alarm.resolved_at)
    return {
        "resourceType": "Flag", "id": str(alarm.id),
        "status": "inactive" if alarm.state == "resolved" else "active",
        "category": [{"coding": [FLAG_CATEGORY]}],
        "code": {"coding": [SEPSIS],
                 "text": f"sepsis risk alarm: risk {alarm.risk:.3f} at or above {alarm.threshold:g} "
                         f"({alarm.model_name} version {alarm.model_version}); {alarm.state}"},
        "subject": {"reference": f"Patient/{alarm.patient_id}"},
        "period": period,
    }


def searchset(resources: list[dict], base: str) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                      for r in resources]}
