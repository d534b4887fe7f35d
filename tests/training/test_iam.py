"""IAM: both real layouts, corrupt inputs, CER/WER, greedy CTC decoding, a short CTC training run."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from training.iam import cli
from training.iam.data import IAMFormatError, load_iam
from training.iam.metrics import cer, edit_distance, greedy_decode, wer
from training.iam.model import LineRecognizer, reverse_padded
from training.loop import LoopConfig


def _png(width=60, height=20) -> Image.Image:
    img = Image.new("L", (width, height), 255)
    img.paste(0, (5, 5, width - 5, 15))
    return img


def _write_lines_dir(root, nested=True):
    """lines.txt plus lines/<writer>/<form>/<id>.png (or lines/<form>/<id>.png)."""
    rows = ["#--- lines.txt ---", "# format: id status gray comps x y w h text"]
    texts = {"a01-000u-00": "A MOVE to stop", "a01-000u-01": "Mr. Gaitskell", "b02-010-00": "from nominating"}
    for lid, text in texts.items():
        form = "-".join(lid.split("-")[:2])
        folder = root / "lines" / form.split("-")[0] / form if nested else root / "lines" / form
        folder.mkdir(parents=True, exist_ok=True)
        _png().save(folder / f"{lid}.png")
        rows.append(f"{lid} ok 154 19 408 746 1661 89 {text.replace(' ', '|')}")
    (root / "lines.txt").write_text("\n".join(rows) + "\n")
    return root


def test_edit_distance_cer_wer_hand_computed():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    # 1 substitution + 1 deletion over 4 + 3 reference characters
    assert cer(["abcd", "xyz"], ["abed", "xy"]) == pytest.approx(2 / 7)
    # "the cat sat" -> "the bat sat down": 1 substitution + 1 insertion over 3 words
    assert wer(["the cat sat"], ["the bat sat down"]) == pytest.approx(2 / 3)
    assert cer(["same"], ["same"]) == 0.0


def test_greedy_decoding_collapses_repeats_and_drops_blanks():
    frames = [1, 1, 0, 1, 2, 2, 0, 0, 3]  # labels per frame; 0 is blank
    lp = torch.full((len(frames) + 2, 1, 4), -10.0)
    for t, k in enumerate(frames):
        lp[t, 0, k] = 0.0
    lp[len(frames):, 0, 2] = 0.0  # beyond the length: ignored
    assert greedy_decode(lp, torch.tensor([len(frames)])) == [[1, 1, 2, 3]]


@pytest.mark.parametrize("nested", [True, False])
def test_reads_lines_txt_layout(tmp_path, nested):
    lines = load_iam(_write_lines_dir(tmp_path, nested))
    assert [ln.text for ln in lines] == ["A MOVE to stop", "Mr. Gaitskell", "from nominating"]
    img = lines[0].image
    assert img.shape == (32, 96)  # height 32, aspect kept (60x20 -> 96x32)
    assert img.max() > 0.9 and img[0].max() < 0.1  # ink is high, paper low


def test_missing_png_names_lines_txt_line(tmp_path):
    root = _write_lines_dir(tmp_path)
    (root / "lines" / "b02" / "b02-010" / "b02-010-00.png").unlink()
    with pytest.raises(IAMFormatError, match=r"lines\.txt: line 5, column 1: image for 'b02-010-00'"):
        load_iam(root)


def test_bad_lines_txt_field_names_line_and_column(tmp_path):
    root = _write_lines_dir(tmp_path)
    text = (root / "lines.txt").read_text().replace("a01-000u-01 ok 154 19", "a01-000u-01 ok 154 x9")
    (root / "lines.txt").write_text(text)
    with pytest.raises(IAMFormatError, match=r"line 4, column 20: field 4 must be an integer"):
        load_iam(root)


def _parquet(path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    _png().save(buf, format="PNG")
    pq.write_table(pa.table(columns(buf.getvalue())), path)
    return path


def test_reads_teklia_parquet(tmp_path):
    p = _parquet(tmp_path / "test-00000.parquet", lambda png: {
        "image": [{"bytes": png, "path": "a.png"}, {"bytes": png, "path": "b.png"}],
        "text": ["put down a resolution", "on the subject"]})
    lines = load_iam(p)
    assert [ln.text for ln in lines] == ["put down a resolution", "on the subject"]
    assert lines[1].image.shape == (32, 96)


def test_parquet_with_wrong_columns_is_rejected(tmp_path):
    p = _parquet(tmp_path / "bad.parquet", lambda png: {"img": [png], "label": ["x"]})
    with pytest.raises(IAMFormatError, match=r"bad\.parquet: expected columns 'image' and 'text'.*\['img', 'label'\]"):
        load_iam(p)


def test_parquet_with_undecodable_image_names_row(tmp_path):
    p = _parquet(tmp_path / "t.parquet", lambda png: {"image": [{"bytes": png, "path": "a"},
                                                                 {"bytes": b"nope", "path": "b"}],
                                                       "text": ["a", "b"]})
    with pytest.raises(IAMFormatError, match=r"t\.parquet: row 1, column 'image'"):
        load_iam(p)


def test_generated_lines_are_read_back_by_the_iam_loader(tmp_path):
    from training.iam.generate import CORPUS, generate

    generate(tmp_path, 3, seed=1, progress=False)
    lines = load_iam(tmp_path)
    corpus = set(CORPUS.read_text().splitlines())
    assert len(lines) == 3 and all(ln.text in corpus for ln in lines)
    assert "NOT the IAM database" in (tmp_path / "lines.txt").read_text()


def test_bidirectional_reversal_respects_lengths():
    x = torch.arange(5.0).reshape(1, 5, 1).repeat(2, 1, 1)
    r = reverse_padded(x, torch.tensor([5, 3]))
    assert r[0, :, 0].tolist() == [4, 3, 2, 1, 0] and r[1, :, 0].tolist() == [2, 1, 0, 3, 4]


def test_output_length_follows_image_width():
    model = LineRecognizer(n_labels=5, core="bilstm", hidden=8).eval()
    lp, lengths = model(torch.zeros(2, 1, 32, 40), torch.tensor([40, 21]))
    assert lp.shape == (10, 2, 5) and lengths.tolist() == [10, 6]
    assert torch.allclose(lp.exp().sum(-1), torch.ones(10, 2), atol=1e-5)


def test_a_few_ctc_training_steps_write_the_run(tmp_path):
    from training.iam.generate import generate
    from training.iam.train import IAMConfig, train

    data = generate(tmp_path / "data", 24, seed=0, progress=False)
    out = tmp_path / "run"
    cfg = IAMConfig(data=str(data), core="cfc", hidden=8, max_width=128, test_fraction=0.6,
                    out=str(out), loop=LoopConfig(epochs=2, batch_size=8, progress=False))
    m = train(cfg)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_test"] > 0 and saved["test_cer"] == pytest.approx(m["test_cer"])
    assert "GENERATED" in saved["data"] and len(saved["history"]) == 2
    assert np.isfinite(saved["history"][-1]["train_loss"]) and saved["history"][-1]["train_loss"] > 0
    assert (out / "learning_curves.png").exists() and (out / "stress.png").exists()
    assert {(p["variant"], p["rate"]) for p in saved["stress"]} == {
        (v, r) for v in ("zero", "remove") for r in (0.0, 0.3, 0.5, 0.7)}
    assert saved["stress"][0]["cer"] == pytest.approx(saved["test_cer"])


def test_cli_reports_missing_image(tmp_path, capsys):
    root = _write_lines_dir(tmp_path)
    (root / "lines" / "a01" / "a01-000u" / "a01-000u-01.png").unlink()
    assert cli.main(["train", "--data", str(root), "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    assert "line 4, column 1: image for 'a01-000u-01' not found" in capsys.readouterr().err


def test_column_dropout_reaches_the_core_and_shortens_remove_variant():
    from training import stress

    model = LineRecognizer(n_labels=5, core="cfc", hidden=8).eval()
    image, widths = torch.rand(2, 1, 32, 40), torch.tensor([40, 40])
    keep = torch.tensor([[True, False] * 5, [True] * 10])

    def remove(f, dt, mask):
        return stress.remove_variant(f, dt, mask, keep)

    with torch.no_grad():
        base, n0 = model(image, widths)
        _, n1 = model(image, widths, remove)
        same, _ = model(image, widths, lambda f, dt, m: (f, dt, m))
    assert n0.tolist() == [10, 10] and n1.tolist() == [5, 10]
    assert torch.allclose(base, same)
