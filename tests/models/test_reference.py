"""The clinical reference table (models/reference.py): complete, consistent, and its rules enforced."""
import csv
import io

import numpy as np
import pytest

from models.contract import CLINICAL, DEMOGRAPHICS, FEATURES
from models.reference import (NORMAL, PLAUSIBILITY, REFERENCES, SYSTEMS, TABLE, ReferenceTableError,
                              parse_references)

# what a clinician expects of each plausibility variable: which way is abnormal
EXPECTED_DIRECTION = {"HR": "high", "Resp": "high", "Temp": "high", "SBP": "low", "MAP": "low", "O2Sat": "low",
                      "Creatinine": "high", "WBC": "high", "Lactate": "high", "Platelets": "low", "pH": "low",
                      "Bilirubin_total": "high", "HCO3": "low"}


def rows():
    with TABLE.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_vital_and_lab_has_a_normal_value_inside_its_range_with_unit_and_source():
    assert list(REFERENCES) == list(FEATURES)
    for name in CLINICAL:
        ref = REFERENCES[name]
        assert ref.low <= ref.normal <= ref.high and ref.unit and ref.source, name
        assert ref.system in SYSTEMS and ref.system != "administrative", name
        assert NORMAL[FEATURES.index(name)] == np.float32(ref.normal)
    for name in DEMOGRAPHICS + ("ICULOS",):
        assert REFERENCES[name].system == "administrative" and REFERENCES[name].normal is None
        assert np.isnan(NORMAL[FEATURES.index(name)])


def test_the_plausibility_variables_and_their_directions():
    assert set(PLAUSIBILITY) == set(EXPECTED_DIRECTION)
    for name, direction in EXPECTED_DIRECTION.items():
        assert REFERENCES[name].direction == direction, name
    # the SOFA components sit where Sepsis-3 puts them
    assert {n: REFERENCES[n].sofa for n in ("MAP", "Creatinine", "Bilirubin_total", "Platelets")} == {
        "MAP": "cardiovascular", "Creatinine": "renal", "Bilirubin_total": "liver", "Platelets": "coagulation"}
    # the shipped reference values a clinician would check first
    assert (REFERENCES["MAP"].normal, REFERENCES["Lactate"].normal, REFERENCES["Lactate"].abnormal) == (85, 1.0, 6.0)


def parse(edit):
    table = rows()
    edit(table)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    return parse_references(csv.DictReader(io.StringIO(text.getvalue())), "t.csv")


def set_field(name, field, value):
    def edit(table):
        next(r for r in table if r["feature"] == name)[field] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (set_field("MAP", "normal", "60"), "outside its range"),
    (set_field("Lactate", "abnormal", "1.5"), "inside the normal range"),
    (set_field("HR", "normal", "fast"), "not a number"),
    (set_field("HR", "system", "heart"), "system"),
    (set_field("Age", "normal", "60"), "administrative"),
    (set_field("Creatinine", "source", ""), "source"),
    (set_field("WBC", "feature", "Leukocytes"), "not a PhysioNet 2019 column"),
    (lambda t: t.pop(3), "no row for"),
    (lambda t: t.append(dict(t[0])), "listed twice"),
])
def test_a_broken_table_is_refused_naming_the_line_and_the_rule(edit, message):
    assert parse(lambda t: None) == REFERENCES
    with pytest.raises(ReferenceTableError, match=message):
        parse(edit)
