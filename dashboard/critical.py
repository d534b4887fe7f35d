"""Critical values: the ranges at which the dashboard highlights a measured value, in ONE table
with the source of each. PhysioNet 2019 names and units (service/ranges.py). A highlight draws the
eye; it decides nothing (the model's risk and the alarms do not read this table).

Sources:
- NEWS2: Royal College of Physicians, National Early Warning Score 2, 2017 (the 3-point bands).
- SSC 2021: Evans et al., Surviving Sepsis Campaign guidelines 2021, Crit Care Med 2021;49:e1063
  (MAP target 65 mm Hg; lactate >= 4 mmol/L prompts fluid resuscitation).
- SOFA: Vincent et al., Intensive Care Med 1996;22:707 (the 3-point bands).
- BTS 2017: O'Driscoll et al., BTS guideline for oxygen use in adults, Thorax 2017;72:i1 (88% is
  the lowest target saturation, for patients at risk of hypercapnia).
- ADA 2024: American Diabetes Association, Standards of Care 6 (level 2 hypoglycaemia < 54 mg/dL).
- BICAR-ICU: Jaber et al., Lancet 2018;392:31 (severe acidaemia: pH <= 7.20).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Critical:
    low: float | None      # critical when value < low (strictly), or <= low where `inclusive`
    high: float | None     # critical when value > high (strictly), or >= high where `inclusive`
    unit: str
    source: str
    inclusive: bool = False

    def check(self, value: float) -> str | None:
        """The rule broken ('< 88 %'), None when the value is not critical."""
        below = "<=" if self.inclusive else "<"
        above = ">=" if self.inclusive else ">"
        if self.low is not None and (value <= self.low if self.inclusive else value < self.low):
            return f"{below} {self.low:g} {self.unit}"
        if self.high is not None and (value >= self.high if self.inclusive else value > self.high):
            return f"{above} {self.high:g} {self.unit}"
        return None


CRITICAL: dict[str, Critical] = {
    "O2Sat": Critical(88, None, "%", "BTS 2017"),
    "HR": Critical(40, 131, "beats/min", "NEWS2", inclusive=True),
    "Resp": Critical(8, 25, "breaths/min", "NEWS2", inclusive=True),
    "SBP": Critical(90, 220, "mm Hg", "NEWS2", inclusive=True),
    "MAP": Critical(65, None, "mm Hg", "SSC 2021"),
    "Temp": Critical(35.0, 39.1, "deg C", "NEWS2", inclusive=True),
    "Lactate": Critical(None, 4.0, "mmol/L", "SSC 2021", inclusive=True),
    "Platelets": Critical(50, None, "10^3/uL", "SOFA"),
    "Creatinine": Critical(None, 3.5, "mg/dL", "SOFA", inclusive=True),
    "Bilirubin_total": Critical(None, 6.0, "mg/dL", "SOFA", inclusive=True),
    "pH": Critical(7.20, None, "", "BICAR-ICU", inclusive=True),
    "Glucose": Critical(54, None, "mg/dL", "ADA 2024"),
}


def critical_rule(feature: str, value) -> str | None:
    """Why `value` of `feature` is critical ('< 88 % (BTS 2017)'), None if it is not or is no number."""
    rule = CRITICAL.get(feature)
    if rule is None or value is None or isinstance(value, (str, bool)):
        return None
    broken = rule.check(float(value))
    return None if broken is None else f"{broken.replace('  ', ' ').strip()} ({rule.source})"
