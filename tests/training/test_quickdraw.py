"""QuickDraw: simplified and raw ndjson, point features, corrupt lines, a short training run."""
import json
import tarfile

import numpy as np
import pytest

from training.loop import LoopConfig
from training.quickdraw import cli
from training.quickdraw.data import (STUDY_CATEGORIES, QuickDrawFormatError, load_quickdraw,
                                     test_split as in_test, to_arrays, to_sequence)


def _key_ids(n_test, n_train):
    """Key ids chosen so the hash split puts n_test of them in the test split."""
    test, train, k = [], [], 0
    while len(test) < n_test or len(train) < n_train:
        kid = str(1000 + k)
        (test if in_test(kid) else train).append(kid) if (len(test) < n_test if in_test(kid)
                                                          else len(train) < n_train) else None
        k += 1
    return test + train


def _write(root, per_class=3):
    """The archive layout: lamnguyen_simplified25/<cat>.ndjson and exupery_raw/<cat>.ndjson."""
    ids = iter(_key_ids(10, 10 * per_class))
    rng = np.random.default_rng(0)
    for sub, raw in (("lamnguyen_simplified25", False), ("exupery_raw", True)):
        (root / sub).mkdir(parents=True)
    for c, cat in enumerate(STUDY_CATEGORIES):
        simp, raw = [], []
        for _ in range(per_class + 1):
            kid = next(ids)
            xs = (np.arange(6) * (c + 1) * 4).tolist()
            ys = rng.integers(0, 255, 6).tolist()
            t = (np.arange(6) * 20).tolist()
            simp.append(json.dumps({"word": cat, "key_id": kid, "drawing": [[xs[:3], ys[:3]], [xs[3:], ys[3:]]]}))
            raw.append(json.dumps({"word": cat, "key_id": kid,
                                   "drawing": [[xs[:3], ys[:3], t[:3]], [xs[3:], ys[3:], [v + 500 for v in t[3:]]]]}))
        (root / "lamnguyen_simplified25" / f"{cat}.ndjson").write_text("\n".join(simp) + "\n")
        (root / "exupery_raw" / f"{cat}.ndjson").write_text("\n".join(raw) + "\n")
    return root


def test_reads_both_formats_from_directory_and_archive(tmp_path):
    root = _write(tmp_path / "src")
    archive = tmp_path / "qd.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for sub in ("lamnguyen_simplified25", "exupery_raw"):
            tar.add(root / sub, arcname=sub)
    for fmt, width in (("simplified", 2), ("raw", 3)):
        a, b = load_quickdraw(root, fmt), load_quickdraw(archive, fmt)
        assert len(a) == 40 and [d.key_id for d in a] == [d.key_id for d in b]
        assert a[0].strokes[0].shape == (3, width)
        assert {d.category for d in a} == set(STUDY_CATEGORIES)


def test_point_features_and_real_pen_timing():
    from training.quickdraw.data import Drawing

    d = Drawing("1", "apple", (np.array([[0, 0, 0], [10, 0, 30]], float),
                               np.array([[10, 20, 530], [0, 20, 560]], float)))
    f, dt = to_sequence(d)
    # dx, dy, x, y, pen with the larger bbox side (20) scaled to 1
    np.testing.assert_allclose(f, [[0, 0, 0, 0, 0], [0.5, 0, 0.5, 0, 1],
                                   [0, 1, 0.5, 1, 0], [-0.5, 0, 0, 1, 1]], atol=1e-6)
    assert dt.tolist() == pytest.approx([0.0, 0.3, 5.0, 0.3])  # ms / 100, pen-up gap included
    _, dt_simple = to_sequence(Drawing("1", "apple", (np.zeros((3, 2)),)))
    assert dt_simple.tolist() == [1.0, 1.0, 1.0]


def test_thinning_keeps_stroke_ends_and_total_time():
    from training.quickdraw.data import Drawing

    s1 = np.stack([np.arange(100), np.arange(100), np.arange(100) * 10], 1).astype(float)
    s2 = s1 + [0, 0, 2000]
    f, dt = to_sequence(Drawing("1", "bee", (s1, s2)), max_len=20)
    assert len(f) == 20 and f[:, 4].sum() == 2 and f[-1, 4] == 1
    assert dt.sum() * 100 == pytest.approx(s2[-1, 2] - s1[0, 2])


def test_padding_mask_marks_real_points(tmp_path):
    drawings = load_quickdraw(_write(tmp_path), "simplified")[:2]
    x, dt, mask, y = to_arrays(drawings)
    assert x.shape == (2, 6, 5) and mask.all() and y.tolist() == [0, 0]


def test_bad_json_line_names_file_line_and_column(tmp_path):
    root = _write(tmp_path)
    f = root / "lamnguyen_simplified25" / "bee.ndjson"
    f.write_text(f.read_text() + '{"word": "bee", "drawing": [[[1,2],[3,4]],}\n')
    with pytest.raises(QuickDrawFormatError, match=r"bee\.ndjson: line 5, column 43: bad JSON"):
        load_quickdraw(root, "simplified")


def test_raw_stroke_without_timing_is_rejected(tmp_path):
    root = _write(tmp_path)
    f = root / "exupery_raw" / "book.ndjson"
    lines = f.read_text().splitlines()
    lines[1] = json.dumps({"word": "book", "key_id": "9", "drawing": [[[1, 2], [3, 4]]]})
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(QuickDrawFormatError, match=r"book\.ndjson: line 2, column 1: stroke 0 must be 3"):
        load_quickdraw(root, "raw")


def test_missing_category_is_reported(tmp_path):
    root = _write(tmp_path)
    (root / "exupery_raw" / "bird.ndjson").unlink()
    with pytest.raises(QuickDrawFormatError, match=r"no raw ndjson for categories \['bird'\]"):
        load_quickdraw(root, "raw")


def test_a_few_training_steps_with_pen_timing(tmp_path):
    from training.quickdraw.train import QuickDrawConfig, train

    root = _write(tmp_path / "data")
    out = tmp_path / "run"
    cfg = QuickDrawConfig(data=str(root), core="lstm", format="raw", hidden=8, out=str(out),
                          loop=LoopConfig(epochs=2, batch_size=8, val_fraction=0.2, progress=False))
    m = train(cfg)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_test"] == 10 and saved["test_accuracy"] == m["test_accuracy"]
    assert len(saved["confusion_matrix"]) == 10 and sum(map(sum, saved["confusion_matrix"])) == 10
    assert "pen timing" in saved["data"]
    assert (out / "stress.png").exists() and (out / "confusion_matrix.png").exists()


def test_cli_reports_bad_line(tmp_path, capsys):
    root = _write(tmp_path)
    (root / "lamnguyen_simplified25" / "bed.ndjson").write_text("not json\n")
    assert cli.main(["train", "--data", str(root), "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    assert "bed.ndjson: line 1, column 1: bad JSON" in capsys.readouterr().err
