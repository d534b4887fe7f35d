"""The one contract between training, the exported step, the runtime and the service.

    (observation [B, 40], elapsed_hours [B, 1], state [B, S]) -> (risk [B, 1], next_state [B, S])

One step is one hour of the stay: the model was trained and validated on the PhysioNet/CinC 2019
rows, one per one-hour bucket counted from ICU admission (ICULOS 1 is the first hour), each
variable's several values in one bucket summarised by their median. `models.grid` files
timestamped values into those buckets; the service must feed the model through it, so that what
it scores is what was validated.

Training exports into it, the runtime checks graphs against it, the service builds its inputs by
it; everything here is imported, never copied.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

# The 40 non-label PhysioNet 2019 columns, in file order: 8 vital signs, 26 labs, 5 demographic or
# administrative columns and ICULOS (hours since ICU admission, counted from 1).
FEATURES: tuple[str, ...] = (
    "HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2",
    "BaseExcess", "HCO3", "FiO2", "pH", "PaCO2", "SaO2", "AST", "BUN", "Alkalinephos", "Calcium",
    "Chloride", "Creatinine", "Bilirubin_direct", "Glucose", "Lactate", "Magnesium", "Phosphate",
    "Potassium", "Bilirubin_total", "TroponinI", "Hct", "Hgb", "PTT", "WBC", "Fibrinogen", "Platelets",
    "Age", "Gender", "Unit1", "Unit2", "HospAdmTime", "ICULOS",
)
N_FEATURES = len(FEATURES)
INDEX = {name: i for i, name in enumerate(FEATURES)}
# vitals and labs: what a measurement brings; the rest comes with every post (stored or derived)
N_CLINICAL = 34
CLINICAL = FEATURES[:N_CLINICAL]
DEMOGRAPHICS = ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime")
ICULOS = "ICULOS"
ICULOS_INDEX = INDEX[ICULOS]
assert FEATURES[N_CLINICAL:] == DEMOGRAPHICS + (ICULOS,)
# The challenge's own grouping of the clinical columns (Reyna et al. 2020, Table 1).
VITALS = FEATURES[:8]
LABS = FEATURES[8:N_CLINICAL]
# The labs resulted from a drawn specimen, so known only after the draw (minutes for a blood gas,
# hours for chemistry): all 26 but FiO2, an oxygen-delivery or ventilator setting charted at the
# bedside (the challenge lists it with the labs because it is read beside the blood gas). EtCO2 is
# a monitor vital sign.
RESULTED_LABS = tuple(name for name in LABS if name != "FiO2")

# The time grid (models.grid): one step per hour since ICU admission; several values of one
# variable in one hour combine into their median, as the challenge built its rows (Reyna et al.
# 2020, Methods: "multiple heart rate measurements in an hourly time window were summarized as the
# median heart rate measurement").
STEP = dt.timedelta(hours=1)
HOURLY_SUMMARY = "median"

# the exported graph's names, in order, and the ONNX opset it is written in (and at least read in)
INPUTS = ("observation", "elapsed_hours", "state")
OUTPUTS = ("risk", "next_state")
OPSET = 17
MIN_OPSET = 17


def elapsed_hours(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Hours since the previous row of the same stay, from ICULOS; 0 on each stay's first row.

    Rows are hourly in PhysioNet 2019, so this is almost always 1; a missing or decreasing ICULOS
    counts as 1 h. The service applies the same rule to timestamps (`service.inputs`).
    """
    iculos = values[:, ICULOS_INDEX].astype(np.float64)
    dt = np.diff(iculos, prepend=np.nan)
    dt = np.where(np.isfinite(dt) & (dt >= 0), dt, 1.0)
    dt[offsets[:-1][offsets[:-1] < len(dt)]] = 0.0
    return dt.astype(np.float32)
