"""Validated FHIR resources to the service's inputs: admissions (`schemas.Admission`) from Patient
and Encounter, observations (`schemas.Observation`, PhysioNet names and units) from LOINC-coded
Observations, one per Observation with its status and its id (else fullUrl) as the source id, so
the service files each value in its hour and a later amended or entered-in-error one replaces it.
Pure: every problem is collected and reported together; nothing here touches storage.

- Patient: `id` is the service's patient id; `gender` male -> 1, female -> 0 (PhysioNet coding),
  other/unknown -> not recorded; `birthDate` (or the patient-birthTime extension) -> Age in years
  at the ICU admission (Julian years, rounded to 1e-6 years).
- Encounter (subject = the patient): the ICU stay. `period.start` is the ICU admission time (ICULOS
  counts from it). When its `partOf` names another Encounter of the bundle (the hospital stay),
  HospAdmTime = hours from the ICU admission to that one's `period.start` (usually <= 0). The unit
  comes from `serviceType`, `location` (the reference's display, or the Location's name/type) and
  `class`: MICU (or "medical intensive care") -> MICU, SICU (or "surgical intensive care") -> SICU,
  anything else given -> other, nothing given -> not recorded. A `location` whose period.start is
  after the ICU admission is a transfer at that time (the unit and bed the ward sees; the
  admission's unit, the model's Unit1/Unit2, is the locations' at the admission, else the first
  transfer's). Status finished (or a period.end) is the discharge at period.end. Its identity, kept
  for the stay's RiskAssessments and Flags (service/patients/encounter.py): its `id` (else the id a
  fullUrl that is a URL ends in, `.../Encounter/ID`) and its identifiers with a value (the first
  is kept); too long for what the service stores, or not a FHIR id, is refused naming the element.
- Observation: status final/amended/corrected/preliminary; subject the patient; effectiveDateTime
  (or effectiveInstant, or effectivePeriod.start) with a time and zone; a LOINC coding of
  `models/fhir_codes.csv` matched with the Observation's category (or the 85354-9 blood pressure
  panel, read from its components); valueQuantity converted to the model's unit, and the components
  `fhir_codes.COMPONENTS` declares for its code (pulse oximetry's FiO2); other components are noted,
  not read. No value and a dataAbsentReason: nothing measured, nothing fed.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from models.fhir_codes import BP_PANEL, CATEGORY, COMPONENTS, LOINC, UCUM, YEAR_SECONDS, Code, CodeTable
from service import schemas
from service.fhir.outcome import Problem, Refusal
from service.fhir.reading import Entry
from service.patients.encounter import ID_MAX, SYSTEM_MAX, VALUE_MAX, StayEncounter

UTC = dt.timezone.utc
SCORED_STATUSES = ("final", "amended", "corrected", "preliminary", "entered-in-error")
BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})$")
_ENCOUNTER_REF = re.compile(r"(?:^|/)Encounter/([A-Za-z0-9\-.]{1,64})$")
_FULL_URL_ID = re.compile(r"(?:^|/)Encounter/([^/]+)$")  # a RESTful fullUrl: [base]/Encounter/[id]
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]+")
_PATIENT_ID = re.compile(schemas.PATIENT_ID_PATTERN)
_UNITS = (("MICU", ("micu", "medical intensive care", "medical icu")),
          ("SICU", ("sicu", "surgical intensive care", "surgical icu")))


@dataclass
class Group:
    """One Observation (its values: one, or a panel's components): one posted observation, known by
    its id (else its fullUrl) so that a later amended or entered-in-error one replaces it."""
    patient_id: str
    ts: dt.datetime
    status: str = "final"
    source_id: str | None = None
    vitals: dict[str, float] = field(default_factory=dict)
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)  # feature -> (value expression, entry label)
    times: list[tuple[str, str]] = field(default_factory=list)         # (effective expression, entry label)


@dataclass(frozen=True)
class Move:
    """An Encounter location taken after the ICU admission: a transfer on the ward."""
    at: dt.datetime
    unit: str | None   # MICU, SICU, other; None when the location names nothing
    bed: str | None    # the location as named (its reference's display or the Location's name)
    expression: str    # the location's period.start


@dataclass
class Admitted:
    admission: schemas.Admission
    expression: str  # the Encounter's period.start
    label: str
    moves: list[Move] = field(default_factory=list)      # in time order
    unit_from_move: bool = False                          # no location at the admission: the unit is the first move's
    discharged_at: dt.datetime | None = None              # a finished Encounter's period.end
    discharge_expression: str = ""
    encounter: StayEncounter | None = None                # None: the Encounter has no id nor identifier
    # "id", "identifier" (the kept one), "identifier.J" (StayEncounter.identifiers[J]) -> the element it came from
    encounter_where: dict[str, str] = field(default_factory=dict)


@dataclass
class Mapped:
    admissions: list[Admitted]
    groups: list[Group]
    observations: list[schemas.Observation]  # one per group, same order
    answers: list[tuple[str, object]]          # per entry: ("Patient", pid), ("Encounter", pid), ("Observation", group index), ("Location", None), ("skipped", None)
    notes: dict[str, list[Problem]] = field(default_factory=dict)  # entry path -> what of it was not read (information)


def utc(value) -> dt.datetime | None:
    """A FHIR dateTime with a time (and so a zone) as UTC; None for a date or a partial date, and
    for a time outside the service's range (converting year 1 with an offset overflows)."""
    if isinstance(value, dt.datetime) and value.utcoffset() is not None:
        if not schemas.EARLIEST.year <= value.year < schemas.LATEST.year:
            return None
        value = value.astimezone(UTC)
        return value if schemas.EARLIEST <= value < schemas.LATEST else None
    return None


def _time_problem(value, what: str) -> str:
    if isinstance(value, dt.datetime) and value.utcoffset() is not None:
        return f"{what} must be {schemas.TIME_RANGE}"
    return f"{what} is required as a dateTime with a time and zone (e.g. 2024-05-01T08:00:00Z)"


def _texts(concept) -> list[str]:
    if concept is None:
        return []
    out = [concept.text] if getattr(concept, "text", None) else []
    for c in getattr(concept, "coding", None) or []:
        out += [t for t in (c.code, c.display) if t]
    return out


class _Context:
    def __init__(self, entries: list[Entry]):
        self.by_url = {e.full_url: e for e in entries if e.full_url}
        self.by_id = {(type(e.resource).__name__, e.resource.id): e for e in entries if getattr(e.resource, "id", None)}
        self.problems: list[Problem] = []
        self.notes: dict[str, list[Problem]] = {}

    def problem(self, entry: Entry, element: str, reason: str, code: str = "invalid") -> None:
        self.problems.append(Problem(f"{entry.path}.{element}", reason, entry.label, code))

    def note(self, entry: Entry, element: str, reason: str) -> None:
        """Something of the entry that is not read (an issue of severity information in the answer)."""
        self.notes.setdefault(entry.path, []).append(Problem(f"{entry.path}.{element}", reason, entry.label,
                                                             "informational"))

    def target(self, reference: str | None, rtype: str, pattern: re.Pattern) -> tuple[Entry | None, str | None]:
        """(the bundle entry it points at, if any; the logical id) of a reference."""
        if not reference:
            return None, None
        entry = self.by_url.get(reference)
        if entry is not None:
            return (entry, getattr(entry.resource, "id", None)) if type(entry.resource).__name__ == rtype else (None, None)
        m = pattern.search(reference)
        if m is None:
            return None, None
        return self.by_id.get((rtype, m.group(1))), m.group(1)

    def patient_of(self, entry: Entry, element: str) -> str | None:
        ref = getattr(getattr(entry.resource, element), "reference", None) if getattr(entry.resource, element, None) else None
        _, pid = self.target(ref, "Patient", _PATIENT_REF)
        if pid is None:
            self.problem(entry, f"{element}.reference", "must reference the Patient (Patient/ID, or the fullUrl of a Patient "
                                                       "entry with an id)", "required")
            return None
        if not _PATIENT_ID.match(pid):
            self.problem(entry, f"{element}.reference", f"patient id {pid!r} must start with a letter or digit")
            return None
        return pid


def _age(patient, start: dt.datetime) -> float | None:
    born = None
    ext = getattr(patient, "birthDate__ext", None)
    for e in (ext.extension or []) if ext is not None else []:
        if e.url == BIRTH_TIME and utc(e.valueDateTime) is not None:
            born = utc(e.valueDateTime)
    if born is None and isinstance(patient.birthDate, dt.date):
        born = dt.datetime.combine(patient.birthDate, dt.time(), UTC)
    if born is None:
        return None
    return round((start - born).total_seconds() / YEAR_SECONDS, 6)


def _place(ctx: _Context, loc) -> list[str]:
    """The words naming one Encounter.location: its reference's display, the Location's name and type."""
    ref = loc.location
    texts = [ref.display] if ref is not None and ref.display else []
    target = ctx.by_url.get(ref.reference) if ref is not None and ref.reference else None
    if target is None and ref is not None and ref.reference and "/" in ref.reference:
        target = ctx.by_id.get(("Location", ref.reference.rsplit("/", 1)[1]))
    if target is not None and type(target.resource).__name__ == "Location":
        texts += [t for t in [target.resource.name] if t]
        for t in target.resource.type or []:
            texts += _texts(t)
    return texts


def _unit_named(texts: list[str], hints: list[str] = ()) -> str | None:
    lowered = " ".join([*texts, *hints]).lower()
    for name, words in _UNITS:
        if any(re.search(rf"\b{w}\b", lowered) for w in words):
            return name
    return "other" if texts else None


def _unit(ctx: _Context, encounter, locations) -> str | None:
    # class is required in R4 (IMP, ACUTE, ...): it can name the unit, but says nothing when it does not
    cls = encounter.class_fhir
    hints = [t for t in (cls.code, cls.display) if t] if cls is not None else []
    texts = _texts(encounter.serviceType)
    for loc in locations:
        texts += _place(ctx, loc)
    return _unit_named(texts, hints)


def _locations(ctx: _Context, e: Entry, start: dt.datetime) -> tuple[list, list[Move]] | None:
    """(the locations at the ICU admission, the later ones as moves in time order): a location whose
    period.start is after the admission is a transfer then; one without a period.start, or from
    before, is where the stay began. None after a problem."""
    at_admission, moves = [], []
    for k, loc in enumerate(e.resource.location or []):
        raw = loc.period.start if loc.period is not None else None
        when = utc(raw)
        if raw is not None and when is None:
            ctx.problem(e, f"location[{k}].period.start", _time_problem(raw, "the time the patient came to this location"),
                        "value")
            return None
        if when is None or when <= start:
            at_admission.append(loc)
            continue
        texts = _place(ctx, loc)
        bed = texts[0][:32] if texts else None
        moves.append(Move(when, _unit_named(texts), bed, f"{e.path}.location[{k}].period.start"))
    return at_admission, sorted(moves, key=lambda m: m.at)


def _discharge(ctx: _Context, e: Entry, start: dt.datetime, moves: list[Move]) -> tuple[dt.datetime | None, bool]:
    """(a finished Encounter's period.end, the discharge; whether it could be read)."""
    enc = e.resource
    raw = enc.period.end if enc.period is not None else None
    if enc.status != "finished" and raw is None:
        return None, True
    end = utc(raw)
    if end is None:
        ctx.problem(e, "period.end", _time_problem(raw, "the discharge time (a finished Encounter's period.end)"),
                    "required")
        return None, False
    if end < start:
        ctx.problem(e, "period.end", f"the discharge {end.isoformat()} precedes the ICU admission {start.isoformat()} "
                                     "(period.start)", "value")
        return None, False
    late = [m for m in moves if m.at > end]
    for m in late:
        ctx.problems.append(Problem(m.expression, f"a transfer at {m.at.isoformat()} after the discharge "
                                                  f"{end.isoformat()} (period.end)", e.label, "business-rule"))
    return end, not late


def _identity(ctx: _Context, e: Entry) -> tuple[StayEncounter | None, dict[str, str]] | None:
    """The Encounter's id and identifiers, and the elements they came from; None after a problem.
    Refused rather than cut: a shortened id or identifier would name another Encounter."""
    enc, where = e.resource, {}
    eid = enc.id
    if eid:
        where["id"] = f"{e.path}.id"
    elif e.full_url and not e.full_url.lower().startswith(("urn:uuid:", "urn:oid:")):
        m = _FULL_URL_ID.search(e.full_url)
        if m is None:
            ctx.note(e, "id", "no id, and the fullUrl does not end in Encounter/[id]: the RiskAssessments and Flags "
                              "name the Encounter by its identifier only, if any")
        else:
            eid, where["id"] = m.group(1), e.path.removesuffix(".resource") + ".fullUrl"
            if not _FHIR_ID.fullmatch(eid):
                ctx.problems.append(Problem(where["id"], f"the Encounter id the fullUrl ends in ({eid[:40]!r}) is no "
                                                         "FHIR id (letters, digits, '-' and '.')", e.label, "invalid"))
                return None
    if eid and len(eid) > ID_MAX:
        ctx.problems.append(Problem(where["id"], f"the Encounter id is {len(eid)} characters; a FHIR id is at most "
                                                 f"{ID_MAX}", e.label, "too-long"))
        return None
    identifiers, bad = [], False
    for k, ident in enumerate(enc.identifier or []):
        if not ident.value:
            continue
        for element, text, limit in (("system", ident.system, SYSTEM_MAX), ("value", ident.value, VALUE_MAX)):
            if text is None:
                continue
            if len(text) > limit:
                ctx.problem(e, f"identifier[{k}].{element}", f"the Encounter's identifier {element} is {len(text)} "
                                                             f"characters; the service keeps at most {limit}", "too-long")
                bad = True
            elif not text.isprintable() or text != text.strip() or (element == "system" and " " in text):
                ctx.problem(e, f"identifier[{k}].{element}", f"the Encounter's identifier {element} holds control "
                                                             "characters or surrounding spaces"
                                                             + (" (a URI has no spaces)" if element == "system" else ""))
                bad = True
        if not identifiers:
            where["identifier"] = f"{e.path}.identifier[{k}]"
        where[f"identifier.{len(identifiers)}"] = f"{e.path}.identifier[{k}]"
        identifiers.append((ident.system, ident.value))
    if bad:
        return None
    if not eid and not identifiers:
        return None, where
    return StayEncounter(eid or None, tuple(identifiers)), where


def _admissions(ctx: _Context, entries: list[Entry], patients: dict[str, Entry], answers) -> list[Admitted]:
    encounters: dict[str, list[tuple[int, Entry]]] = {}
    for i, e in enumerate(entries):
        if type(e.resource).__name__ == "Encounter":
            pid = ctx.patient_of(e, "subject")
            answers[i] = ("Encounter", pid)
            if pid is not None:
                encounters.setdefault(pid, []).append((i, e))
    out = []
    for pid, found in encounters.items():
        parents = set()
        for _, e in found:
            parent, _ = ctx.target(e.resource.partOf.reference if e.resource.partOf else None, "Encounter", _ENCOUNTER_REF)
            if parent is not None:
                parents.add(id(parent))
        icu = [(i, e) for i, e in found if id(e) not in parents]
        if len(icu) != 1:
            for _, e in icu or found:
                ctx.problem(e, "partOf", f"patient {pid} has {len(icu)} Encounters in this bundle that are not the "
                                         "hospital stay of another: send one ICU Encounter (partOf the hospital "
                                         "Encounter, if any, and no cycle)", "business-rule")
            continue
        _, e = icu[0]
        enc = e.resource
        start = utc(enc.period.start if enc.period else None)
        if start is None:
            ctx.problem(e, "period.start", _time_problem(enc.period.start if enc.period else None,
                                                         "the ICU admission time"), "required")
            continue
        placed = _locations(ctx, e, start)
        if placed is None:
            continue
        at_admission, moves = placed
        discharged_at, readable = _discharge(ctx, e, start, moves)
        if not readable:
            continue
        identity = _identity(ctx, e)
        if identity is None:
            continue
        unit = _unit(ctx, enc, at_admission)
        unit_from_move = unit is None and bool(moves)
        if unit_from_move:
            unit = moves[0].unit
        hosp = None
        parent, _ = ctx.target(enc.partOf.reference if enc.partOf else None, "Encounter", _ENCOUNTER_REF)
        if parent is not None:
            pstart = utc(parent.resource.period.start if parent.resource.period else None)
            if pstart is None:
                ctx.problem(parent, "period.start", _time_problem(parent.resource.period.start if parent.resource.period
                                                                  else None, "the hospital admission time"), "required")
                continue
            hosp = round((pstart - start).total_seconds() / 3600.0, 6)
        patient = patients.get(pid)
        age = gender = None
        if patient is not None:
            age = _age(patient.resource, start)
            gender = {"male": 1, "female": 0}.get(patient.resource.gender)
        try:
            adm = schemas.Admission(patient_id=pid, age=age, gender=gender, unit=unit, hosp_adm_time=hosp,
                                    icu_admit_time=start)
        except ValidationError as err:
            where = {"age": (patient, "birthDate"), "hosp_adm_time": (parent, "period.start"),
                     "icu_admit_time": (e, "period.start"), "patient_id": (e, "subject.reference")}
            for x in err.errors():
                name = x["loc"][0] if x.get("loc") else "patient_id"
                target, element = where.get(name, (e, "subject"))
                ctx.problem(target or e, element, f"{name}: {str(x.get('msg', '')).removeprefix('Value error, ')}")
            continue
        out.append(Admitted(adm, f"{e.path}.period.start", e.label, moves, unit_from_move, discharged_at,
                            f"{e.path}.period.end", *identity))
    _one_patient_each(ctx, out)
    return out


def _one_patient_each(ctx: _Context, admitted: list[Admitted]) -> None:
    """An Encounter is one stay of one patient: an Encounter id, or identifier, that the bundle
    gives two patients' ICU Encounters is refused at the later one (a stored patient's is refused
    when the bundle is stored: service/patients/encounter.py)."""
    seen: dict[object, str] = {}
    for a in admitted:
        if a.encounter is None:
            continue
        pid = a.admission.patient_id
        parts = ([("id", ("id", a.encounter.id))] if a.encounter.id is not None else []) + \
                [(f"identifier.{j}", ("identifier", ident)) for j, ident in enumerate(a.encounter.identifiers)]
        for part, key in parts:
            other = seen.setdefault(key, pid)
            if other != pid:
                what = f"Encounter/{a.encounter.id}" if part == "id" else "the Encounter's identifier"
                ctx.problems.append(Problem(a.encounter_where[part], f"{what} is also patient {other}'s ICU Encounter "
                                                                     "in this bundle; an Encounter is one stay of one "
                                                                     "patient", a.label, "business-rule"))
                break


def _unit_of(quantity) -> tuple[str | None, str]:
    """The quantity's UCUM code (else its human-readable unit) and the element it came from."""
    if quantity.code and quantity.system in (None, UCUM):
        return quantity.code, "code"
    return quantity.unit, "unit"


def _value(ctx: _Context, entry: Entry, element: str, code: Code, quantity, absent) -> float | None:
    """The value in the model's unit, or None (not measured, or a problem recorded)."""
    if quantity is None or quantity.value is None:
        if absent is None:
            ctx.problem(entry, f"{element}Quantity.value" if quantity is not None else f"{element}[x]",
                        f"{code.loinc} {code.display} needs a valueQuantity with a value (or a dataAbsentReason when "
                        "it was not measured)", "required")
        return None
    if quantity.comparator:
        ctx.problem(entry, f"{element}Quantity.comparator", f"a bound ({quantity.comparator[:4]!r} "
                    f"{float(quantity.value):g}) is not a measured value; send the measurement, or omit it", "not-supported")
        return None
    if quantity.system not in (None, UCUM) and not quantity.unit:
        ctx.problem(entry, f"{element}Quantity.system", f"units must be UCUM ({UCUM}), got {quantity.system!r}", "code-invalid")
        return None
    unit, where = _unit_of(quantity)
    accepted = ", ".join(code.accepted)
    if unit is None:
        ctx.problem(entry, f"{element}Quantity.code", f"{code.loinc} {code.display} has no unit; accepted (UCUM): {accepted}",
                    "required")
        return None
    conversion = code.accepted.get(unit)
    if conversion is None:
        ctx.problem(entry, f"{element}Quantity.{where}", f"unit {unit[:40]!r} of {code.loinc} {code.display} cannot be "
                    f"converted to {code.unit} (the model's unit for {code.feature}); accepted (UCUM): {accepted}",
                    "not-supported")
        return None
    return conversion.to_model(float(quantity.value))


def _categories(obs) -> list[str]:
    return [c.code for concept in obs.category or [] for c in concept.coding or [] if c.system == CATEGORY and c.code]


def _components(ctx: _Context, entry: Entry, table: CodeTable, code: Code) -> list[tuple[Code, float, str]] | None:
    """The components read beside the value of `code` (pulse oximetry's inhaled oxygen
    concentration, FiO2); every other component is noted as not read. None after a problem."""
    read = COMPONENTS.get(code.loinc, ())
    out, bad = [], False
    for k, comp in enumerate(entry.resource.component or []):
        codes = [c.code for c in (comp.code.coding or []) if c.system == LOINC and c.code]
        part = next((table.by_loinc[c] for c in read if c in codes), None)
        if part is None:
            shown = ", ".join(codes[:3]) or "no LOINC code"
            ctx.note(entry, f"component[{k}]", f"component {shown[:60]} is not read (the model reads from {code.loinc} "
                                               f"{'its value and ' + ', '.join(read) if read else 'its value only'}); "
                                               "ignored")
            continue
        n = len(ctx.problems)
        value = _value(ctx, entry, f"component[{k}].value", part, comp.valueQuantity, comp.dataAbsentReason)
        bad |= len(ctx.problems) > n
        if value is not None:
            out.append((part, value, f"{entry.path}.component[{k}].valueQuantity.value"))
    return None if bad else out


def _measurements(ctx: _Context, entry: Entry, table: CodeTable) -> list[tuple[Code, float, str]] | None:
    """(code, value in the model's unit, value expression) of an Observation; None after a problem."""
    obs = entry.resource
    loincs = [c.code for c in (obs.code.coding or []) if c.system == LOINC and c.code] if obs.code else []
    categories = _categories(obs)
    if BP_PANEL in loincs and table.match(loincs, categories) is None:
        out, bad = [], False
        if not obs.component:
            ctx.problem(entry, "component", f"the {BP_PANEL} blood pressure panel carries its values as components "
                                            "(8480-6 systolic, 8462-4 diastolic, 8478-0 mean)", "required")
            return None
        for k, comp in enumerate(obs.component):
            codes = [c.code for c in (comp.code.coding or []) if c.system == LOINC and c.code]
            code = table.match(codes)
            if code is None:
                ctx.problem(entry, f"component[{k}].code", "no LOINC code this model reads (for the panel: 8480-6, "
                                                           "8462-4, 8478-0)", "code-invalid")
                bad = True
                continue
            n = len(ctx.problems)
            value = _value(ctx, entry, f"component[{k}].value", code, comp.valueQuantity, comp.dataAbsentReason)
            bad |= len(ctx.problems) > n
            if value is not None:
                out.append((code, value, f"{entry.path}.component[{k}].valueQuantity.value"))
        return None if bad else out
    code = table.match(loincs, categories)
    if code is None:
        shown = ", ".join(loincs[:5]) or "none"
        ctx.problem(entry, "code.coding", f"no LOINC code the model reads (LOINC codes given: {shown}); the codes it "
                                          "reads are listed in docs/fhir.md (models/fhir_codes.csv)", "code-invalid")
        return None
    n = len(ctx.problems)
    value = _value(ctx, entry, "value", code, obs.valueQuantity, obs.dataAbsentReason)
    parts = _components(ctx, entry, table, code)
    if len(ctx.problems) > n or parts is None:
        return None
    return ([] if value is None else [(code, value, f"{entry.path}.valueQuantity.value")]) + parts


def _effective(ctx: _Context, entry: Entry) -> tuple[dt.datetime | None, str]:
    """When it was measured, and the element that says so: effectiveDateTime, effectiveInstant or
    effectivePeriod.start (for a specimen, when its collection began: the start is the instant
    the values describe, the end only when collecting stopped)."""
    obs = entry.resource
    if obs.effectivePeriod is not None:
        start, element = obs.effectivePeriod.start, "effectivePeriod.start"
    elif obs.effectiveInstant is not None:
        start, element = obs.effectiveInstant, "effectiveInstant"
    else:
        start, element = obs.effectiveDateTime, "effectiveDateTime"
    ts = utc(start)
    if ts is None:
        ctx.problem(entry, element, _time_problem(start, "the time measured (effectiveDateTime, effectiveInstant or "
                                                         "effectivePeriod.start)"), "required")
    return ts, element


def _source_id(obs, entry: Entry) -> str | None:
    """What a correction of this Observation repeats: its business identifier (system|value, as a
    lab's accession), else its id, else a fullUrl that is a URL (a urn:uuid only names the entry
    inside one bundle). None: the values are known by variable and time. Longer than a source id
    may be: a digest of it."""
    ident = next((i for i in (obs.identifier or []) if i.value), None)
    url = entry.full_url if entry.full_url and not entry.full_url.lower().startswith(("urn:uuid:", "urn:oid:")) else None
    found = (f"{ident.system or ''}|{ident.value}" if ident is not None else None) or obs.id or url
    if found is None:
        return None
    if len(found) > 200 or not found.isascii() or not found.isprintable() or " " in found:
        return "sha256:" + hashlib.sha256(found.encode("utf-8", "surrogatepass")).hexdigest()
    return found


def _observation_group(ctx: _Context, entry: Entry, table: CodeTable, groups: dict) -> int | None:
    obs = entry.resource
    pid = ctx.patient_of(entry, "subject")
    if obs.status not in SCORED_STATUSES:
        ctx.problem(entry, "status", f"status {str(obs.status)[:40]!r} is not scored; accepted: {', '.join(SCORED_STATUSES)}",
                    "business-rule")
    ts, element = _effective(ctx, entry)
    found = _measurements(ctx, entry, table)
    if pid is None or ts is None or found is None or obs.status not in SCORED_STATUSES:
        return None
    if not found:
        return -1  # not measured (dataAbsentReason): nothing to feed
    key = len(groups)  # each Observation on its own: the service files values by hour (models/grid.py)
    if key not in groups:
        groups[key] = len(groups), Group(pid, ts, str(obs.status), _source_id(obs, entry))
    index, group = groups[key]
    group.times.append((f"{entry.path}.{element}", entry.label))
    for code, value, where in found:
        if code.feature in group.vitals and not (group.vitals[code.feature] == value or
                                                 (math.isnan(value) and math.isnan(group.vitals[code.feature]))):
            first = group.sources[code.feature][1]
            ctx.problems.append(Problem(where, f"{code.feature} of patient {pid} at {ts.isoformat()} is given twice with "
                                               f"different values ({group.vitals[code.feature]:g} in {first}, {value:g} here)",
                                        entry.label, "duplicate"))
            continue
        group.vitals[code.feature] = value
        group.sources[code.feature] = (where, entry.label)
    return index


def _scored(ctx: _Context, groups: list[Group]) -> list[schemas.Observation]:
    """Each group through the JSON API's own validation (ranges, times), problems placed back on
    the FHIR element that gave the value."""
    out = []
    for g in groups:
        try:
            out.append(schemas.Observation(patient_id=g.patient_id, timestamp=g.ts, vitals=g.vitals, status=g.status,
                                           source_id=g.source_id))
        except ValidationError as err:
            for x in err.errors():
                loc = x.get("loc") or ()
                if x.get("type") == "field_problems":
                    for name, why in x["ctx"]["problems"]:
                        where, label = g.sources.get(name, g.times[0])
                        ctx.problems.append(Problem(where, f"{name}: {why}", label, "value"))
                else:
                    where, label = g.times[0]
                    ctx.problems.append(Problem(where, f"{'.'.join(map(str, loc))}: "
                                                       f"{str(x.get('msg', '')).removeprefix('Value error, ')}", label, "value"))
    return out


def map_entries(entries: list[Entry], table: CodeTable) -> Mapped:
    """Admissions and grouped observations of a bundle's entries; a Refusal(422) listing every
    problem when any entry cannot be mapped (then nothing is to be stored)."""
    ctx = _Context(entries)
    answers: list[tuple[str, object]] = [("Location", None)] * len(entries)
    patients = {}
    for i, e in enumerate(entries):
        if type(e.resource).__name__ == "Patient":
            pid = e.resource.id
            if not pid or not _PATIENT_ID.match(pid):
                ctx.problem(e, "id", "a Patient needs an id (the service's patient id) starting with a letter or digit",
                            "required")
                continue
            patients[pid] = e
            answers[i] = ("Patient", pid)
    admissions = _admissions(ctx, entries, patients, answers)
    groups: dict = {}
    for i, e in enumerate(entries):
        if type(e.resource).__name__ == "Observation":
            index = _observation_group(ctx, e, table, groups)
            answers[i] = ("skipped", None) if index is None or index < 0 else ("Observation", index)
    ordered = [g for _, g in sorted(groups.values(), key=lambda x: x[0])]
    admitted = {a.admission.patient_id: a for a in admissions}
    for g in ordered:
        a = admitted.get(g.patient_id)
        if a is not None and g.ts < a.admission.icu_admit_time:
            where, label = g.times[0]
            ctx.problems.append(Problem(where, f"{g.ts.isoformat()} precedes patient {g.patient_id}'s ICU admission "
                                               f"({a.admission.icu_admit_time.isoformat()}, {a.expression})",
                                        label, "business-rule"))
        if a is not None and a.discharged_at is not None and g.ts > a.discharged_at:
            where, label = g.times[0]
            ctx.problems.append(Problem(where, f"{g.ts.isoformat()} is after patient {g.patient_id}'s discharge "
                                               f"({a.discharged_at.isoformat()}, {a.discharge_expression}): it belongs "
                                               "to another stay", label, "business-rule"))
    observations = _scored(ctx, ordered)
    if ctx.problems:
        raise Refusal(422, ctx.problems)
    return Mapped(admissions, ordered, observations, answers, ctx.notes)
