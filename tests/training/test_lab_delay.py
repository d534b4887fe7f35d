"""Labs known H hours after their draw, as a deployed model reads them (evaluate-onnx --lab-delay)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models.contract import INDEX, N_FEATURES, RESULTED_LABS
from training.sepsis.lab_delay import delay_labs

NAN = np.nan


def stay(iculos, **columns):
    """[T, 40] rows with the given ICULOS and {column: [values per row]} (None = not measured)."""
    x = np.full((len(iculos), N_FEATURES), NAN, np.float32)
    x[:, INDEX["ICULOS"]] = iculos
    for name, vals in columns.items():
        x[:, INDEX[name]] = [NAN if v is None else v for v in vals]
    return x


def col(x, name):
    return [None if np.isnan(v) else float(v) for v in x[:, INDEX[name]]]


def test_a_lab_is_seen_h_hours_after_its_draw_and_vitals_stay_put():
    x = stay([1, 2, 3, 4, 5], HR=[80, 81, 82, 83, 84], Lactate=[None, 2.5, None, None, None],
             FiO2=[0.5, None, None, None, None], WBC=[11, None, 12, None, None])
    d = delay_labs(x, np.array([0, 5]), 2)
    assert col(d.values, "Lactate") == [None, None, None, 2.5, None]
    assert col(d.values, "WBC") == [None, None, 11, None, 12]
    assert col(d.values, "HR") == [80, 81, 82, 83, 84]       # a vital sign is known when measured
    assert col(d.values, "FiO2") == [0.5, None, None, None, None]  # a bedside setting, not a resulted lab
    assert (d.moved, d.dropped) == (3, 0)
    assert col(x, "Lactate") == [None, 2.5, None, None, None]  # the input is not changed


def test_zero_delay_is_the_file_as_it_is():
    x = stay([1, 2], Lactate=[1.0, 2.0])
    d = delay_labs(x, np.array([0, 2]), 0)
    assert np.array_equal(d.values, x, equal_nan=True) and (d.moved, d.dropped) == (0, 0)


def test_a_result_due_after_the_stay_ended_is_dropped_and_never_reaches_the_next_stay():
    one = stay([1, 2, 3], Creatinine=[1.5, None, 1.25])
    two = stay([1, 2], HR=[90, 91])
    x = np.concatenate([one, two])
    d = delay_labs(x, np.array([0, 3, 5]), 1)
    assert col(d.values, "Creatinine") == [None, 1.5, None, None, None]
    assert (d.moved, d.dropped) == (1, 1)


def test_a_gap_in_hours_sends_the_result_to_the_next_row_and_the_later_draw_wins():
    x = stay([1, 2, 5, 6], Platelets=[150, 140, None, None], Glucose=[None, 110, None, None])
    d = delay_labs(x, np.array([0, 4]), 2)
    # hour 1 -> 3 and hour 2 -> 4 have no row: both are first seen at hour 5, the later draw's value
    assert col(d.values, "Platelets") == [None, None, 140, None]
    assert col(d.values, "Glucose") == [None, None, 110, None]
    assert (d.moved, d.dropped) == (3, 0)


def test_every_resulted_lab_moves_and_nothing_else():
    x = np.arange(3 * N_FEATURES, dtype=np.float32).reshape(3, N_FEATURES)
    x[:, INDEX["ICULOS"]] = [1, 2, 3]
    d = delay_labs(x, np.array([0, 3]), 1)
    changed = {name for name, i in INDEX.items() if not np.array_equal(d.values[:, i], x[:, i], equal_nan=True)}
    assert changed == set(RESULTED_LABS)


def test_a_negative_or_fractional_delay_is_refused():
    x = stay([1], HR=[80])
    for bad in (-1, 0.5):
        with pytest.raises(ValueError, match="whole number of hours"):
            delay_labs(x, np.array([0, 1]), bad)


def test_evaluate_onnx_with_a_lab_delay(tmp_path, capsys):
    """The CLI streams the delayed rows through the ONNX step and records the delay with the figures;
    hours before the first draw score the same, the draw hour no longer sees the lab."""
    from models.testing import write_fixture_model
    from tests.training.conftest import HEADER, make_archive
    from training.__main__ import main as cli

    model = write_fixture_model(tmp_path / "models" / "sepsis-cfc" / "1")
    rows = []
    for t in range(6):
        r = [NAN] * 41
        r[HEADER.index("HR")] = 90 + t
        r[HEADER.index("Age")], r[HEADER.index("Gender")] = 60, 1
        r[HEADER.index("ICULOS")] = t + 1
        r[HEADER.index("SepsisLabel")] = 0
        rows.append(r)
    rows[2][HEADER.index("Lactate")] = 4.0
    rows[5][HEADER.index("WBC")] = 15.0   # drawn in the last hour: known after the stay ended
    archive = make_archive(tmp_path, {"setA/p000001.psv": "\n".join(["|".join(HEADER)] + [
        "|".join("NaN" if np.isnan(v) else f"{v:g}" for v in r) for r in rows]) + "\n"})
    risks = {}
    for h in (0, 2):
        out = tmp_path / f"h{h}"
        assert cli(["sepsis", "evaluate-onnx", "--model", str(model), "--data", str(archive), "--out", str(out),
                    "--device", "cpu", "--lab-delay", str(h), "--cache-dir", str(tmp_path / "cache")]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["lab_delay_hours"] == h
        risks[h] = [float(line.split("|")[0]) for line in (out / "predictions" / "p000001.psv").read_text().split()[1:]]
    assert (metrics["labs_moved"], metrics["labs_dropped_after_stay"]) == (1, 1)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["lab_delay_hours"] == 2
    assert risks[0][:2] == risks[2][:2] and risks[0][2] != risks[2][2]
    assert cli(["sepsis", "evaluate-onnx", "--model", str(model), "--data", str(archive), "--out", str(tmp_path),
                "--lab-delay", "-1"]) == 2
    assert "--lab-delay -1" in capsys.readouterr().err
