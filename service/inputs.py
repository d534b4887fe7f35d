"""Pure transforms from what a hospital system posts to the model's inputs.

ICULOS = floor(hours since ICU admission) + 1, so the first hour of a stay is ICULOS 1 as in the
PhysioNet files. Without an admission record the first observation's timestamp is the ICU
admission. Nothing is imputed here: unmeasured variables stay NaN and the model's state carries
the last values forward.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

from models.grid import hour_of
from service.ranges import DEMOGRAPHICS, FEATURES, INDEX

DEMOGRAPHIC_FIELDS = {"Age": "age", "Gender": "gender", "Unit1": "unit1", "Unit2": "unit2",
                      "HospAdmTime": "hosp_adm_time"}
assert tuple(DEMOGRAPHIC_FIELDS) == DEMOGRAPHICS
UNIT_CODES = {"MICU": (1.0, 0.0), "SICU": (0.0, 1.0), "other": (0.0, 0.0)}


def unit_name(unit1: float | None, unit2: float | None) -> str | None:
    """The ICU type back from the PhysioNet one-hot; None when it was never recorded."""
    for name, code in UNIT_CODES.items():
        if (unit1, unit2) == code:
            return name
    return None


def iculos(ts: dt.datetime, icu_admit: dt.datetime) -> float:
    """The ICULOS fed to the model: the contract's hour of the stay (models/grid.py), as a float."""
    return float(hour_of(ts, icu_admit))


def elapsed_hours(ts: dt.datetime, previous: dt.datetime | None) -> float:
    return 0.0 if previous is None else (ts - previous).total_seconds() / 3600.0


def demographics_from_vitals(vitals: dict[str, float]) -> dict[str, float | None]:
    """The admission record a first observation creates when no admission was posted."""
    return {field: vitals.get(name) for name, field in DEMOGRAPHIC_FIELDS.items()}


def measured(vitals: dict[str, float]) -> bool:
    """Whether an observation carried a vital or lab value (demographics alone do not count)."""
    return any(name not in DEMOGRAPHIC_FIELDS for name in vitals)


def last_measured(observations, previous: dt.datetime | None = None) -> dt.datetime | None:
    """The latest time among (time, vitals) pairs that carried a measured value, or `previous`."""
    times = [ts for ts, vitals in observations if measured(vitals)]
    if previous is not None:
        times.append(previous)
    return max(times, default=None)


def model_input(vitals: dict[str, float], demographics: dict[str, float | None], icu_los: float) -> np.ndarray:
    """[40] float32: posted values in their columns, demographics from the record unless posted
    with this observation, ICULOS derived; everything else NaN."""
    row = np.full(len(FEATURES), np.nan, dtype=np.float32)
    for name, field in DEMOGRAPHIC_FIELDS.items():
        value = demographics.get(field)
        if value is not None:
            row[INDEX[name]] = value
    for name, value in vitals.items():
        row[INDEX[name]] = value
    row[INDEX["ICULOS"]] = icu_los
    return row


def state_to_bytes(state: np.ndarray) -> bytes:
    return np.ascontiguousarray(state, dtype="<f4").tobytes()


def state_from_bytes(raw: bytes, size: int) -> np.ndarray | None:
    """None when the stored state does not fit the loaded model (a different state size)."""
    state = np.frombuffer(raw, dtype="<f4")
    return state.copy() if state.size == size else None
