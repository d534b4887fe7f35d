"""Each plot writes a readable, non-empty PNG at the path it returns."""
import matplotlib.image as mpimg
import numpy as np
import pytest

from training.sepsis import metrics as M
from training.sepsis import plots as P

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000
    image = mpimg.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.01  # something drawn, not a blank canvas


@pytest.fixture
def cohort():
    rng = np.random.default_rng(0)
    labels, probs = [], []
    for i in range(30):
        n = int(rng.integers(5, 50))
        lab = np.zeros(n, np.int8)
        if i % 3 == 0:
            lab[n // 2:] = 1
        labels.append(lab)
        probs.append(np.clip(rng.random(n) * 0.7 + 0.3 * lab, 0, 1))
    return labels, probs


def test_roc_and_pr_curves(tmp_path, cohort):
    roc = P.roc_curve_png(*cohort, tmp_path / "roc.png", title="ROC")
    pr = P.pr_curve_png(*cohort, tmp_path / "sub" / "pr.png", title="PR")
    assert roc == tmp_path / "roc.png" and pr == tmp_path / "sub" / "pr.png"
    assert_png(roc)
    assert_png(pr)


def test_roc_of_one_class_is_refused(tmp_path):
    with pytest.raises(ValueError, match="both labels"):
        P.roc_curve_png([np.zeros(4, np.int8)], [np.linspace(0, 1, 4)], tmp_path / "roc.png")
    assert not (tmp_path / "roc.png").exists()


def test_utility_curve(tmp_path, cohort):
    labels, probs = cohort
    th, u = M.utility_curve(M.utility_table(labels), np.concatenate(probs))
    chosen, _ = M.choose_threshold(labels, probs)
    assert_png(P.utility_curve_png(th, u, chosen, tmp_path / "utility.png"))


def test_utility_curve_with_many_thresholds_is_thinned_but_drawn(tmp_path):
    th = np.linspace(0, 1, 200_000)
    assert_png(P.utility_curve_png(th, np.sin(th * 3) - 0.5, 0.52, tmp_path / "u.png"))


def test_learning_curves_with_and_without_optional_keys(tmp_path):
    full = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_auroc": 0.6 + 0.02 * e,
             "val_utility": 0.1 + 0.03 * e} for e in range(6)]
    assert_png(P.learning_curves_png(full, tmp_path / "full.png"))
    # what train.py records for the patient-level task: no val_loss, no val_utility
    patient = [{"epoch": e, "train_loss": 0.5 - 0.01 * e, "val_auroc": 0.7, "val_auprc": 0.3 + 0.01 * e,
                "score": 0.3} for e in range(3)]
    assert_png(P.learning_curves_png(patient, tmp_path / "patient.png"))
    with pytest.raises(ValueError, match="at least one epoch"):
        P.learning_curves_png([], tmp_path / "empty.png")


def test_dropout(tmp_path):
    rows = [{"rate": r, "variant": v, "model": m, "auroc": 0.8 - r * (0.1 if v == "remove" else 0.3),
             "utility": 0.4 - r * 0.2} for m in ("cfc", "lstm") for v in ("remove", "zero")
            for r in (0.0, 0.2, 0.4)]
    assert_png(P.dropout_png(rows, tmp_path / "dropout.png"))


def test_compare_roc(tmp_path, cohort):
    labels, probs = cohort
    noisy = [np.clip(p + 0.3 * np.random.default_rng(1).random(len(p)), 0, 1) for p in probs]
    assert_png(P.compare_roc_png({"cfc": (labels, probs), "lstm": (labels, noisy)}, tmp_path / "cmp.png"))
