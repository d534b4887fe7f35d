"""Familiar bedside context from a patient's observations: qSOFA, SIRS, SOFA components, lactate.

Pure functions over the observations the service stored (PhysioNet 2019 names and units), shown
beside the model's risk so a clinician can check it against the scores they know. Nothing here
feeds the model.

Which value counts: each variable's LATEST measured value (not NaN) taken at or before `now`
(observations stamped after `now` are ignored), and for the scores only if it is recent enough:

- vital signs (HR O2Sat Temp SBP MAP DBP Resp EtCO2): within VITALS_WINDOW_HOURS = 6 h,
- labs (the 26 laboratory columns, lactate included): within LABS_WINDOW_HOURS = 24 h,
- demographics (Age Gender Unit1 Unit2 HospAdmTime): no window (they do not go stale).

A window boundary is inclusive: a value exactly 6 h old still counts. `latest` lists every
variable ever measured, stale or not, with `stale` saying whether its window has passed. ICULOS
is derived by the service, not measured, and is not listed.

Units are those of the PhysioNet/CinC 2019 challenge data description (Reyna et al., Crit Care
Med 2020;48:210-217, Table 1; physionet.org/content/challenge-2019), as `service.ranges.LIMITS`
carries them (e.g. Temp deg C, WBC and Platelets 10^3/uL, Creatinine and Bilirubin mg/dL, Lactate
mmol/L).

Criteria and what the data cannot say:

- qSOFA (Seymour et al., JAMA 2016; Singer et al., Sepsis-3, JAMA 2016): respiratory rate >= 22
  /min, systolic BP <= 100 mm Hg, altered mentation (GCS < 15). Mentation is not recorded in
  PhysioNet 2019: that criterion is always met = None ("not recorded").
- SIRS (Bone et al., ACCP/SCCM consensus, Chest 1992): Temp > 38 or < 36 deg C; HR > 90 /min;
  Resp > 20 /min or PaCO2 < 32 mm Hg; WBC > 12 or < 4 x10^3/uL (or > 10% immature bands, not
  recorded). A two-part criterion is met when either known part is met, not met when at least
  one part is known and none is met (the note names the part that was missing), None when
  neither part is known.
- score = criteria met among those that could be evaluated (`evaluated` says how many of
  `of`); None when none could be evaluated.

SOFA components: see `sofa_components` for the table used (Vincent et al., Intensive Care Med
1996;22:707-710) and which inputs exist.
"""
from __future__ import annotations

import datetime as dt
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Iterable

from service.ranges import FEATURES, LIMITS

VITALS = FEATURES[:8]
LABS = FEATURES[8:34]
VITALS_WINDOW_HOURS = 6.0
LABS_WINDOW_HOURS = 24.0
NOT_LISTED = frozenset({"ICULOS"})  # derived from the admission time, not a measurement
LACTATE_ELEVATED = 2.0  # mmol/L: the Sepsis-3 septic-shock lactate criterion (Singer et al. 2016)

Timeline = list[tuple[dt.datetime, dict[str, float]]]


def window_hours(name: str) -> float | None:
    """How long a value of `name` counts for the scores (None: it does not go stale)."""
    if name in VITALS:
        return VITALS_WINDOW_HOURS
    if name in LABS:
        return LABS_WINDOW_HOURS
    return None


@dataclass(frozen=True)
class Reading:
    feature: str
    value: float
    measured_at: dt.datetime
    age_hours: float

    @property
    def stale(self) -> bool:
        window = window_hours(self.feature)
        return window is not None and self.age_hours > window

    def fields(self) -> dict:
        return {"value": _number(self.value), "unit": LIMITS[self.feature].unit,
                "measured_at": self.measured_at.isoformat(), "age_hours": round(self.age_hours, 2)}


def _number(value: float) -> float:
    return float(f"{float(value):.7g}")


def latest_readings(timeline: Iterable[tuple[dt.datetime, dict[str, float]]], now: dt.datetime) -> dict[str, Reading]:
    """Each variable's latest measured value at or before `now` (stale ones included). At equal
    times the later entry of the timeline wins. NaN and None are 'not measured'."""
    latest: dict[str, Reading] = {}
    for i, (ts, values) in enumerate(timeline):
        try:
            if ts > now:
                continue
        except TypeError:
            raise ValueError(f"timeline[{i}]: time {ts.isoformat()} and now {now.isoformat()} cannot be compared "
                             "(one has a time zone, the other not)") from None
        for name, value in values.items():
            if name not in LIMITS:
                raise ValueError(f"timeline[{i}]: unknown variable {name!r} (expected PhysioNet 2019 names)")
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ValueError(f"timeline[{i}]: {name} is {value!r}, not a number")
            if name in NOT_LISTED or value is None or not math.isfinite(value):
                continue
            seen = latest.get(name)
            if seen is None or ts >= seen.measured_at:
                latest[name] = Reading(name, float(value), ts, (now - ts).total_seconds() / 3600.0)
    return latest


def _current(latest: dict[str, Reading], name: str) -> Reading | None:
    """The reading if it is recent enough to score with."""
    reading = latest.get(name)
    return None if reading is None or reading.stale else reading


def _missing_note(name: str) -> str:
    return f"no {name} in the last {window_hours(name):g} h"


# A criterion part: (variable, rule in words, test)
Part = tuple[str, str, Callable[[float], bool]]


def _criterion(latest: dict[str, Reading], name: str, parts: list[Part], unrecorded: str | None = None) -> dict:
    """One criterion from one or two alternative parts (see the module docstring for the logic)."""
    known = [(p, r) for p in parts if (r := _current(latest, p[0])) is not None]
    met_parts = [(p, r) for p, r in known if p[2](r.value)]
    rule = " or ".join(p[1] for p in parts) + (f" or {unrecorded}" if unrecorded else "")
    notes = []
    if not met_parts:  # what is missing matters only while the criterion is not shown met
        notes = [_missing_note(p[0]) for p in parts if _current(latest, p[0]) is None]
        if unrecorded:
            notes.append(f"{unrecorded}: not recorded")
    chosen = met_parts[0] if met_parts else (known[0] if known else None)
    item = {"name": name, "met": (bool(met_parts) if known else None), "rule": rule,
            "feature": chosen[0][0] if chosen else parts[0][0]}
    if chosen:
        item.update(chosen[1].fields())
    else:
        item.update({"value": None, "unit": LIMITS[parts[0][0]].unit, "measured_at": None, "age_hours": None})
    item["note"] = "; ".join(notes) or None
    return item


def _not_recorded(name: str, rule: str) -> dict:
    return {"name": name, "met": None, "rule": rule, "feature": None, "value": None, "unit": None,
            "measured_at": None, "age_hours": None, "note": "not recorded in PhysioNet 2019 data"}


def _score(criteria: list[dict]) -> dict:
    evaluated = [c for c in criteria if c["met"] is not None]
    return {"score": sum(c["met"] for c in evaluated) if evaluated else None,
            "evaluated": len(evaluated), "of": len(criteria), "criteria": criteria}


def qsofa(latest: dict[str, Reading]) -> dict:
    return _score([
        _criterion(latest, "Respiratory rate", [("Resp", "Resp >= 22 /min", lambda v: v >= 22)]),
        _criterion(latest, "Systolic blood pressure", [("SBP", "SBP <= 100 mm Hg", lambda v: v <= 100)]),
        _not_recorded("Altered mentation", "GCS < 15"),
    ])


def sirs(latest: dict[str, Reading]) -> dict:
    return _score([
        _criterion(latest, "Temperature", [("Temp", "Temp > 38 or < 36 deg C", lambda v: v > 38 or v < 36)]),
        _criterion(latest, "Heart rate", [("HR", "HR > 90 /min", lambda v: v > 90)]),
        _criterion(latest, "Respiration", [("Resp", "Resp > 20 /min", lambda v: v > 20),
                                           ("PaCO2", "PaCO2 < 32 mm Hg", lambda v: v < 32)]),
        _criterion(latest, "White cell count", [("WBC", "WBC > 12 or < 4 x10^3/uL", lambda v: v > 12 or v < 4)],
                   unrecorded="immature bands > 10%"),
    ])


def _banded(value: float, upper_bounds: tuple[float, ...]) -> int:
    """0 below the first bound, 1 below the second, ...; len(bounds) at or above the last."""
    return sum(value >= b for b in upper_bounds)


def _component(latest, name: str, feature: str, score: Callable[[float], int], note: str | None = None) -> dict:
    reading = _current(latest, feature)
    if reading is None:
        return {"name": name, "score": None, "feature": feature, "value": None, "unit": LIMITS[feature].unit,
                "measured_at": None, "age_hours": None,
                "note": "; ".join(filter(None, [_missing_note(feature), note]))}
    return {"name": name, "score": score(reading.value), "feature": feature, **reading.fields(), "note": note}


def sofa_components(latest: dict[str, Reading]) -> dict:
    """SOFA components where PhysioNet 2019 has the inputs. The table (Vincent et al. 1996):

    | component        | 0      | 1         | 2          | 3             | 4       | here                 |
    |------------------|--------|-----------|------------|---------------|---------|----------------------|
    | respiration      | PaO2/FiO2 >= 400 | < 400 | < 300 | < 200 + support | < 100 + support | PaO2 not recorded: None (SaO2/FiO2 is not SOFA) |
    | coagulation      | Platelets >= 150 | < 150 | < 100 | < 50 | < 20 (x10^3/uL)     | Platelets            |
    | liver            | Bilirubin < 1.2 | 1.2-1.9 | 2.0-5.9 | 6.0-11.9 | >= 12 (mg/dL) | Bilirubin_total     |
    | cardiovascular   | MAP >= 70 | MAP < 70 | dopamine <= 5 or dobutamine | higher doses | ... | MAP only: 0 or 1  |
    | CNS              | GCS 15 | 13-14     | 10-12      | 6-9           | < 6     | not recorded: None   |
    | renal            | Creatinine < 1.2 | 1.2-1.9 | 2.0-3.4 | 3.5-4.9 | >= 5.0 (mg/dL) | Creatinine (urine output not recorded) |

    A value between two table rows (e.g. bilirubin 1.95) takes the lower score (bands are
    [1.2, 2.0), [2.0, 6.0), ...). Cardiovascular: vasopressor doses are not recorded, so 1 is the
    most this can show and a patient on vasopressors with MAP >= 70 shows 0.
    `total_available` = the sum over the components that have a score (0 when none has),
    `available` how many of the six do: a partial SOFA, never the full score.
    """
    components = [
        {"name": "Respiration", "score": None, "feature": None, "value": None, "unit": None, "measured_at": None,
         "age_hours": None, "note": "PaO2 is not recorded in PhysioNet 2019 (SaO2/FiO2 is not the SOFA criterion)"},
        _component(latest, "Coagulation", "Platelets", lambda v: 4 - _banded(v, (20, 50, 100, 150))),
        _component(latest, "Liver", "Bilirubin_total", lambda v: _banded(v, (1.2, 2.0, 6.0, 12.0))),
        _component(latest, "Cardiovascular", "MAP", lambda v: int(v < 70),
                   note="vasopressors not recorded: scores 2-4 cannot be assessed"),
        {"name": "Central nervous system", "score": None, "feature": None, "value": None, "unit": None,
         "measured_at": None, "age_hours": None, "note": "GCS is not recorded in PhysioNet 2019"},
        _component(latest, "Renal", "Creatinine", lambda v: _banded(v, (1.2, 2.0, 3.5, 5.0)),
                   note="urine output not recorded"),
    ]
    scored = [c["score"] for c in components if c["score"] is not None]
    return {"components": components, "total_available": sum(scored), "available": len(scored),
            "of": len(components)}


def lactate(latest: dict[str, Reading]) -> dict | None:
    """The latest lactate, also past its window (a ward reading "not measured" beside a 37 h old
    2.7 in the values table trusted neither): `stale` says it no longer counts, and then
    `elevated` is null, since an old value says nothing of the perfusion now."""
    reading = latest.get("Lactate")
    if reading is None:
        return None
    elevated = None if reading.stale else reading.value > LACTATE_ELEVATED
    return {**reading.fields(), "stale": reading.stale, "window_hours": window_hours("Lactate"), "elevated": elevated}


def latest_table(latest: dict[str, Reading]) -> list[dict]:
    """Every measured variable's latest value, in the PhysioNet column order."""
    return [{"feature": name, **latest[name].fields(), "stale": latest[name].stale,
             "window_hours": window_hours(name)}
            for name in FEATURES if name in latest]


def bedside_context(timeline: Timeline, now: dt.datetime) -> dict:
    """The JSON-ready bedside context of one patient at `now`:
    {"qsofa": {...}, "sirs": {...}, "sofa": {...}, "lactate": {...} | None, "latest": [...]}.

    timeline: the patient's observations, (time, {PhysioNet name: value}); order does not matter.
    """
    latest = latest_readings(timeline, now)
    return {"qsofa": qsofa(latest), "sirs": sirs(latest), "sofa": sofa_components(latest),
            "lactate": lactate(latest), "latest": latest_table(latest)}
