"""Read IAM handwritten text lines in their two real layouts and make padded batches.

- The IAM distribution: `lines.txt` (comment lines start with '#'; then
  `<line-id> <ok|err> <graylevel> <components> <x> <y> <w> <h> <words|joined|by|bars>`) with images
  at `lines/<writer-folder>/<form>/<line-id>.png` (the official tree, e.g.
  lines/a01/a01-000u/a01-000u-00.png) or `lines/<form>/<line-id>.png`.
- The Teklia/IAM-line parquet (Hugging Face): columns `image` (a struct with PNG `bytes`, or raw
  bytes) and `text`.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HEIGHT = 32
DOWNSAMPLE = 4  # the front end shortens the width by this factor


class IAMFormatError(ValueError):
    """Input that is not in an IAM layout; the message names the file, line/row and column."""


@dataclass(frozen=True)
class Line:
    line_id: str
    text: str
    image: np.ndarray  # float32 [HEIGHT, W], ink = 1, paper = 0


def preprocess(img: Image.Image, height: int = HEIGHT, max_width: int = 1024) -> np.ndarray:
    """Grey, inverted (ink high), scaled to `height` keeping the aspect ratio, width capped."""
    g = img.convert("L")
    w = max(1, min(max_width, round(g.width * height / max(g.height, 1))))
    g = g.resize((w, height), Image.BILINEAR)
    return 1.0 - np.asarray(g, dtype=np.float32) / 255.0


def form_of(line_id: str) -> str:
    return "-".join(line_id.split("-")[:2])


def parse_lines_txt(text: str, source: str) -> list[tuple[int, str, str]]:
    """[(line number, line id, transcription)]."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(" ")
        if len(fields) < 9:
            raise IAMFormatError(f"{source}: line {lineno}, column 1: expected 9 space-separated "
                                 f"fields (id, status, graylevel, components, x, y, w, h, text), "
                                 f"got {len(fields)}")
        if fields[1] not in ("ok", "err"):
            col = len(fields[0]) + 2
            raise IAMFormatError(f"{source}: line {lineno}, column {col}: status must be 'ok' or "
                                 f"'err', got {fields[1]!r}")
        for k in range(2, 8):
            if not fields[k].lstrip("-").isdigit():
                col = sum(len(f) + 1 for f in fields[:k]) + 1
                raise IAMFormatError(f"{source}: line {lineno}, column {col}: field {k + 1} must be "
                                     f"an integer, got {fields[k]!r}")
        rows.append((lineno, fields[0], " ".join(fields[8:]).replace("|", " ")))
    return rows


def load_lines_dir(root: str | Path, height: int = HEIGHT, max_width: int = 1024) -> list[Line]:
    root = Path(root)
    index = root / "lines.txt"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no lines.txt (expected the IAM layout)")
    out = []
    for lineno, line_id, text in parse_lines_txt(index.read_text(encoding="utf-8"), str(index)):
        form = form_of(line_id)
        candidates = [root / "lines" / form.split("-")[0] / form / f"{line_id}.png",
                      root / "lines" / form / f"{line_id}.png"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise IAMFormatError(f"{index}: line {lineno}, column 1: image for {line_id!r} not "
                                 f"found (looked for {candidates[0]} and {candidates[1]})")
        try:
            with Image.open(path) as img:
                out.append(Line(line_id, text, preprocess(img, height, max_width)))
        except OSError as err:
            raise IAMFormatError(f"{path}: unreadable image for {index} line {lineno} ({err})") from err
    return out


def load_parquet(path: str | Path, height: int = HEIGHT, max_width: int = 1024) -> list[Line]:
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for non-parquet input
        raise IAMFormatError(f"{path}: not a readable parquet file ({err})") from err
    cols = set(table.column_names)
    if not {"image", "text"} <= cols:
        raise IAMFormatError(f"{path}: expected columns 'image' and 'text' (Teklia/IAM-line), "
                             f"found {sorted(cols)}")
    out = []
    for row, (image, text) in enumerate(zip(table.column("image").to_pylist(),
                                            table.column("text").to_pylist())):
        data = image.get("bytes") if isinstance(image, dict) else image
        if not isinstance(data, (bytes, bytearray)) or not isinstance(text, str):
            raise IAMFormatError(f"{path}: row {row}: 'image' must hold PNG bytes and 'text' a string")
        try:
            with Image.open(io.BytesIO(data)) as img:
                out.append(Line(f"{path.stem}-{row}", text, preprocess(img, height, max_width)))
        except OSError as err:
            raise IAMFormatError(f"{path}: row {row}, column 'image': not a decodable image ({err})") from err
    return out


def load_iam(path: str | Path, **kw) -> list[Line]:
    """A directory with lines.txt, a .parquet file, or a directory of .parquet files."""
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        return load_parquet(path, **kw)
    if path.is_dir() and (path / "lines.txt").is_file():
        return load_lines_dir(path, **kw)
    if path.is_dir() and sorted(path.glob("*.parquet")):
        return [ln for p in sorted(path.glob("*.parquet")) for ln in load_parquet(p, **kw)]
    raise FileNotFoundError(f"{path}: neither an IAM directory with lines.txt nor parquet file(s)")


def is_test(line_id: str, fraction: float = 0.1) -> bool:
    """Test membership by form, so one form's lines never straddle train and test."""
    h = int(hashlib.sha256(form_of(line_id).encode()).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


# ---------------------------------------------------------------- text <-> labels, batches
class Charset:
    """Label 0 is the CTC blank; characters get 1..n in sorted order."""

    def __init__(self, chars):
        self.chars = sorted(set(chars))
        self.index = {c: i + 1 for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text if c in self.index]

    def decode(self, labels) -> str:
        return "".join(self.chars[i - 1] for i in labels if 0 < i <= len(self.chars))


class LineSet(torch.utils.data.Dataset):
    def __init__(self, lines: list[Line], charset: Charset):
        self.lines, self.charset = lines, charset

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> dict:
        ln = self.lines[i]
        return {"image": torch.from_numpy(ln.image), "target": torch.tensor(self.charset.encode(ln.text)),
                "text": ln.text, "index": torch.tensor(i)}

    def column_mask(self) -> torch.Tensor:
        """[N, T] true on each line's real columns (after the front end's downsampling)."""
        steps = [-(-ln.image.shape[1] // DOWNSAMPLE) for ln in self.lines]
        t = max(steps, default=1)
        return torch.arange(t)[None, :] < torch.tensor(steps)[:, None]


def collate_lines(items: list[dict]) -> dict:
    """Right-pad images to the widest (rounded up to the downsampling factor)."""
    widths = torch.tensor([it["image"].shape[1] for it in items])
    w = int(-(-widths.max().item() // DOWNSAMPLE) * DOWNSAMPLE)
    images = torch.zeros(len(items), 1, items[0]["image"].shape[0], w)
    for i, it in enumerate(items):
        images[i, 0, :, : it["image"].shape[1]] = it["image"]
    return {
        "image": images,
        "widths": widths,
        "targets": torch.cat([it["target"] for it in items]).long(),
        "target_lengths": torch.tensor([len(it["target"]) for it in items]),
        "texts": [it["text"] for it in items],
        "index": torch.stack([it["index"] for it in items]),
    }
