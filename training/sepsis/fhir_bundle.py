"""A PhysioNet 2019 stay as the FHIR R4 transaction Bundles a hospital's integration engine would
send (for `replay --format fhir`): pure, rows in, Bundle dicts out, codes and units from
`models/fhir_codes.csv` (the table the service reads them back with).

    for ts, bundle in stay_bundles("replay-p000001", values, start):
        client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json", ...})

- The stay is laid out as `replay.plan_stay` lays it out: `start` is the first row's time, the ICU
  admission lies ICULOS[0] - 1 hours before it, row t at ICU admission + ICULOS[t] - 1 hours.
- The first bundle carries the Patient (id = patient_id; Gender 1 -> male, 0 -> female; Age as a
  birthDate with the exact patient-birthTime extension, so the service reads the same Age back),
  the ICU Encounter (period.start = the ICU admission; Unit1 -> location MICU, Unit2 -> SICU,
  both 0 -> ICU, unknown -> no location) and, when HospAdmTime is known, the hospital Encounter it
  is partOf (period.start = ICU admission + HospAdmTime hours).
- Each row with a measured value is one bundle of Observations at that time (effectiveDateTime),
  each vital sign or lab in the model's own unit; SBP, DBP and MAP as the 85354-9 blood pressure
  panel's components; O2Sat coded as US Core pulse oximetry (59408-5 and 2708-6). A row with no
  measured value sends nothing (FHIR has no empty Observation), except the first, whose bundle
  still admits the patient.
- `feed_observation` writes one message of the realistic feed (`training.sepsis.feed`) as a single
  Observation for POST /fhir/Observation: status final or amended, the message's key as its
  identifier.
"""
from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Iterator

import numpy as np

from models.contract import CLINICAL, INDEX, VITALS
from models.fhir_codes import BP_PANEL, LOINC, UCUM, YEAR_SECONDS, CodeTable, load_codes
from models.grid import Charted

BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
VITAL_SIGNS = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                           "code": "vital-signs", "display": "Vital Signs"}]}
LABORATORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                          "code": "laboratory", "display": "Laboratory"}]}
# the realistic feed's message keys, as each Observation's business identifier
FEED_KEYS = "urn:sepsis-replay:feed-key"
BLOOD_PRESSURE = ("SBP", "DBP", "MAP")
_NS = uuid.UUID("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f")  # fullUrls: stable per patient, time and variable


def _instant(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _urn(*parts) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, '|'.join(map(str, parts)))}"


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def row_hours(values: np.ndarray) -> np.ndarray:
    """Each row's ICULOS, or 1, 2, ... when the file's ICULOS is unusable (as replay.plan_stay)."""
    hours = values[:, INDEX["ICULOS"]].astype(np.float64)
    if not np.isfinite(hours).all() or (np.diff(hours) <= 0).any():
        hours = np.arange(len(values), dtype=np.float64) + 1.0
    return hours


def _coding(codes: CodeTable, feature: str) -> list[dict]:
    code = codes.for_feature(feature)
    coding = [{"system": LOINC, "code": code.loinc, "display": code.display}]
    if feature == "O2Sat":  # US Core pulse oximetry carries both; the service reads 59408-5 first
        coding.append({"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"})
    return coding


def _quantity(codes: CodeTable, feature: str, value: float) -> dict:
    unit = codes.for_feature(feature).unit
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _observation(patient_id: str, ts: dt.datetime, feature: str, value: float, codes: CodeTable) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "category": [VITAL_SIGNS if feature in VITALS else LABORATORY],
            "code": {"coding": _coding(codes, feature)}, "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": _instant(ts), "valueQuantity": _quantity(codes, feature, value)}


def feed_observation(patient_id: str, charted: Charted, codes: CodeTable | None = None) -> dict:
    """One message of a realistic feed (training.sepsis.feed) as a single Observation: its status
    (final, or amended for a correction) and its key as the identifier a correction repeats."""
    return {**_observation(patient_id, charted.time, charted.variable, charted.value, codes or load_codes()),
            "status": charted.status, "identifier": [{"system": FEED_KEYS, "value": charted.key}]}


def _blood_pressure(patient_id: str, ts: dt.datetime, measured: dict[str, float], codes: CodeTable) -> dict:
    components = [{"code": {"coding": _coding(codes, f)}, "valueQuantity": _quantity(codes, f, measured[f])}
                  for f in BLOOD_PRESSURE if f in measured]
    return {"resourceType": "Observation", "status": "final", "category": [VITAL_SIGNS],
            "code": {"coding": [{"system": LOINC, "code": BP_PANEL,
                                 "display": "Blood pressure panel with all children optional"}]},
            "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": _instant(ts), "component": components}


def admission_resources(patient_id: str, first_row: np.ndarray, icu_admit: dt.datetime) -> list[dict]:
    """The Patient, the ICU Encounter and (HospAdmTime known) the hospital Encounter of a stay."""
    patient = {"resourceType": "Patient", "id": patient_id}
    gender = _finite(first_row[INDEX["Gender"]])
    if gender in (0.0, 1.0):
        patient["gender"] = "male" if gender == 1.0 else "female"
    age = _finite(first_row[INDEX["Age"]])
    if age is not None:
        born = icu_admit - dt.timedelta(seconds=age * YEAR_SECONDS)
        patient["birthDate"] = born.date().isoformat()
        patient["_birthDate"] = {"extension": [{"url": BIRTH_TIME, "valueDateTime": _instant(born)}]}
    icu = {"resourceType": "Encounter", "id": f"{patient_id}-icu", "status": "in-progress",
           "class": {"system": ACT_CODE, "code": "ACUTE", "display": "inpatient acute"},
           "subject": {"reference": f"Patient/{patient_id}"}, "period": {"start": _instant(icu_admit)}}
    unit1, unit2 = _finite(first_row[INDEX["Unit1"]]), _finite(first_row[INDEX["Unit2"]])
    unit = "MICU" if unit1 == 1.0 else "SICU" if unit2 == 1.0 else "ICU" if (unit1, unit2) == (0.0, 0.0) else None
    if unit is not None:
        icu["location"] = [{"location": {"display": unit}}]
    out = [patient, icu]
    hosp_adm = _finite(first_row[INDEX["HospAdmTime"]])
    if hosp_adm is not None:
        hospital = {"resourceType": "Encounter", "id": f"{patient_id}-hospital", "status": "in-progress",
                    "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
                    "subject": {"reference": f"Patient/{patient_id}"},
                    "period": {"start": _instant(icu_admit + dt.timedelta(hours=hosp_adm))}}
        icu["partOf"] = {"reference": f"Encounter/{hospital['id']}"}
        out.append(hospital)
    return out


def row_observations(patient_id: str, row: np.ndarray, ts: dt.datetime, codes: CodeTable) -> list[dict]:
    """A row's measured vital signs and labs as Observations at `ts` (blood pressure as one panel)."""
    measured = {f: float(row[INDEX[f]]) for f in CLINICAL if math.isfinite(row[INDEX[f]])}
    out = []
    if any(f in measured for f in BLOOD_PRESSURE):
        out.append(_blood_pressure(patient_id, ts, measured, codes))
    out += [_observation(patient_id, ts, f, v, codes) for f, v in measured.items() if f not in BLOOD_PRESSURE]
    return out


def _entry(resource: dict, full_url: str) -> dict:
    rtype = resource["resourceType"]
    request = ({"method": "PUT", "url": f"{rtype}/{resource['id']}"} if "id" in resource
               else {"method": "POST", "url": rtype})
    return {"fullUrl": full_url, "resource": resource, "request": request}


def stay_bundles(patient_id: str, values: np.ndarray, start: dt.datetime,
                 codes: CodeTable | None = None) -> Iterator[tuple[dt.datetime, dict]]:
    """(time, transaction Bundle) for each row of a stay that has something to send, in time
    order. `values` is the stay's [T, 40] rows (PhysioNet column order, NaN = not measured);
    `start` the first row's time (as replay.plan_stay)."""
    codes = codes or load_codes()
    hours = row_hours(values)
    icu_admit = start - dt.timedelta(hours=float(hours[0]) - 1.0)
    for t, row in enumerate(values):
        ts = icu_admit + dt.timedelta(hours=float(hours[t]) - 1.0)
        resources = admission_resources(patient_id, values[0], icu_admit) if t == 0 else []
        observations = row_observations(patient_id, row, ts, codes)
        if not resources and not observations:
            continue
        entries = [_entry(r, f"urn:uuid:{uuid.uuid5(_NS, patient_id + '|' + r['id'])}") for r in resources]
        entries += [_entry(o, _urn(patient_id, o["effectiveDateTime"], o["code"]["coding"][0]["code"]))
                    for o in observations]
        yield ts, {"resourceType": "Bundle", "type": "transaction", "entry": entries}


_VALUE = re.compile(r"^Bundle\.entry\[(\d+)\]\.resource\.(?:component\[(\d+)\]\.)?valueQuantity\.value$")


def drop_refused_values(bundle: dict, outcome: dict) -> tuple[dict, int] | None:
    """The bundle without the values a 422 OperationOutcome refused as implausible (each issue's
    expression a `...valueQuantity.value`), and how many were dropped; None when the outcome names
    anything else (then dropping values cannot make the bundle acceptable). What the JSON replay
    does with a refused vital, for FHIR."""
    drop: dict[int, set[int | None]] = {}
    for issue in outcome.get("issue", []):
        m = _VALUE.match((issue.get("expression") or [""])[0])
        if m is None or issue.get("code") != "value":
            return None
        drop.setdefault(int(m.group(1)), set()).add(None if m.group(2) is None else int(m.group(2)))
    if not drop:
        return None
    entries = []
    for i, entry in enumerate(bundle["entry"]):
        gone = drop.get(i, set())
        if None in gone:
            continue
        if gone:
            components = [c for k, c in enumerate(entry["resource"]["component"]) if k not in gone]
            if not components:
                continue
            entry = {**entry, "resource": {**entry["resource"], "component": components}}
        entries.append(entry)
    return {**bundle, "entry": entries}, sum(len(v) for v in drop.values())
