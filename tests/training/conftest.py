"""Tiny PhysioNet 2019 fixtures written in the real file format (pipe-separated `.psv`, tar archives).

Reuse from any test: request the fixtures `write_psv`, `make_archive`, `write_tree`,
`synthetic_stays`, `sepsis_stays`, `sepsis_tree`, `sepsis_archive`, or import the plain
functions: `from tests.training.conftest import write_psv, make_archive, synthetic_stays`.

`stays` everywhere is a mapping of archive member path (e.g. "setA/p000001.psv") to either a list
of rows (each a sequence of 41 numbers/NaN/str) or the raw file text (str/bytes) for malformed files.
"""
from __future__ import annotations

import io
import math
import tarfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pytest

# The real header, spelled out here rather than imported so the fixtures check the parser
# against the format itself.
HEADER: tuple[str, ...] = tuple(
    "HR|O2Sat|Temp|SBP|MAP|DBP|Resp|EtCO2|BaseExcess|HCO3|FiO2|pH|PaCO2|SaO2|AST|BUN|Alkalinephos|"
    "Calcium|Chloride|Creatinine|Bilirubin_direct|Glucose|Lactate|Magnesium|Phosphate|Potassium|"
    "Bilirubin_total|TroponinI|Hct|Hgb|PTT|WBC|Fibrinogen|Platelets|Age|Gender|Unit1|Unit2|"
    "HospAdmTime|ICULOS|SepsisLabel".split("|")
)
NAN = float("nan")


def format_field(value) -> str:
    if isinstance(value, str):
        return value
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if value.is_integer():
        return str(int(value))
    return f"{value:.10g}"


def psv_text(rows: Sequence[Sequence], header: Sequence[str] = HEADER) -> str:
    lines = ["|".join(header)] + ["|".join(format_field(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def write_psv(path, rows: Sequence[Sequence], header: Sequence[str] = HEADER) -> Path:
    """Write one stay file; rows are written as given, so a test can make them wrong on purpose."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(psv_text(rows, header))
    return path


def _file_bytes(content) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode()
    return psv_text(content).encode()


def write_tree(root, stays: Mapping[str, object]) -> Path:
    """Write stays as a directory tree (root/setA/p000001.psv ...)."""
    root = Path(root)
    for member, content in stays.items():
        path = root / member
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_file_bytes(content))
    return root


def make_archive(tmp_path, stays: Mapping[str, object], name: str = "physionet2019.tar.xz") -> Path:
    """Write stays into a tar archive (compression from the name: .tar.xz, .tar.gz or .tar)."""
    path = Path(tmp_path) / name
    mode = "w:xz" if name.endswith(".xz") else "w:gz" if name.endswith(".gz") else "w"
    with tarfile.open(path, mode) as tar:
        for member, content in stays.items():
            data = _file_bytes(content)
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def synthetic_rows(rng: np.random.Generator, hours: int, onset: int | None = None,
                   first_iculos: int = 1) -> list[list[float]]:
    """One plausible stay: hourly vitals with gaps, sparse labs, demographics, ICULOS counting up.

    `onset` is the first hour labelled 1 (the label stays 1 to the end, as in the challenge).
    """
    age = float(np.round(rng.uniform(18, 90), 2))
    gender, unit1 = float(rng.integers(0, 2)), float(rng.integers(0, 2))
    adm = float(np.round(-rng.exponential(20), 2))
    rows = []
    for t in range(hours):
        row = [NAN] * 41
        for j, (mean, sd) in enumerate([(85, 15), (97, 2), (37, 0.6), (120, 18), (80, 12),
                                        (62, 10), (18, 4)]):
            if rng.random() < 0.85:
                row[j] = float(np.round(rng.normal(mean, sd), 1))
        if rng.random() < 0.1:
            row[21] = float(np.round(rng.normal(130, 30)))   # Glucose
            row[22] = float(np.round(rng.gamma(2, 1), 2))     # Lactate
        row[34:39] = [age, gender, unit1, 1.0 - unit1, adm]
        row[39] = float(first_iculos + t)
        row[40] = 1.0 if onset is not None and t >= onset else 0.0
        rows.append(row)
    return rows


def synthetic_stays(n: int = 100, seed: int = 0, septic_fraction: float = 0.25,
                    hospitals: Sequence[str] = ("A", "B")) -> dict[str, list[list[float]]]:
    """n stays spread over hospitals, with their real directory/id conventions (setB ids are p1xxxxx)."""
    rng = np.random.default_rng(seed)
    stays = {}
    for i in range(n):
        hospital = hospitals[i % len(hospitals)]
        number = (100001 if hospital == "B" else 1) + i
        hours = int(rng.integers(8, 40))
        onset = int(rng.integers(0, hours)) if rng.random() < septic_fraction else None
        stays[f"set{hospital}/p{number:06d}.psv"] = synthetic_rows(rng, hours, onset)
    return stays


@pytest.fixture(name="write_psv")
def _write_psv_fixture():
    return write_psv


@pytest.fixture(name="make_archive")
def _make_archive_fixture():
    return make_archive


@pytest.fixture(name="write_tree")
def _write_tree_fixture():
    return write_tree


@pytest.fixture(name="synthetic_stays")
def _synthetic_stays_fixture():
    return synthetic_stays


@pytest.fixture
def sepsis_stays() -> dict[str, list[list[float]]]:
    """100 stays, hospitals A and B, about a quarter septic."""
    return synthetic_stays(100, seed=0)


@pytest.fixture
def sepsis_tree(tmp_path, sepsis_stays) -> Path:
    return write_tree(tmp_path / "tree", sepsis_stays)


@pytest.fixture
def sepsis_archive(tmp_path, sepsis_stays) -> Path:
    return make_archive(tmp_path, sepsis_stays)
