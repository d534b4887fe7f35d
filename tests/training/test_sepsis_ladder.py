"""The cross-fitted ladder table (training/sepsis/ladder.py): seed-sets per rung, mean and spread."""
import json

import pytest

from training.__main__ import main as cli
from training.sepsis.ladder import markdown, summarize


def record(run, oof_auroc, oof_utility, test_auroc=0.83, test_utility=0.40, lactate=0.97, folds=5):
    return {"run": run, "folds": folds, "member_seeds": [0] * folds,
            "oof": {"auroc": oof_auroc, "utility": oof_utility}, "test": {"auroc": test_auroc, "utility": test_utility},
            "oof_per_fold": [{"auroc": oof_auroc} for _ in range(folds)],
            "plausibility_oof": {"variables": {"HR": {"share_higher": 0.99}, "Lactate": {"share_higher": lactate}}},
            "best_epochs": [9] * folds, "epochs_run": [19] * folds}


def test_each_rung_reports_its_seed_sets_mean_and_sample_spread():
    s = summarize({"CfC": [record("a", 0.830, 0.40), record("b", 0.834, 0.41), record("c", 0.832, 0.42, lactate=0.93)],
                   "MLP": [record("m", 0.820, 0.38)]}, peer=record("lgbm", 0.842, 0.418))
    cfc = s["rungs"]["CfC"]
    assert cfc["oof_auroc"]["mean"] == pytest.approx(0.832) and cfc["oof_auroc"]["sd"] == pytest.approx(0.002)
    assert cfc["oof_utility"]["min"] == 0.40 and cfc["oof_utility"]["max"] == 0.42
    assert [x["plausible_variables"] for x in cfc["seed_sets"]] == [2, 2, 1]
    assert cfc["seed_sets"][2]["lowest_share"] == ["Lactate", 0.93]
    assert s["rungs"]["MLP"]["oof_auroc"]["sd"] is None  # one seed-set has no spread
    table = markdown(s)
    assert "| CfC | 3 | 0.8320 ± 0.0020 |" in table and "| MLP | 1 | 0.8200 |" in table
    assert "boosting `lgbm`" in table and "1 of 2, Lactate 93.0%" in table


def test_a_rung_without_seed_sets_or_with_mixed_folds_is_refused():
    with pytest.raises(ValueError, match="at least one seed-set"):
        summarize({"CfC": []})
    with pytest.raises(ValueError, match="different fold counts"):
        summarize({"CfC": [record("a", 0.83, 0.4), record("b", 0.83, 0.4, folds=3)]})


def test_cli_writes_the_table_json_and_plot(tmp_path):
    dirs = []
    for i, auroc in enumerate((0.830, 0.834)):
        d = tmp_path / f"cfc-s{i}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(record(f"cfc-s{i}", auroc, 0.40)))
        dirs.append(str(d))
    assert cli(["sepsis", "ladder", "--rung", "CfC=" + ",".join(dirs), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "ladder.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "ladder.json").read_text())["rungs"]["CfC"]["oof_auroc"]["mean"] == pytest.approx(0.832)
    with pytest.raises(SystemExit, match="no .*metrics.json"):
        cli(["sepsis", "ladder", "--rung", f"CfC={tmp_path / 'missing'}", "--out", str(tmp_path / "o2")])
