"""The LOINC codes and UCUM units in which the model's 34 vital signs and labs arrive as FHIR
Observations: one table, `models/fhir_codes.csv`, read here by the service (FHIR in) and by the
replay encoder (FHIR out), so both speak the same codes.

Sources: the codes and their names are LOINC's (https://loinc.org, long common names); the
feature each one fills and the unit the model was trained in follow the PhysioNet/CinC 2019
challenge's variable descriptions (Reyna et al., 2020), except where its data contradict the
description: FiO2 is a fraction (0.21-1), Lactate mmol/L and Magnesium mg/dL, as in the values
the model saw. Units are UCUM codes (https://ucum.org).

`accepted` lists the units a value may come in, each `code=factor` or `code=factor,offset`:
model value = (value + offset) * factor, the factor a decimal or a fraction `a/b`. Molar
conversions use the analyte's molar mass (glucose 180.156 g/mol: mmol/L x 18.0156 = mg/dL; urea
nitrogen 28.014 mg per mmol; creatinine 113.12; bilirubin 584.66; calcium 40.08; magnesium
24.305; phosphorus 30.974; lactate 90.08; haemoglobin monomer 16.114 g/mmol).

`category` (optional): the row holds only for an Observation of that category
(http://terminology.hl7.org/CodeSystem/observation-category); a code's row without one is its
meaning otherwise. 2708-6 "Oxygen saturation in Arterial blood" is the code FHIR R4's vital-signs
profile gives SpO2, so in category vital-signs it is the pulse oximeter's O2Sat; in a laboratory
report (or with no category) it is the blood gas's SaO2.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from models.contract import CLINICAL

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# Blood pressure panel with all children optional: SBP, DBP, MAP arrive as its components.
BP_PANEL = "85354-9"
PULSE_OXIMETRY = "59408-5"
# Components read beside an Observation's own value, by the code its value was matched to. US Core
# pulse oximetry (59408-5, and the vital-signs SpO2 2708-6) may carry the oxygen the patient
# breathes: 3150-0 "Inhaled oxygen concentration" is FiO2 (a row of the table, % converted to the
# fraction); 3151-8 "Inhaled oxygen flow rate" (L/min) is a flow, not a concentration, and no
# model input. Any other component is not read either; the service says so per entry.
COMPONENTS: dict[str, tuple[str, ...]] = {PULSE_OXIMETRY: ("3150-0",), "2708-6": ("3150-0",)}
TABLE = Path(__file__).with_name("fhir_codes.csv")
# Age in years from a birth time, on both sides (the service reading Patient.birthDate and the
# replay encoder writing it): the Julian year.
YEAR_SECONDS = 365.25 * 86400.0


@dataclass(frozen=True)
class Conversion:
    factor: float
    offset: float = 0.0

    def to_model(self, value: float) -> float:
        if self.factor == 1.0 and self.offset == 0.0:
            return value  # the model's own unit: the value unchanged, bit for bit
        return (value + self.offset) * self.factor


@dataclass(frozen=True)
class Code:
    loinc: str
    display: str
    feature: str
    unit: str                           # the UCUM unit the model expects
    accepted: dict[str, Conversion]     # UCUM unit -> conversion to `unit`
    category: str = ""                  # the Observation category this row needs; "" for any


@dataclass(frozen=True)
class CodeTable:
    codes: tuple[Code, ...]  # file order: where an Observation carries several known codes, the first row wins

    @cached_property
    def by_loinc(self) -> dict[str, Code]:
        """Each code's meaning outside any category."""
        return {c.loinc: c for c in self.codes if not c.category}

    def match(self, loincs: Iterable[str], categories: Iterable[str] = ()) -> Code | None:
        """The table's first row among `loincs` whose category, if it names one, is among
        `categories` (a US Core pulse oximetry Observation carries 59408-5 and 2708-6: 59408-5
        comes first, so it is O2Sat; 2708-6 alone is O2Sat in category vital-signs, else SaO2)."""
        wanted, given = set(loincs), set(categories)
        return next((c for c in self.codes if c.loinc in wanted and (not c.category or c.category in given)), None)

    def for_feature(self, feature: str) -> Code:
        """The first (preferred) code of a feature: what the replay encoder sends."""
        return next(c for c in self.codes if c.feature == feature)


def _number(text: str) -> float:
    top, _, bottom = text.partition("/")
    return float(top) / float(bottom) if bottom else float(top)


def _conversions(text: str, where: str) -> dict[str, Conversion]:
    out = {}
    for item in text.split():
        unit, sep, spec = item.rpartition("=")
        if not sep or not unit:
            raise ValueError(f"{where}: accepted unit {item!r} is not unit=factor[,offset]")
        factor, _, offset = spec.partition(",")
        out[unit] = Conversion(_number(factor), _number(offset) if offset else 0.0)
    return out


def parse_codes(rows: Iterable[dict[str, str]], source: str = "table") -> CodeTable:
    codes = []
    for n, row in enumerate(rows, start=2):
        where = f"{source} line {n}"
        code = Code(row["loinc"].strip(), row["display"].strip(), row["feature"].strip(), row["unit"].strip(),
                    _conversions(row["accepted"], where), (row.get("category") or "").strip())
        if code.feature not in CLINICAL:
            raise ValueError(f"{where}: {code.feature!r} is not one of the model's vital signs or labs")
        if code.accepted.get(code.unit) != Conversion(1.0):
            raise ValueError(f"{where}: the model's unit {code.unit!r} must be accepted as {code.unit}=1")
        codes.append(code)
    keys = [(c.loinc, c.category) for c in codes]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{source}: a LOINC code is listed twice (for one category)")
    if orphans := sorted({c.loinc for c in codes if c.category} - {c.loinc for c in codes if not c.category}):
        raise ValueError(f"{source}: {', '.join(orphans)} has rows for a category only: add its row without one")
    for panel, parts in COMPONENTS.items():
        if missing := [p for p in (panel, *parts) if p not in {c.loinc for c in codes}]:
            raise ValueError(f"{source}: no row for {', '.join(missing)} (read as components of {panel})")
    if missing := [f for f in CLINICAL if f not in {c.feature for c in codes}]:
        raise ValueError(f"{source}: no code for {', '.join(missing)}")
    units = {}
    for c in codes:
        if units.setdefault(c.feature, c.unit) != c.unit:
            raise ValueError(f"{source}: {c.feature} has two model units ({units[c.feature]}, {c.unit})")
    return CodeTable(tuple(codes))


@lru_cache(maxsize=4)
def load_codes(path: str | Path = TABLE) -> CodeTable:
    with open(path, newline="", encoding="utf-8") as f:
        return parse_codes(csv.DictReader(f), str(path))
