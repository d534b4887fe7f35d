"""The LOINC/UCUM table (models/fhir_codes.csv): every vital sign and lab the model reads has a
code, conversions to the model's units are right, and a broken table is refused at load."""
from __future__ import annotations

import csv

import pytest

from models.contract import CLINICAL
from models.fhir_codes import TABLE, load_codes, parse_codes

ISSUE_EXAMPLES = {"8867-4": "HR", "59408-5": "O2Sat", "8310-5": "Temp", "8480-6": "SBP", "8462-4": "DBP",
                  "8478-0": "MAP", "9279-1": "Resp", "2524-7": "Lactate", "32693-4": "Lactate", "3094-0": "BUN",
                  "2160-0": "Creatinine", "777-3": "Platelets", "6690-2": "WBC", "3150-0": "FiO2", "2708-6": "SaO2"}


def test_every_clinical_variable_has_a_code_and_the_issue_examples_map_where_expected():
    table = load_codes()
    assert {c.feature for c in table.codes} == set(CLINICAL)
    assert {k: table.by_loinc[k].feature for k in ISSUE_EXAMPLES} == ISSUE_EXAMPLES
    assert table.match(["2708-6", "59408-5"]).feature == "O2Sat"  # US Core pulse oximetry carries both
    # FHIR R4's vital-signs SpO2 is 2708-6: the oximeter in that category, the blood gas otherwise
    assert table.match(["2708-6"], ["vital-signs"]).feature == "O2Sat"
    assert table.match(["2708-6"], ["laboratory"]).feature == "SaO2" and table.match(["2708-6"]).feature == "SaO2"
    assert table.match(["59408-5"], ["laboratory"]).feature == "O2Sat"


@pytest.mark.parametrize("loinc, unit, value, expected", [
    ("8310-5", "[degF]", 98.6, 37.0), ("8310-5", "[degF]", 104.0, 40.0), ("8310-5", "K", 310.15, 37.0),
    ("3150-0", "%", 40, 0.4), ("3150-0", "1", 0.4, 0.4),
    ("2345-7", "mmol/L", 5.5, 99.0858), ("3094-0", "mmol/L", 7.14, 20.002), ("17861-6", "mmol/L", 2.2, 8.8176),
    ("19123-9", "mmol/L", 0.85, 2.0659), ("2777-1", "mmol/L", 1.1, 3.40714), ("2160-0", "umol/L", 88.4, 1.0000),
    ("1975-2", "umol/L", 17.1, 0.99977), ("32693-4", "mg/dL", 18.016, 2.0), ("777-3", "10*9/L", 250, 250),
    ("6690-2", "/nL", 11.2, 11.2), ("718-7", "g/L", 121, 12.1), ("718-7", "mmol/L", 7.5, 12.0855),
    ("2019-8", "kPa", 5.33, 39.978), ("3255-7", "g/L", 3.1, 310), ("10839-9", "ng/L", 40, 0.04),
    ("4544-3", "L/L", 0.42, 42), ("1920-8", "ukat/L", 0.5, 30)])
def test_conversions_to_the_model_units(loinc, unit, value, expected):
    code = load_codes().by_loinc[loinc]
    assert code.accepted[unit].to_model(value) == pytest.approx(expected, rel=1e-4)


def test_the_model_unit_passes_a_value_unchanged():
    for code in load_codes().codes:
        assert code.accepted[code.unit].to_model(0.1 + 0.2) == 0.1 + 0.2


def _rows():
    with open(TABLE, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[0].update(feature="Heartrate"), "not one of the model's vital signs or labs"),
    (lambda rows: rows[0].update(accepted="{beats}/min=1"), "must be accepted as /min=1"),
    (lambda rows: rows[0].update(accepted="/min=1 bpm"), "is not unit=factor"),
    (lambda rows: rows.append(dict(rows[0])), "listed twice"),
    (lambda rows: rows.__setitem__(slice(None), [r for r in rows if (r["loinc"], r["feature"]) != ("2708-6", "SaO2")]),
     "2708-6 has rows for a category only"),
    (lambda rows: rows.__setitem__(slice(None), [r for r in rows if r["loinc"] != "3150-0"]),
     "no row for 3150-0"),
    (lambda rows: rows.__setitem__(slice(None), [r for r in rows if r["feature"] != "PTT"]), "no code for PTT"),
    (lambda rows: rows[4].update(unit="[degF]", accepted="[degF]=1"), "two model units"),
])
def test_a_broken_table_is_refused(change, message):
    rows = _rows()
    change(rows)
    with pytest.raises(ValueError, match=message):
        parse_codes(rows)
