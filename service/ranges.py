"""The 40 PhysioNet 2019 variables in model order, the range in which each is plausible, and what
the API refuses outright.

A value outside its plausible range (a wrong unit, a typing error, sensor garbage) is accepted,
stored as charted, scored as charted and answered with a warning naming the field and the range:
the hospital charted it, its interface cannot take it back, and the model was trained and
validated on charting that holds such values (the public archive has FiO2 from -50 to 4000,
temperatures of 50 deg C, a potassium of 27.5) with its inputs bounded (models/contract.py: each
value enters as a z-score clipped at +-8), so one wrong value cannot run away with the risk.
Refusing it instead would leave the ward looking at a risk that no validation ever saw (every
later hour of the stay stepped without it), and leave the sender with a message it cannot fix.
Refused (4xx) is only what cannot be a value of that variable in any unit: an unknown name, a
non-finite number, a binary field other than 0 or 1, a magnitude of a million or more.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from models.contract import DEMOGRAPHICS, FEATURES, INDEX  # noqa: F401  (re-exported for the service)

BINARY = frozenset({"Gender", "Unit1", "Unit2"})
# ICULOS is derived by the service from the ICU admission time, never posted.
DERIVED = frozenset({"ICULOS"})


@dataclass(frozen=True)
class Limit:
    low: float
    high: float
    unit: str


LIMITS: dict[str, Limit] = {
    "HR": Limit(0, 300, "beats/min"),
    "O2Sat": Limit(0, 100, "%"),
    "Temp": Limit(20, 45, "deg C"),
    "SBP": Limit(0, 300, "mm Hg"),
    "MAP": Limit(0, 300, "mm Hg"),
    "DBP": Limit(0, 300, "mm Hg"),
    "Resp": Limit(0, 100, "breaths/min"),
    "EtCO2": Limit(0, 150, "mm Hg"),
    "BaseExcess": Limit(-50, 50, "mmol/L"),
    "HCO3": Limit(0, 80, "mmol/L"),
    "FiO2": Limit(0, 1, "fraction"),
    "pH": Limit(6.5, 8.0, "pH"),
    "PaCO2": Limit(0, 200, "mm Hg"),
    "SaO2": Limit(0, 100, "%"),
    "AST": Limit(0, 20000, "IU/L"),
    "BUN": Limit(0, 300, "mg/dL"),
    "Alkalinephos": Limit(0, 5000, "IU/L"),
    "Calcium": Limit(0, 30, "mg/dL"),
    "Chloride": Limit(40, 200, "mmol/L"),
    "Creatinine": Limit(0, 50, "mg/dL"),
    "Bilirubin_direct": Limit(0, 100, "mg/dL"),
    "Glucose": Limit(0, 3000, "mg/dL"),
    "Lactate": Limit(0, 50, "mmol/L"),
    "Magnesium": Limit(0, 20, "mg/dL"),
    "Phosphate": Limit(0, 30, "mg/dL"),
    "Potassium": Limit(0, 20, "mmol/L"),
    "Bilirubin_total": Limit(0, 100, "mg/dL"),
    "TroponinI": Limit(0, 1000, "ng/mL"),
    "Hct": Limit(0, 100, "%"),
    "Hgb": Limit(0, 30, "g/dL"),
    "PTT": Limit(0, 250, "seconds"),
    "WBC": Limit(0, 500, "10^3/uL"),
    "Fibrinogen": Limit(0, 2000, "mg/dL"),
    "Platelets": Limit(0, 3000, "10^3/uL"),
    "Age": Limit(0, 120, "years"),
    "Gender": Limit(0, 1, "0 female / 1 male"),
    "Unit1": Limit(0, 1, "0/1 (MICU)"),
    "Unit2": Limit(0, 1, "0/1 (SICU)"),
    "HospAdmTime": Limit(-100000, 24, "hours from hospital to ICU admission"),
    "ICULOS": Limit(0, 100000, "hours"),
}
assert tuple(LIMITS) == FEATURES


# No PhysioNet variable reaches this in any unit (the archive's largest magnitude is an AST of
# 9,961); beyond it a value is garbage rather than a measurement in a wrong unit.
HARD_LIMIT = 1e6


def check_value(name: str, value: float) -> str | None:
    """None if `value` can be stored for `name`, else the reason it is refused. The schema's field
    type (service.schemas.Number) has already made `value` a number: this is the one place values
    are refused, and nothing after the schema checks a value again. A value outside the plausible
    range passes here: see `implausible`."""
    if name not in LIMITS:
        return f"unknown variable {name!r} (allowed are the 40 PhysioNet 2019 names {' '.join(FEATURES)})"
    if not math.isfinite(value):
        return "must be a finite number (omit a variable that was not measured)"
    lim = LIMITS[name]
    if name in BINARY and value not in (0, 1):
        return "must be 0 or 1"
    if abs(value) >= HARD_LIMIT:
        return f"{value:g} cannot be a value of {name} in any unit (magnitude {HARD_LIMIT:g} or more)"
    return None


def implausible(name: str, value: float) -> str | None:
    """None if `value` (already accepted by `check_value`) is inside the plausible range of `name`,
    else the warning that goes back to the sender and onto the patient's page."""
    lim = LIMITS[name]
    if lim.low <= value <= lim.high:
        return None
    return (f"{value:g} is outside the plausible range {lim.low:g} to {lim.high:g} {lim.unit}: stored and scored "
            f"as charted; check the sender's unit")


def implausible_values(values: dict[str, float]) -> list[tuple[str, str]]:
    """(name, warning) for each value of an accepted observation outside its plausible range."""
    return [(name, why) for name, value in values.items() if (why := implausible(name, value)) is not None]
