"""N-MNIST: the binary event format, label lists, binning, and a short training run."""
import json
import tarfile

import numpy as np
import pytest

from training.loop import LoopConfig
from training.nmnist import cli
from training.nmnist.data import (NMNISTFormatError, bin_equal_events, bin_fixed_time, decode_events,
                                  encode_events, load_nmnist)


def _event_bytes(x, y, p, t):
    return bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])


def _write_small(root, n_train=20, n_test=10, seed=0):
    """The small-subset layout: NMNISTsmall/<id>.bs2 + train1K.txt / test100.txt."""
    rng = np.random.default_rng(seed)
    d = root / "NMNISTsmall"
    d.mkdir(parents=True)
    rows = {"train1K.txt": [], "test100.txt": []}
    for i in range(n_train + n_test):
        label = i % 10
        n = 200
        t = np.sort(rng.integers(0, 300_000, n))
        # each class lights up its own column so a model could learn it
        x = np.clip(rng.normal(3 * label + 2, 1.5, n).round(), 0, 33).astype(int)
        y = rng.integers(0, 34, n)
        p = rng.integers(0, 2, n)
        (d / f"{i + 1}.bs2").write_bytes(encode_events(x, y, p, t))
        rows["train1K.txt" if i < n_train else "test100.txt"].append(f"{i + 1}\t{label}")
    for name, lines in rows.items():
        (d / name).write_text("#sample #class\n" + "\n".join(lines) + "\n")
    return d


def test_decodes_hand_written_events():
    data = _event_bytes(3, 33, 1, 0x123456) + _event_bytes(0, 1, 0, 7)
    ev = decode_events(data, "x.bs2")
    assert ev.x.tolist() == [3, 0] and ev.y.tolist() == [33, 1]
    assert ev.p.tolist() == [1, 0] and ev.t.tolist() == [0x123456, 7]


def test_reads_directory_and_archive_alike(tmp_path):
    d = _write_small(tmp_path / "src")
    archive = tmp_path / "nmnist_small.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(d, arcname="NMNISTsmall")
    a, b = load_nmnist(d), load_nmnist(archive)
    assert len(a) == 30 and [s.split for s in a].count("test") == 10
    assert [(s.sample_id, s.label) for s in a] == [(s.sample_id, s.label) for s in b]
    assert np.array_equal(a[5].events.t, b[5].events.t)


def test_reads_full_dataset_layout(tmp_path):
    f = tmp_path / "Train" / "7" / "00002.bin"
    f.parent.mkdir(parents=True)
    f.write_bytes(_event_bytes(1, 2, 1, 10))
    (s,) = load_nmnist(tmp_path)
    assert s.label == 7 and s.split == "train" and s.events.t.tolist() == [10]


def test_truncated_file_names_file_and_byte(tmp_path):
    d = _write_small(tmp_path)
    (d / "3.bs2").write_bytes((d / "3.bs2").read_bytes()[:-2])
    with pytest.raises(NMNISTFormatError, match=r"3\.bs2: truncated event at byte 995 \(event 199\)"):
        load_nmnist(d)


def test_bad_label_line_names_file_line_and_column(tmp_path):
    d = _write_small(tmp_path)
    (d / "test100.txt").write_text("#sample #class\n21\t1\n22 seven\n")
    with pytest.raises(NMNISTFormatError, match=r"test100\.txt: line 3, column 1"):
        load_nmnist(d)


def test_label_without_file_is_reported(tmp_path):
    d = _write_small(tmp_path)
    (d / "25.bs2").unlink()
    with pytest.raises(NMNISTFormatError, match=r"test100\.txt: line 6, column 1: sample '25'"):
        load_nmnist(d)


def test_event_outside_sensor_is_rejected():
    with pytest.raises(NMNISTFormatError, match=r"event 1 at byte 5: x=34"):
        decode_events(_event_bytes(1, 1, 0, 1) + _event_bytes(34, 0, 0, 2), "bad.bs2")


def test_fixed_bins_count_every_event_per_polarity():
    ev = decode_events(_event_bytes(0, 0, 1, 0) + _event_bytes(0, 0, 1, 5) + _event_bytes(5, 6, 0, 99), "f")
    x, dt = bin_fixed_time(ev, n_bins=10)
    assert x.shape == (10, 2, 34, 34) and dt.tolist() == [1.0] * 10
    assert x[0, 1, 0, 0] == pytest.approx(np.log1p(2))  # two ON events, first bin
    assert x[9, 0, 6, 5] == pytest.approx(np.log1p(1))
    assert np.expm1(x).sum() == pytest.approx(3)


def test_equal_event_bins_give_real_spans_in_100ms_units():
    # 4 events, 2 bins: centres at (0+100000)/2 and (200000+300000)/2 microseconds
    data = b"".join(_event_bytes(1, 1, 0, t) for t in (0, 100_000, 200_000, 300_000))
    x, dt = bin_equal_events(decode_events(data, "f"), n_bins=2)
    assert dt.tolist() == pytest.approx([0.5, 2.0])
    assert np.expm1(x).sum(axis=(1, 2, 3)).tolist() == pytest.approx([2, 2])


def test_a_few_training_steps_write_the_run(tmp_path):
    from training.nmnist.train import NMNISTConfig, train

    d = _write_small(tmp_path / "data")
    out = tmp_path / "run"
    cfg = NMNISTConfig(data=str(d), core="cfc", variant="events", hidden=8, out=str(out),
                       loop=LoopConfig(epochs=2, batch_size=8, val_fraction=0.2, progress=False))
    m = train(cfg)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_test"] == 10 and saved["n_train"] + saved["n_val"] == 20
    assert 0.0 <= saved["test_accuracy"] <= 1.0 and len(saved["history"]) == 2
    assert saved["parameters_core"] < saved["parameters_total"]
    assert {(p["variant"], p["rate"]) for p in saved["stress"]} == {
        (v, r) for v in ("zero", "remove") for r in (0.0, 0.3, 0.5, 0.7)}
    for png in ("learning_curves.png", "confusion_matrix.png", "stress.png"):
        assert (out / png).stat().st_size > 0
    # the saved model reproduces its test accuracy
    from training.nmnist.evaluate import evaluate
    assert evaluate(out)["test_accuracy"] == pytest.approx(m["test_accuracy"])


def test_cli_reports_corrupt_data_without_traceback(tmp_path, capsys):
    d = _write_small(tmp_path)
    (d / "1.bs2").write_bytes(b"\x00\x01\x02")
    assert cli.main(["train", "--data", str(d), "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    assert "1.bs2: truncated" in capsys.readouterr().err
