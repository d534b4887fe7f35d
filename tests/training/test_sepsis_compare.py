"""Two models' challenge-format predictions compared on one split (training/sepsis/compare.py):
the figures are the project's metric definitions, the bootstrap is paired over stays, and bad
prediction files are named with their line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.training.conftest import make_archive, synthetic_stays
from training.__main__ import main as cli
from training.sepsis import metrics as M
from training.sepsis.compare import Side, paired_bootstrap, read_predictions, stay_utilities
from training.sepsis.evaluate_onnx import write_predictions
from training.sepsis.replay import select_stays


def stays(seed=0, n=60):
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(n):
        t = int(rng.integers(8, 40))
        lab = np.zeros(t, np.int8)
        if i % 4 == 0:
            lab[int(rng.integers(2, t - 1)):] = 1
        labels.append(lab)
    return labels


def side(name, labels, skill, threshold=0.5, seed=1):
    rng = np.random.default_rng(seed)
    probs = [np.clip(skill * lab + rng.normal(0.3, 0.2, len(lab)), 0, 1) for lab in labels]
    return Side(name, probs, [(p >= threshold).astype(np.int8) for p in probs])


def test_all_stays_give_the_projects_metrics_and_the_draws_are_paired():
    labels = stays()
    good, weak = side("good", labels, 0.5), side("weak", labels, 0.1, seed=2)
    r = paired_bootstrap(labels, good, weak, replicates=200, progress=False)
    for s in (good, weak):
        assert r["models"][s.name]["auroc"]["all_stays"] == pytest.approx(M.hourly_auroc(labels, s.probs))
        assert r["models"][s.name]["utility"]["all_stays"] == pytest.approx(M.normalized_utility(labels, s.alarms))
        lo, hi = r["models"][s.name]["auroc"]["interval_95"]
        assert lo < r["models"][s.name]["auroc"]["all_stays"] < hi
    assert r["difference"]["auroc"]["share_a_ahead"] > 0.95 and r["difference"]["auroc"]["interval_95"][0] > 0
    same = paired_bootstrap(labels, good, Side("copy", good.probs, good.alarms), replicates=50, progress=False)
    assert set(same["difference"]["auroc"]["draws"]) == {0.0}  # the same stays on both sides of every draw


def test_per_stay_utility_sums_score_any_subset_of_stays():
    labels = stays(3)
    s = side("m", labels, 0.4)
    observed, best, inaction = stay_utilities(labels, s.alarms)
    pick = np.array([0, 4, 5, 8, 9, 12, 16, 20, 21])
    want = M.normalized_utility([labels[i] for i in pick], [s.alarms[i] for i in pick])
    assert (observed[pick].sum() - inaction[pick].sum()) / (best[pick].sum() - inaction[pick].sum()) == pytest.approx(want)


def test_bad_prediction_files_are_named_with_their_line(tmp_path):
    (tmp_path / "p1.psv").write_text("PredictedProbability|PredictedLabel\n0.2|0\n0.9|yes\n")
    with pytest.raises(ValueError, match=r"p1.psv, line 3: '0.9\|yes'"):
        read_predictions(tmp_path, ["p1"], [2])
    with pytest.raises(ValueError, match="p1.psv: 2 hours, but the stay has 3"):
        read_predictions(tmp_path, ["p1"], [3])
    with pytest.raises(ValueError, match="p2.psv: missing"):
        read_predictions(tmp_path, ["p2"], [2])
    (tmp_path / "p3.psv").write_text("0.2|0\n")
    with pytest.raises(ValueError, match="p3.psv, line 1: expected the header"):
        read_predictions(tmp_path, ["p3"], [1])


def test_the_cli_reads_two_folders_of_the_test_split_and_writes_the_table_and_plot(tmp_path, capsys):
    archive = make_archive(tmp_path, synthetic_stays(n=60, seed=5, septic_fraction=0.3))
    test = select_stays(str(archive), "test", 0, None)
    labels = [s.labels for s in test]
    for name, skill in (("a", 0.6), ("b", 0.0)):
        s = side(name, labels, skill)
        offsets = np.cumsum([0] + [len(p) for p in s.probs])
        write_predictions(tmp_path / name, [t.patient_id for t in test], offsets, np.concatenate(s.probs), 0.5,
                          progress=False)
    out = tmp_path / "cmp"
    assert cli(["sepsis", "compare", "--data", str(archive), "--a", f"a={tmp_path / 'a' / 'predictions'}",
                "--b", f"b={tmp_path / 'b' / 'predictions'}", "--replicates", "30", "--out", str(out),
                "--bar", "auroc=0.5", "--bar", "utility=2", "--no-progress"]) == 0
    r = json.loads((out / "compare.json").read_text())
    assert r["models"]["a"]["auroc"]["share_at_or_above"] == {"0.5": 1.0}  # a real signal: every draw above chance
    assert r["models"]["b"]["utility"]["share_at_or_above"] == {"2.0": 0.0}  # no utility reaches 2 (1 is the best)
    assert r["stays"] == len(test) and r["split"] == "test"
    assert r["models"]["a"]["auroc"]["all_stays"] > r["models"]["b"]["auroc"]["all_stays"]
    assert (out / "compare.png").stat().st_size > 1000 and "| a - b |" in (out / "compare.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit, match="expected NAME=FOLDER"):
        cli(["sepsis", "compare", "--data", str(archive), "--a", "a", "--b", "b=x", "--out", str(out)])
    with pytest.raises(SystemExit, match="--bar 'auc=1'"):
        cli(["sepsis", "compare", "--data", str(archive), "--a", f"a={tmp_path / 'a' / 'predictions'}",
             "--b", f"b={tmp_path / 'b' / 'predictions'}", "--bar", "auc=1", "--out", str(out)])
    with pytest.raises(SystemExit, match="missing"):
        cli(["sepsis", "compare", "--data", str(archive), "--a", f"a={tmp_path}", "--b", "b=x", "--out", str(out)])
