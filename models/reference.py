"""Clinical reference values: what "normal" is for each PhysioNet 2019 variable, in its units.

One table, `models/reference_values.csv` (shipped as package data), one row per column of the
contract in file order:

    feature, unit, system, sofa, normal, low, high, abnormal, source

- `normal`: a round value inside the adult reference range [low, high] that every source below
  agrees is normal. Explanations compare each value with it (`models/explain.py`), the
  plausibility suite (`training/sepsis/plausibility.py`) moves variables away from it.
- `abnormal` (13 variables): a clearly abnormal value a clinician reads as organ dysfunction or
  sepsis physiology (e.g. MAP 55, lactate 6, platelets 60): past a SOFA/SIRS/qSOFA threshold where
  one exists. The direction is where it lies from `normal` (above: higher is worse).
- `system`: the organ system a clinician groups the variable under; `sofa`: the SOFA component
  it feeds, if any.
- Administrative columns (Age, Gender, Unit1, Unit2, HospAdmTime, ICULOS) have no physiological
  normal: `normal` is empty.

Sources (keys in the table's `source` column)
- [SEPSIS3] Singer M, Deutschman CS, Seymour CW, et al. The Third International Consensus
  Definitions for Sepsis and Septic Shock (Sepsis-3). JAMA 2016;315(8):801-810 (qSOFA; septic
  shock: vasopressors for MAP >= 65 and lactate > 2 mmol/L).
- [SOFA] Vincent JL, Moreno R, Takala J, et al. The SOFA (Sepsis-related Organ Failure
  Assessment) score. Intensive Care Med 1996;22:707-710, as tabulated in Sepsis-3.
- [SIRS] Bone RC, Balk RA, Cerra FB, et al. Definitions for sepsis and organ failure (ACCP/SCCM
  Consensus Conference). Chest 1992;101(6):1644-1655.
- [MSD-LAB] MSD Manual, "Blood Tests" reference ranges (msdmanuals.com, home edition table) and
  the Professional edition's "Normal Laboratory Values" (Padilla O, Abadie J; rev. 2021). Ranges
  vary by laboratory; the `normal` value sits well inside them.
- [MSD-VS] Standard adult resting vital signs (MSD Manual; HR 60-100/min, RR 12-20/min).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.contract import FEATURES, N_FEATURES

TABLE = Path(__file__).with_name("reference_values.csv")
SYSTEMS = ("cardiovascular", "respiratory", "renal", "hepatic", "coagulation", "hematologic",
           "metabolic/perfusion", "inflammation", "administrative")
SOFA = ("respiratory", "coagulation", "liver", "cardiovascular", "renal")
COLUMNS = ("feature", "unit", "system", "sofa", "normal", "low", "high", "abnormal", "source")


class ReferenceTableError(ValueError):
    """The reference table is missing a column, a variable or a value, or contradicts itself."""


@dataclass(frozen=True)
class Reference:
    feature: str
    unit: str
    system: str
    sofa: str | None
    normal: float | None
    low: float | None
    high: float | None
    abnormal: float | None
    source: str

    @property
    def direction(self) -> str | None:
        """"high" when the abnormal value lies above normal (worse when higher), "low" below."""
        if self.abnormal is None or self.normal is None:
            return None
        return "high" if self.abnormal > self.normal else "low"


def _number(text: str, where: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ReferenceTableError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ReferenceTableError(f"{where}: {text!r} is not a finite number")
    return value


def parse_references(rows, source: str = "<reference table>") -> dict[str, Reference]:
    """Rows of the table (dicts) -> {feature: Reference} in contract order, every rule checked."""
    out: dict[str, Reference] = {}
    for line, r in enumerate(rows, start=2):
        missing = [c for c in COLUMNS if c not in r or r[c] is None]
        if missing:
            raise ReferenceTableError(f"{source}, line {line}: missing column(s) {missing}")
        where = f"{source}, line {line} ({r['feature']})"
        if r["feature"] not in FEATURES:
            raise ReferenceTableError(f"{where}: not a PhysioNet 2019 column")
        if r["feature"] in out:
            raise ReferenceTableError(f"{where}: listed twice")
        if r["system"] not in SYSTEMS:
            raise ReferenceTableError(f"{where}: system {r['system']!r} is not one of {SYSTEMS}")
        sofa = r["sofa"].strip() or None
        if sofa is not None and sofa not in SOFA:
            raise ReferenceTableError(f"{where}: sofa {sofa!r} is not one of {SOFA}")
        ref = Reference(r["feature"], r["unit"].strip(), r["system"], sofa,
                        *(_number(r[c], f"{where}, {c}") for c in ("normal", "low", "high", "abnormal")),
                        source=r["source"].strip())
        clinical = ref.system != "administrative"
        if clinical and (ref.normal is None or ref.low is None or ref.high is None or not ref.source):
            raise ReferenceTableError(f"{where}: a clinical variable needs normal, low, high and a source")
        if not clinical and (ref.normal is not None or ref.abnormal is not None):
            raise ReferenceTableError(f"{where}: an administrative column has no normal or abnormal value")
        if clinical and not ref.low <= ref.normal <= ref.high:
            raise ReferenceTableError(f"{where}: normal {ref.normal} is outside its range [{ref.low}, {ref.high}]")
        if ref.abnormal is not None and ref.low <= ref.abnormal <= ref.high:
            raise ReferenceTableError(f"{where}: abnormal {ref.abnormal} is inside the normal range")
        out[ref.feature] = ref
    absent = [f for f in FEATURES if f not in out]
    if absent:
        raise ReferenceTableError(f"{source}: no row for {absent}")
    return {f: out[f] for f in FEATURES}


def load_references(path: str | Path = TABLE) -> dict[str, Reference]:
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        return parse_references(csv.DictReader(f), str(path))


REFERENCES = load_references()
# [40] float32: each column's normal value, NaN for the administrative columns (no normal)
NORMAL = np.array([np.nan if REFERENCES[f].normal is None else REFERENCES[f].normal for f in FEATURES],
                  dtype=np.float32)
# variables with a documented abnormal value: what the plausibility suite moves, in contract order
PLAUSIBILITY = tuple(f for f in FEATURES if REFERENCES[f].abnormal is not None)
assert NORMAL.shape == (N_FEATURES,)
