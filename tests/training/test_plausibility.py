"""The plausibility suite (training/sepsis/plausibility.py): response curves, the gate, and the gate in export."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.contract import FEATURES, INDEX, N_FEATURES
from models.reference import NORMAL, PLAUSIBILITY, REFERENCES
from models.testing import CountingStep
from training.sepsis.plausibility import (POINTS, Gate, ImplausibleModelError, Probe, check, explanation_directions,
                                          gate_applies, grid, measure, probe_rows, response_curves, summarize)

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "sepsis-cfc" / "3"
SIGN = np.array([0.0 if REFERENCES[f].direction is None else (1.0 if REFERENCES[f].direction == "high" else -1.0)
                 for f in FEATURES])


def physiological_step(wrong=(), state_size=2):
    """risk = sigmoid(sum of signed distances from normal): every abnormal value raises the risk,
    except the variables in `wrong`, which lower it. State: [rows stepped, last HR]."""
    sign = SIGN.copy()
    for name in wrong:
        sign[INDEX[name]] *= -1

    def step(obs, elapsed, state):
        obs = np.asarray(obs, np.float64)
        scale = np.array([max(abs(REFERENCES[f].abnormal - REFERENCES[f].normal), 1e-6)
                          if REFERENCES[f].abnormal is not None else 1.0 for f in FEATURES])
        z = np.nan_to_num((obs - np.nan_to_num(NORMAL)) / scale) * sign
        risk = 1 / (1 + np.exp(-(z.sum(axis=1) - 3 + 0.01 * state[:, 0])))
        nxt = np.asarray(state, np.float32).copy()
        nxt[:, 0] += 1
        nxt[:, 1] = np.where(np.isnan(obs[:, 0]), nxt[:, 1], obs[:, 0])
        return risk[:, None].astype(np.float32), nxt
    return step


def cohort_arrays(lengths, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for n in lengths:
        v = np.full((n, N_FEATURES), np.nan, np.float32)
        v[:, INDEX["HR"]] = rng.normal(85, 10, n)
        v[:, INDEX["MAP"]] = rng.normal(80, 8, n)
        v[:, INDEX["ICULOS"]] = np.arange(1, n + 1)
        rows.append(v)
    return np.concatenate(rows), np.r_[0, np.cumsum(lengths)].astype(np.int64)


def record(step, lengths=(3, 20, 12, 1, 15)):
    values, offsets = cohort_arrays(list(lengths))
    probe = probe_rows(step, 2, values, offsets)
    return {"model": "m", "version": "1", "split": "validation", "stays": len(lengths),
            "variables": summarize(response_curves(step, probe))}


def test_each_stay_is_probed_at_hour_12_or_its_last_hour_with_the_state_before_it():
    values, offsets = cohort_arrays([3, 20, 12, 1, 13])
    step = CountingStep(physiological_step())
    probe = probe_rows(step, 2, values, offsets)
    np.testing.assert_array_equal(probe.hours, [3, 12, 12, 1, 12])
    np.testing.assert_array_equal(probe.states[:, 0], probe.hours - 1)  # every earlier hour was stepped once
    for i, h in enumerate(probe.hours):
        np.testing.assert_array_equal(probe.rows[i], values[offsets[i] + h - 1])
        if h > 1:  # the state carries the previous hour's HR
            assert probe.states[i, 1] == values[offsets[i] + h - 2, INDEX["HR"]]
    assert probe.elapsed[3, 0] == 0.0 and probe.elapsed[0, 0] == 1.0  # a first hour has no elapsed time
    assert len(step.calls) == 11  # one lockstep call per hour before the last probe


def test_curves_move_one_variable_along_its_grid_with_everything_else_as_measured():
    values, offsets = cohort_arrays([5, 14])
    probe = probe_rows(physiological_step(), 2, values, offsets)
    seen = []

    def spy(obs, elapsed, state):
        seen.append(np.asarray(obs).copy())
        return physiological_step()(obs, elapsed, state)

    curves = response_curves(spy, probe, variables=("Lactate",), max_rows=5)
    obs = np.concatenate(seen)
    assert all(len(o) <= 5 for o in seen) and obs.shape == (2 * POINTS, N_FEATURES)
    np.testing.assert_array_equal(obs[:, INDEX["Lactate"]], np.tile(grid("Lactate"), 2))
    np.testing.assert_array_equal(np.delete(obs[:POINTS], INDEX["Lactate"], axis=1),
                                  np.delete(np.repeat(probe.rows[:1], POINTS, 0), INDEX["Lactate"], axis=1))
    assert grid("Lactate")[0] == REFERENCES["Lactate"].normal and grid("Lactate")[-1] == REFERENCES["Lactate"].abnormal
    assert curves["Lactate"].shape == (2, POINTS) and np.all(np.diff(curves["Lactate"], axis=1) > 0)


def test_a_physiological_model_passes_and_one_that_lowers_with_lactate_is_refused():
    good = record(physiological_step())
    assert set(good["variables"]) == set(PLAUSIBILITY) and len(PLAUSIBILITY) >= 13
    for v in good["variables"].values():
        assert v["share_physiological"] == 1.0 and v["share_wrong_way"] == 0.0 and v["median_risk_ratio"] > 1
    check(good)
    bad = record(physiological_step(wrong=("Lactate", "pH")))
    lactate = bad["variables"]["Lactate"]
    assert lactate["share_wrong_way"] == 1.0 and lactate["median_risk_ratio"] < 1
    with pytest.raises(ImplausibleModelError, match=r"Lactate 100\.0%.*pH 100\.0%|pH 100\.0%.*Lactate 100\.0%"):
        check(bad)
    with pytest.raises(ValueError, match="validation"):
        check({**good, "split": "test"})


def test_the_gate_allows_at_most_five_percent_of_patients_the_wrong_way():
    rec = record(physiological_step())
    rec["variables"]["MAP"]["share_wrong_way"] = 0.05
    check(rec)
    rec["variables"]["MAP"]["share_wrong_way"] = 0.051
    with pytest.raises(ImplausibleModelError, match="MAP"):
        check(rec)


def test_gate_applies_to_exports_into_the_repository_models_folder(tmp_path):
    assert gate_applies("auto", SHIPPED.parent / "99")
    assert not gate_applies("auto", tmp_path / "sepsis-cfc" / "99")
    assert gate_applies("on", tmp_path) and not gate_applies("off", SHIPPED.parent / "99")
    with pytest.raises(ValueError, match="plausibility-gate"):
        gate_applies("maybe", tmp_path)


def test_the_shipped_model_on_constructed_stays_records_every_variable():
    from models.runtime import StepRuntime
    from training.sepsis.data import Cohort

    rt = StepRuntime.open(SHIPPED, device="cpu", intra_op_threads=1)
    values, offsets = cohort_arrays([14, 6, 12])
    cohort = Cohort(np.array(["p1", "p2", "p3"]), np.array(["A", "A", "B"]), offsets, values,
                    np.zeros(len(values), np.int8), "0" * 64)
    result = measure(rt, cohort, "validation", explanations=3)
    assert result["stays"] == 3 and set(result["variables"]) == set(PLAUSIBILITY)
    # HR and Resp: the model responds the physiological way in every measured patient (1,000 validation stays)
    assert result["variables"]["HR"]["share_physiological"] == 1.0
    assert result["explanations"]["clearly_abnormal_values"] >= 0
    json.dumps(result)


def test_explanations_count_abnormal_values_lowering_the_risk_among_all_and_among_those_listed():
    """A model reading leukocytosis backwards: WBC 12.5 beside five grossly abnormal vitals is a
    small negative contribution, below the five listed; WBC 30 alone is listed, lowering the risk."""
    shock = np.full(N_FEATURES, np.nan, np.float32)
    for name, v in {"HR": 150, "MAP": 40, "SBP": 60, "Resp": 40, "Temp": 40.5, "WBC": 12.5}.items():
        shock[INDEX[name]] = v
    alone = np.full(N_FEATURES, np.nan, np.float32)
    alone[INDEX["WBC"]] = 30.0
    rows = np.stack([shock, alone])
    probe = Probe(rows, np.ones((2, 1), np.float32), np.zeros((2, 2), np.float32), np.array([1, 1]))
    e = explanation_directions(physiological_step(wrong=("WBC",)), None, probe)
    assert e["clearly_abnormal_values"] == 7
    assert e["by_variable_reference"]["WBC"] == [2, 2] and e["lowering_reference"] == 2
    shown = e["shown_reference"]
    assert shown["listed"] == 5 and shown["clearly_abnormal_values"] == 6  # 5 of the first row's 6, and WBC 30
    assert shown["by_variable"]["WBC"] == [1, 1] and shown["lowering"] == 1
    assert shown["share_lowering"] == pytest.approx(1 / 6)
    # by organ system, replaced together: the fever outweighs the backwards WBC 12.5 beside it
    systems = e["systems_reference"]
    assert systems["by_system"] == {"cardiovascular": [0, 1], "respiratory": [0, 1], "inflammation": [1, 2]}
    assert systems["systems_with_clearly_abnormal_values"] == 4 and systems["lowering"] == 1


# -- the gate in export ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from training.sepsis.model import ModelConfig, SepsisModel

    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = SepsisModel(ModelConfig(core="cfc", hidden_size=8, backbone_units=8), torch.linspace(-1, 60, 40),
                        torch.linspace(0.5, 20, 40)).eval()
    torch.save(model.to_checkpoint(), root / "best.pt")
    metrics = {"test": {"auroc": 0.5, "auprc": 0.1, "utility": 0.0, "alarms_per_patient_day": 0.0,
                        "caught_in_window": 0.0, "median_lead_time_in_window_hours": None,
                        "septic_alarmed_before_onset": 0.0, "alarmed_stays_septic": 0.0,
                        "median_lead_time_hours": None}, "threshold": 0.3, "threshold_selection": "fixture",
               "run": "t", "n_test_stays": 1, "data_sha256": "0" * 64, "n_train_stays": 1, "n_train_rows": 1}
    (root / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_export_ships_nothing_when_the_gate_refuses(checkpoint, tmp_path):
    from training.sepsis.export import export

    seen = []

    def refuse(model_dir):
        seen.append(sorted(p.name for p in Path(model_dir).iterdir()))
        raise ImplausibleModelError("Lactate lowers the risk")

    out = tmp_path / "sepsis-cfc" / "5"
    with pytest.raises(ImplausibleModelError, match="Lactate"):
        export(checkpoint / "best.pt", checkpoint / "metrics.json", out, "sepsis-cfc", "5", gate=refuse)
    assert seen == [["model.onnx", "model_card.json"]]  # the gate saw the exported step and card
    assert not (tmp_path / "sepsis-cfc").exists()  # nothing written where the registry looks
    staged = []
    export(checkpoint / "best.pt", checkpoint / "metrics.json", out, "sepsis-cfc", "5", gate=staged.append)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model_card.json"]
    assert [p.name for p in (tmp_path / "sepsis-cfc").iterdir()] == ["5"]
    assert not staged[0].exists()  # the staging folder is gone
    from models.runtime import StepRuntime

    assert StepRuntime.open(out, device="cpu").version == "5"


def test_export_cli_needs_data_for_the_gate_and_runs_it(checkpoint, tmp_path, capsys, monkeypatch):
    from training.__main__ import main as cli
    from training.sepsis import plausibility

    base = ["sepsis", "export", "--checkpoint", str(checkpoint / "best.pt"), "--metrics",
            str(checkpoint / "metrics.json"), "--out", str(tmp_path / "m" / "1")]
    assert cli(base + ["--plausibility-gate", "on"]) == 2
    assert "--plausibility-data" in capsys.readouterr().err
    calls = []

    def fake_call(self, model_dir):
        calls.append((self.data, self.max_stays))
        raise ImplausibleModelError("pH moves the wrong way")

    monkeypatch.setattr(Gate, "__call__", fake_call)
    archive = tmp_path / "data.tar.xz"
    archive.write_bytes(b"")
    assert cli(base + ["--plausibility-gate", "on", "--plausibility-data", str(archive),
                       "--plausibility-stays", "50"]) == 2
    assert calls == [(archive, 50)] and "pH" in capsys.readouterr().err
    assert not (tmp_path / "m" / "1" / "model.onnx").exists()
    assert cli(base) == 0 and calls == [(archive, 50)]  # auto: outside models/, no gate
    assert plausibility.gate_applies("auto", tmp_path) is False


def test_plausibility_cli_names_a_model_the_registry_lacks(tmp_path, capsys):
    from training.__main__ import main as cli

    archive = tmp_path / "data.tar.xz"
    archive.write_bytes(b"")
    assert cli(["sepsis", "plausibility", "--model", "sepsis-cfc/99", "--data", str(archive)]) == 2
    err = capsys.readouterr().err
    assert "sepsis-cfc/99" in err and "registry" in err  # and what it does hold
