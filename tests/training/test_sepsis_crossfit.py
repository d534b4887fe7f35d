"""Cross-fitting: folds over the development stays, fold runs through `train --folds`, the fold
runs as one model chosen on out-of-fold predictions (`sepsis crossfit`), exported as one step."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.training.conftest import make_archive, synthetic_stays
from training.__main__ import main as cli
from training.sepsis import metrics as M
from training.sepsis.batching import CohortTensors
from training.sepsis.crossfit import choose_recipe, fold_runs, platt
from training.sepsis.model import SepsisModel
from training.sepsis.predict import predict_stays, stay_labels
from training.sepsis.data import load_cohort
from training.sepsis.splits import crossfit_folds, crossfit_split, patient_split

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
K = 3


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossfit")
    return root, make_archive(root, synthetic_stays(n=90, seed=11, septic_fraction=0.3))


@pytest.fixture(scope="module")
def cohort(archive):
    root, path = archive
    return load_cohort(path, cache_dir=root / "cache", progress=False)


def test_folds_cover_the_development_stays_once_and_keep_the_test_split(cohort):
    base = patient_split(cohort, seed=0)
    folds = crossfit_folds(cohort, K, seed=0)
    every = np.concatenate(folds)
    assert len(every) == len(np.unique(every))
    np.testing.assert_array_equal(np.sort(every), np.sort(np.concatenate([base.train, base.val])))
    for k in range(K):
        split = crossfit_split(cohort, k, K, seed=0)
        np.testing.assert_array_equal(split.test, base.test)
        np.testing.assert_array_equal(split.val, folds[k])
        assert not set(split.train) & set(split.val)
        assert len(split.train) + len(split.val) == len(every)
    # stratified: each fold holds its share of the septic stays, within one
    septic = cohort.septic[every].sum()
    for fold in folds:
        assert abs(cohort.septic[fold].sum() - septic / K) <= 2


@pytest.mark.parametrize("fold, folds", [(3, 3), (0, 1), (-1, 3)])
def test_impossible_folds_are_refused(cohort, fold, folds):
    with pytest.raises(ValueError, match="fold"):
        crossfit_split(cohort, fold, folds)


def _train_folds(archive, seed: int | None = None) -> list:
    root, path = archive
    tag = "" if seed is None else f"-s{seed}"
    for k in range(K):
        assert cli(["sepsis", "train", "--data", str(path), "--hidden", "8", "--backbone-units", "8",
                    "--encoder-units", "16", "--epochs", "1", "--batch-size", "32", "--folds", str(K), "--fold", str(k),
                    "--physiology-weight", "1.0", "--physiology-stays", "8", "--out", str(root / "results"),
                    "--checkpoints", str(root / "runs"), "--cache-dir", str(root / "cache"), "--run", f"f{k}{tag}",
                    "--no-progress", "--device", "cpu", *(["--seed", str(seed)] if seed is not None else [])]) == 0
    return [root / "results" / f"f{k}{tag}" / "metrics.json" for k in range(K)]


@pytest.fixture(scope="module")
def fold_results(archive):
    return _train_folds(archive)


@pytest.fixture(scope="module")
def second_seed_set(archive):
    """The same folds again under other model seeds: a second seed-set."""
    return [_train_folds(archive, seed=100 + k)[k] for k in range(K)]


def test_fold_runs_validate_on_their_fold(fold_results, cohort):
    for k, path in enumerate(fold_results):
        m = json.loads(path.read_text())
        assert m["split"] == f"crossfit-{k}of{K}"
        assert m["n_val_stays"] == len(crossfit_split(cohort, k, K).val)
        assert m["config"]["physiology_weight"] == 1.0


def test_fold_runs_must_be_each_fold_equally_often_and_each_seed_once(fold_results, second_seed_set):
    with pytest.raises(ValueError, match="each of the 3 folds equally often"):
        fold_runs([fold_results[0], second_seed_set[0], fold_results[2]])
    with pytest.raises(ValueError, match="the same model seed twice"):
        fold_runs([*fold_results, fold_results[0], fold_results[1], second_seed_set[2]])
    # member i belongs to fold i % k, seed-set by seed-set
    runs = fold_runs([*second_seed_set, *fold_results][::-1])
    assert [r["config"]["fold"] for r in runs] == [0, 1, 2, 0, 1, 2]
    assert [r["config"]["seed"] for r in runs] == [0, 0, 0, 100, 101, 102]


def test_crossfit_chooses_on_out_of_fold_predictions_and_exports_one_step(fold_results, archive, cohort, tmp_path):
    root, path = archive
    out = root / "crossfit"
    assert cli(["sepsis", "crossfit", "--runs", *map(str, fold_results), "--data", str(path), "--out", str(out),
                "--name", "cf", "--cache-dir", str(root / "cache"), "--device", "cpu"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    base = patient_split(cohort, seed=0)
    assert m["n_train_stays"] == len(base.train) + len(base.val) == sum(r["stays"] for r in m["oof_per_fold"])
    assert m["n_test_stays"] == len(base.test)
    assert 0.0 <= m["threshold"] <= 1.0 and "out-of-fold" in m["threshold_selection"]
    assert set(m["plausibility_oof"]["variables"]) == set(m["plausibility_test"]["variables"])
    assert m["silence_drift_test"]["rows"][-1]["empty_hours"] == 24
    ckpt = torch.load(out / "ensemble.pt", map_location="cpu")
    assert len(ckpt["members"]) == K
    assert ckpt["calibration"].tolist() == pytest.approx([m["calibration"]["a"], m["calibration"]["b"]])
    points = json.loads((out / "operating_points.json").read_text())
    assert points["points"][0]["threshold"] == pytest.approx(m["threshold"])

    # the threshold is the utility optimum of the out-of-fold risks: member k scoring fold k
    tensors = CohortTensors.from_cohort(cohort, "cpu")
    labels, probs = [], []
    for k, run in enumerate(fold_results):
        member = SepsisModel.from_checkpoint(torch.load(json.loads(run.read_text())["checkpoint"], map_location="cpu"))
        fold = crossfit_split(cohort, k, K).val
        labels += stay_labels(tensors, fold)
        probs += platt(predict_stays(member, tensors, fold), m["calibration"]["a"], m["calibration"]["b"])
    assert M.choose_threshold(labels, probs)[0] == pytest.approx(m["threshold"], rel=1e-5)

    exported = tmp_path / "sepsis-cfc" / "9"
    assert cli(["sepsis", "export", "--checkpoint", str(out / "ensemble.pt"), "--metrics", str(out / "metrics.json"),
                "--out", str(exported), "--version", "9"]) == 0
    card = json.loads((exported / "model_card.json").read_text())
    assert card["core"] == f"cfc ensemble of {K}" and card["threshold"] == pytest.approx(m["threshold"])
    assert card["training_data"]["stays"] == m["n_train_stays"]
    # the card says where its choices were made: out of fold, not on a validation split it never had
    assert "out-of-fold" in card["threshold_selection"] and "validation split" not in card["threshold_selection"]
    assert "out-of-fold" in card["metrics"]["split"] and "cross-fitted members" in card["training_data"]["name"]
    assert not any("validation split" in x for x in card["limitations"])

    # its operating points are chosen on the same out-of-fold risks, never on the validation stays
    # four of its members trained on; the test figures come through the exported step
    record = tmp_path / "points"
    assert cli(["sepsis", "operating-points", "--model", str(exported), "--data", str(path), "--crossfit", str(out),
                "--out", str(record), "--cache-dir", str(root / "cache"), "--no-progress"]) == 0
    shipped = json.loads((exported / "operating_points.json").read_text())
    optimum = next(p for p in shipped["points"] if p["id"] == "utility_optimum")
    assert optimum["threshold"] == pytest.approx(m["threshold"], rel=1e-4)
    assert shipped["source"]["validation_stays"] == m["n_train_stays"] and "out-of-fold" in shipped["source"]["split"]
    assert optimum["test"]["utility"] == pytest.approx(m["test"]["utility"], abs=1e-3)
    assert "out-of-fold predictions of its cross-fitted members" in (exported / "README.md").read_text()


def test_boosting_peer_under_the_same_protocol(archive, cohort):
    root, path = archive
    assert cli(["sepsis", "baseline", "--data", str(path), "--folds", str(K), "--max-rounds", "20", "--threads", "1",
                "--out", str(root / "results"), "--run", "lgbm-cf", "--cache-dir", str(root / "cache"),
                "--predictions", str(root / "lgbm-pred"), "--no-progress"]) == 0
    m = json.loads((root / "results" / "lgbm-cf" / "metrics.json").read_text())
    base = patient_split(cohort, seed=0)
    assert sum(r["stays"] for r in m["oof_per_fold"]) == len(base.train) + len(base.val)
    assert {"auroc", "utility"} <= set(m["oof"]) and {"auroc", "utility"} <= set(m["test"])
    # the test split's predictions in the challenge's format: one file per stay, its hours, the OOF threshold
    files = sorted((root / "lgbm-pred" / "predictions").glob("*.psv"))
    assert [f.stem for f in files] == sorted(str(cohort.patient_ids[i]) for i in base.test)
    labels, probs = [], []
    for f in files:
        rows = [line.split("|") for line in f.read_text().split()[1:]]
        i = list(cohort.patient_ids).index(f.stem)
        assert len(rows) == cohort.lengths[i]
        assert all(int(a) == (float(p) >= m["threshold"]) for p, a in rows)
        labels.append(cohort.stay(i).labels)
        probs.append(np.array([float(p) for p, _ in rows]))
    assert M.hourly_auroc(labels, probs) == pytest.approx(m["test"]["auroc"], abs=1e-4)


def _recipe(utility, auroc, lowest_share):
    shares = {"HR": 0.99, "Lactate": 0.97, "Platelets": lowest_share}
    return {"oof": {"utility": utility, "auroc": auroc},
            "plausibility_oof": {"variables": {v: {"share_higher": s} for v, s in shares.items()}}}


def test_the_recipe_rule_needs_every_variable_plausible_then_takes_utility_then_auroc():
    results = {"w0.3": _recipe(0.409, 0.837, 0.89),   # best figures, platelets the wrong way: out
               "w0.5": _recipe(0.405, 0.834, 0.95),   # eligible (0.95 is enough)
               "w0.7": _recipe(0.404, 0.836, 0.96),   # within 0.002 of the best utility, higher AUROC
               "w1": _recipe(0.399, 0.840, 0.99)}     # under the utility bar
    name, why = choose_recipe(results)
    assert name == "w0.7"
    assert why["w0.3"].startswith("out: plausibility") and "Platelets" in why["w0.3"]
    assert why["w1"].startswith("out: OOF utility")
    assert choose_recipe({"w0.3": results["w0.3"], "w1": results["w1"]})[0] is None  # nothing ships
    assert choose_recipe(results, tie=0.0)[0] == "w0.5"


def test_seed_sets_score_each_stay_out_of_fold_by_the_mean_of_its_fold_members(fold_results, second_seed_set,
                                                                                  archive, cohort, tmp_path):
    """Two seed-sets make one model of 2k members: a stay's out-of-fold risk is the mean logit of the
    two members that did not train on it (the threshold is that risk's utility optimum), and the
    cross-fitted model's operating points read the same grouping back from ensemble.pt."""
    root, path = archive
    out = tmp_path / "cf2"
    assert cli(["sepsis", "crossfit", "--runs", *map(str, fold_results + second_seed_set), "--data", str(path),
                "--out", str(out), "--name", "cf2", "--cache-dir", str(root / "cache"), "--device", "cpu",
                "--dropout-rates"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["seed_sets"] == 2 and m["member_seeds"] == [0, 0, 0, 100, 101, 102]
    assert m["temporal_dropout_test"] == []  # none asked for
    ckpt = torch.load(out / "ensemble.pt", map_location="cpu")
    assert len(ckpt["members"]) == 2 * K
    tensors = CohortTensors.from_cohort(cohort, "cpu")
    labels, probs = [], []
    for k in range(K):
        pair = [SepsisModel.from_checkpoint(torch.load(json.loads(r.read_text())["checkpoint"], map_location="cpu"))
                for r in (fold_results[k], second_seed_set[k])]
        fold = crossfit_split(cohort, k, K).val
        labels += stay_labels(tensors, fold)
        with torch.no_grad():
            mean_logit = [(torch.logit(torch.from_numpy(a).double(), eps=1e-7)
                           + torch.logit(torch.from_numpy(b).double(), eps=1e-7)) / 2
                          for a, b in zip(*(predict_stays(member, tensors, fold) for member in pair))]
        probs += platt([torch.sigmoid(z).numpy() for z in mean_logit], m["calibration"]["a"], m["calibration"]["b"])
    assert M.choose_threshold(labels, probs)[0] == pytest.approx(m["threshold"], rel=1e-5)

    exported = tmp_path / "sepsis-cfc" / "8"
    assert cli(["sepsis", "export", "--checkpoint", str(out / "ensemble.pt"), "--metrics", str(out / "metrics.json"),
                "--out", str(exported), "--version", "8"]) == 0
    assert cli(["sepsis", "operating-points", "--model", str(exported), "--data", str(path), "--crossfit", str(out),
                "--out", str(tmp_path / "points"), "--cache-dir", str(root / "cache"), "--no-progress"]) == 0
    optimum = next(p for p in json.loads((exported / "operating_points.json").read_text())["points"]
                   if p["id"] == "utility_optimum")
    assert optimum["threshold"] == pytest.approx(m["threshold"], rel=1e-4)
