"""What the service says in FHIR: a stored patient as a Patient, each stored observation (a
patient's values at one time) as an Observation and, scored, as a RiskAssessment, each alarm as a
Flag, a stay whose sender's Encounter id is known as that Encounter. Pure: stored rows in, resource dicts out (tests validate them with fhir.resources.R4B)."""
from __future__ import annotations

import datetime as dt
import hashlib
import re

from models.card import FEATURES
from models.fhir_codes import LOINC, UCUM, CodeTable
from service.alarms.rules import alarming

UTC = dt.timezone.utc
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
SEPSIS = {"system": "http://snomed.info/sct", "code": "91302008", "display": "Sepsis (disorder)"}
FLAG_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/flag-category", "code": "clinical", "display": "Clinical"}
# The project's own code systems: the model that scored (name/version), the model's input
# variables (PhysioNet 2019 names) and the patient ids the service keeps.
MODEL_SYSTEM = "urn:liquid-sepsis:model"
FEATURE_SYSTEM = "urn:liquid-sepsis:feature"
PATIENT_ID_SYSTEM = "urn:liquid-sepsis:patient-id"
SCORED_VALUES = {"system": FEATURE_SYSTEM, "code": "scored-values",
                 "display": "the values of a patient scored together at one time"}
# The label the models learn (PhysioNet/CinC 2019): an hour is 1 from 6 h before the clinical
# onset of sepsis on, so the risk is the probability that onset comes within 6 h of the scored
# observation or has already come.
HORIZON_HOURS = 6
# Units of the inputs the code table does not hold (demographics); the rest take the table's.
_DEMOGRAPHIC_UNITS = {"Age": "a", "HospAdmTime": "h", "Gender": "1", "Unit1": "1", "Unit2": "1"}
_GENDER = {1.0: "male", 0.0: "female"}  # PhysioNet's coding


def instant(ts: dt.datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def hashed(patient_id: str) -> str:
    """The stand-in for a patient id that cannot be (part of) a FHIR id: `h` and 16 hex digits."""
    return f"h{hashlib.sha256(patient_id.encode()).hexdigest()[:16]}"


def patient_id(pid: str) -> str:
    """The patient's FHIR id: the service's id, or its hash where that holds `_` or `:` (which
    the service accepts and FHIR ids do not)."""
    return pid if _FHIR_ID.fullmatch(pid) else hashed(pid)


def reference(pid: str) -> dict:
    return {"reference": f"Patient/{patient_id(pid)}"}


def observation_id(patient_id: str, ts: dt.datetime) -> str:
    """The stable logical id of a stored observation (a patient's values at one time), also its
    RiskAssessment's: `{patient}-{UTC time}`; a patient id that cannot be part of a FHIR id (`_`,
    `:`, too long) is replaced by a hash of it."""
    t = ts.astimezone(UTC)
    stamp = t.strftime("%Y%m%dT%H%M%S") + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"
    ident = f"{patient_id}-{stamp}"
    if _FHIR_ID.fullmatch(ident):
        return ident
    return f"{hashed(patient_id)}-{stamp}"


def encounter(encounter_id: str | None, system: str | None, value: str | None) -> dict | None:
    """The Reference to the sender's Encounter of the stay (service/patients/encounter.py): by its
    id, which the sender's server resolves, else by its identifier (a logical reference, its `type`
    saying what it names); None when neither is known."""
    if encounter_id:
        return {"reference": f"Encounter/{encounter_id}"}
    if value:
        return {"type": "Encounter", "identifier": ({"system": system} if system else {}) | {"value": value}}
    return None


# The class of every stay the service keeps: an ICU stay, as the feeds send it (v3-ActCode).
ICU_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ACUTE", "display": "inpatient acute"}
_NAMED_UNITS = ("MICU", "SICU")  # "other" names no place


def stay_encounter(stay, unit: str | None) -> dict:
    """The sender's Encounter (`stay`: the patient's row, its `encounter_id` the Encounter's id) as
    the service knows the stay: in progress until discharged (then finished, period.end the
    discharge), from the ICU admission, the unit the ward sees the patient in now (`unit`:
    status.placed; not the bed, which after a transfer is the sender's words for the whole place).
    No meta.lastUpdated: the service stamps no time on a discharge or a transfer in the patient's
    row, and the admission's would be untrue after either."""
    out = {"resourceType": "Encounter", "id": stay.encounter_id}
    if stay.encounter_value:
        out["identifier"] = [({"system": stay.encounter_system} if stay.encounter_system else {})
                             | {"value": stay.encounter_value}]
    out |= {"status": "finished" if stay.discharged_at is not None else "in-progress", "class": ICU_CLASS,
            "subject": reference(stay.id)}
    period = {"start": instant(stay.icu_admit_time)} if stay.icu_admit_time is not None else {}
    if stay.discharged_at is not None:
        period["end"] = instant(stay.discharged_at)
    if period:
        out["period"] = period
    if unit in _NAMED_UNITS:
        out["location"] = [{"location": {"display": unit}}]
    return out


def _encounter(reference: dict | None) -> dict:
    return {"encounter": reference} if reference is not None else {}


def _meta(last_updated: dt.datetime | None) -> dict:
    return {"meta": {"lastUpdated": instant(last_updated)}} if last_updated is not None else {}


def risk_assessment(patient_id: str, ts: dt.datetime, risk: float, threshold: float, model: str, version: str,
                    alarm_id: int | None, last_updated: dt.datetime | None = None, senders: list[str] = (),
                    stay: dict | None = None, monitored: bool = True) -> dict:
    """`last_updated`: when the service stored the observation (its `received_at`); `senders`:
    the ids of the sender's Observations whose values the hour holds (readable here too); `stay`:
    the Reference to the stay's Encounter (`encounter()`), if known; `monitored`: whether the hour
    is at or after the patient's first measured one (before it nothing alarms)."""
    rid = observation_id(patient_id, ts)
    alarm = f"; alarm {alarm_id} raised" if alarm_id is not None else ""
    where = ("at or above" if alarming(risk, threshold) else "below") if monitored else \
        "not applied: an hour before the patient's first measured vital sign or lab raises no alarm"
    return {
        "resourceType": "RiskAssessment", "id": rid, **_meta(last_updated), "status": "final",
        "subject": reference(patient_id), **_encounter(stay),
        "occurrenceDateTime": instant(ts),
        "method": {"coding": [{"system": MODEL_SYSTEM, "code": f"{model}/{version}", "display": f"{model} version {version}"}],
                   "text": f"{model} version {version}"},
        "basis": [{"reference": f"Observation/{rid}"}] + [{"reference": f"Observation/{sid}"} for sid in senders],
        "prediction": [{"outcome": {"coding": [SEPSIS], "text": "sepsis (PhysioNet 2019 label: onset within 6 h)"},
                        "probabilityDecimal": risk,
                        "whenRange": {"high": {"value": HORIZON_HOURS, "unit": "h", "system": UCUM, "code": "h"}},
                        "rationale": f"the probability that sepsis onset (Sepsis-3, as the PhysioNet/CinC 2019 "
                                     f"challenge labels it) comes within {HORIZON_HOURS} h of occurrenceDateTime or "
                                     "has already come: the models learn a label that is 1 from "
                                     f"{HORIZON_HOURS} h before onset on"}],
        "note": [{"text": f"alarm threshold {threshold:g}: {where}{alarm}"}],
    }


def _component(feature: str, value: float, codes: CodeTable) -> dict:
    coding = [{"system": FEATURE_SYSTEM, "code": feature}]
    if feature in _DEMOGRAPHIC_UNITS:
        unit = _DEMOGRAPHIC_UNITS[feature]
    else:
        code = codes.for_feature(feature)
        coding.insert(0, {"system": LOINC, "code": code.loinc, "display": code.display})
        unit = code.unit
    return {"code": {"coding": coding, "text": feature},
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


def observation(pid: str, ts: dt.datetime, vitals: dict[str, float], received_at: dt.datetime,
                codes: CodeTable) -> dict:
    """A stored observation as one Observation: each value a component (LOINC where the code table
    has the variable, always the variable's PhysioNet name), in the model's units, in the model's
    input order. The service keeps values, not the resources they came in."""
    ordered = sorted(vitals, key=lambda f: FEATURES.index(f) if f in FEATURES else len(FEATURES))
    out = {"resourceType": "Observation", "id": observation_id(pid, ts), **_meta(received_at), "status": "final",
           "code": {"coding": [SCORED_VALUES], "text": "values scored together by the sepsis model"},
           "subject": reference(pid), "effectiveDateTime": instant(ts), "issued": instant(received_at)}
    if ordered:
        out["component"] = [_component(f, vitals[f], codes) for f in ordered]
    return out


def sent_observation(fhir_id: str, values: list, codes: CodeTable) -> dict:
    """A sender's Observation as the service keeps it: its id, the standing status and values (in
    the model's units; several, as a panel's, as components) of the messages it came in."""
    first = values[0]
    status = "amended" if any(v.status in ("amended", "corrected") for v in values) else first.status
    out = {"resourceType": "Observation", "id": fhir_id, **_meta(max(v.received_at for v in values)),
           "status": status, "subject": reference(first.patient_id), "effectiveDateTime": instant(first.ts)}
    if len(values) == 1:
        component = _component(first.variable, first.value, codes)
        out.update(code=component["code"], valueQuantity=component["valueQuantity"])
    else:
        out["code"] = {"coding": [SCORED_VALUES], "text": "values sent together"}
        out["component"] = [_component(v.variable, v.value, codes) for v in values]
    return out


def patient(pid: str, gender: float | None, created_at: dt.datetime) -> dict:
    """What the service keeps of a patient that FHIR's Patient carries: the id and the gender
    (age is kept in years, not as a birth date)."""
    out = {"resourceType": "Patient", "id": patient_id(pid), **_meta(created_at),
           "identifier": [{"system": PATIENT_ID_SYSTEM, "value": pid}]}
    if gender in _GENDER:
        out["gender"] = _GENDER[gender]
    return out


def flag(alarm, last_updated: dt.datetime | None = None, stay: dict | None = None) -> dict:
    """An alarm (its stored row, or schemas.AlarmOut) as a Flag: active until resolved. `stay`:
    the Reference to the stay's Encounter (`encounter()`), if known."""
    period = {"start": instant(alarm.raised_at)}
    if alarm.resolved_at is not None:
        period["end"] = instant(alarm.resolved_at)
    return {
        "resourceType": "Flag", "id": str(alarm.id), **_meta(last_updated),
        "status": "inactive" if alarm.state == "resolved" else "active",
        "category": [{"coding": [FLAG_CATEGORY]}],
        "code": {"coding": [SEPSIS],
                 "text": f"sepsis risk alarm: risk {alarm.risk:.3f} at or above {alarm.threshold:g} "
                         f"({alarm.model_name} version {alarm.model_version}); {alarm.state}"},
        "subject": reference(alarm.patient_id),
        "period": period, **_encounter(stay),
    }
