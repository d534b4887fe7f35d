"""Read Quick, Draw! ndjson (simplified and raw formats) and turn drawings into point sequences.

- simplified: "drawing" is a list of strokes [[x...], [y...]] (0-255 grid, no timing);
- raw: strokes are [[x...], [y...], [t ms...]] (screen pixels, ms since the drawing started).
The path is a .tar/.tar.xz archive or a directory. The project's archive holds
`lamnguyen_simplified25/<category>.ndjson` and `exupery_raw/<category>.ndjson`; a directory of
`<category>.ndjson` files in one format is read too.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

STUDY_CATEGORIES = ("airplane", "apple", "banana", "basketball", "bed", "bee", "bicycle", "bird",
                    "book", "butterfly")
FORMAT_DIRS = {"simplified": "lamnguyen_simplified25", "raw": "exupery_raw"}
TIME_UNIT_MS = 100.0  # raw-format time spans are in units of 100 ms


class QuickDrawFormatError(ValueError):
    """A line that is not a Quick, Draw! drawing; the message names file, line and column."""


@dataclass(frozen=True)
class Drawing:
    key_id: str
    category: str
    strokes: tuple[np.ndarray, ...]  # each [n, 2] (x, y) or [n, 3] (x, y, t)


def parse_line(line: str, fmt: str, source: str, lineno: int) -> Drawing:
    where = f"{source}: line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise QuickDrawFormatError(f"{where}, column {err.colno}: bad JSON: {err.msg}") from err
    if not isinstance(obj, dict) or "drawing" not in obj or "word" not in obj:
        raise QuickDrawFormatError(f"{where}, column 1: expected an object with 'word' and 'drawing'")
    width = 2 if fmt == "simplified" else 3
    strokes = []
    if not isinstance(obj["drawing"], list) or not obj["drawing"]:
        raise QuickDrawFormatError(f"{where}, column 1: 'drawing' must be a non-empty list of strokes")
    for k, stroke in enumerate(obj["drawing"]):
        ok = (isinstance(stroke, list) and len(stroke) == width
              and all(isinstance(c, list) for c in stroke)
              and len({len(c) for c in stroke}) == 1 and len(stroke[0]) > 0)
        if not ok:
            raise QuickDrawFormatError(
                f"{where}, column 1: stroke {k} must be {width} equal-length non-empty lists "
                f"({'[x], [y]' if width == 2 else '[x], [y], [t]'}) for the {fmt} format")
        try:
            strokes.append(np.asarray(stroke, dtype=np.float64).T)
        except (TypeError, ValueError) as err:
            raise QuickDrawFormatError(f"{where}, column 1: stroke {k} has non-numeric values") from err
    return Drawing(str(obj.get("key_id", f"{source}:{lineno}")), str(obj["word"]), tuple(strokes))


def parse_ndjson(text: str, fmt: str, source: str) -> list[Drawing]:
    return [parse_line(line, fmt, source, i) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def _category_files(path: Path, fmt: str, categories) -> dict[str, tuple[str, str]]:
    """category -> (source name, text)."""
    wanted = {f"{c}.ndjson" for c in categories}
    found: dict[str, tuple[str, str]] = {}
    sub = FORMAT_DIRS[fmt]

    def accept(rel: str) -> bool:
        parts = PurePosixPath(rel).parts
        if parts[-1] not in wanted:
            return False
        # inside the archive layout only the chosen format's folder counts
        return len(parts) == 1 or parts[-2] == sub or not any(p in FORMAT_DIRS.values() for p in parts)

    if path.is_dir():
        for f in sorted(path.rglob("*.ndjson")):
            rel = f.relative_to(path).as_posix()
            if accept(rel):
                found[f.stem] = (str(f), f.read_text(encoding="utf-8"))
    elif path.is_file():
        try:
            with tarfile.open(path) as tar:
                for m in tar:
                    if m.isfile() and accept(m.name):
                        found[PurePosixPath(m.name).stem] = (
                            f"{path}:{m.name}", tar.extractfile(m).read().decode("utf-8"))
        except tarfile.TarError as err:
            raise QuickDrawFormatError(f"{path}: not a readable tar archive ({err})") from err
    else:
        raise FileNotFoundError(f"{path}: no such file or directory")
    missing = sorted(set(categories) - set(found))
    if missing:
        raise QuickDrawFormatError(f"{path}: no {fmt} ndjson for categories {missing}")
    return found


def load_quickdraw(path: str | Path, fmt: str = "simplified",
                   categories=STUDY_CATEGORIES) -> list[Drawing]:
    if fmt not in FORMAT_DIRS:
        raise ValueError(f"unknown format {fmt!r}: expected 'simplified' or 'raw'")
    files = _category_files(Path(path), fmt, categories)
    drawings = []
    for cat in categories:
        source, text = files[cat]
        drawings.extend(parse_ndjson(text, fmt, source))
    return drawings


# ---------------------------------------------------------------- sequences (pure)
def test_split(key_id: str, fraction: float = 0.2) -> bool:
    """A drawing's test membership from its key_id alone, so the simplified and raw copies of one
    drawing always land on the same side."""
    h = int(hashlib.sha256(key_id.encode()).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


def to_sequence(d: Drawing, max_len: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(features [T, 5] = dx, dy, x, y, pen; spans [T]).

    x, y are scaled into [0, 1] by the drawing's larger bounding-box side; pen is 1 on a stroke's
    last point (the pen lifts after it). Longer drawings are thinned to max_len points, always
    keeping stroke ends. Spans: 1 per point without timing; with timing, the real time since the
    previous kept point, in units of 100 ms (0 for the first point).
    """
    pts = np.concatenate(d.strokes, axis=0)
    ends = np.cumsum([len(s) for s in d.strokes]) - 1
    pen = np.zeros(len(pts))
    pen[ends] = 1.0
    if len(pts) > max_len:
        if len(ends) >= max_len:  # more strokes than max_len: keep stroke ends evenly
            idx = ends[np.linspace(0, len(ends) - 1, max_len).round().astype(int)]
        else:
            others = np.setdiff1d(np.arange(len(pts)), ends)
            pick = others[np.linspace(0, len(others) - 1, max_len - len(ends)).round().astype(int)]
            idx = np.union1d(ends, pick)
        pts, pen = pts[idx], pen[idx]
    xy = pts[:, :2] - pts[:, :2].min(axis=0)
    xy = xy / max(float(xy.max()), 1.0)
    dxy = np.diff(xy, axis=0, prepend=xy[:1])
    if pts.shape[1] == 3:
        t = pts[:, 2]
        dt = np.clip(np.diff(t, prepend=t[:1]), 0.0, None) / TIME_UNIT_MS
    else:
        dt = np.ones(len(pts))
    feats = np.concatenate([dxy, xy, pen[:, None]], axis=1)
    return feats.astype(np.float32), dt.astype(np.float32)


def to_arrays(drawings: list[Drawing], categories=STUDY_CATEGORIES, max_len: int = 200):
    """Pad to the longest sequence: (x [N, T, 5], dt [N, T], mask [N, T], y [N])."""
    index = {c: i for i, c in enumerate(categories)}
    seqs = [to_sequence(d, max_len) for d in drawings]
    t = max((len(f) for f, _ in seqs), default=1)
    n = len(seqs)
    x = np.zeros((n, t, 5), np.float32)
    dt = np.ones((n, t), np.float32)
    mask = np.zeros((n, t), bool)
    for i, (f, s) in enumerate(seqs):
        x[i, : len(f)], dt[i, : len(f)], mask[i, : len(f)] = f, s, True
    y = np.array([index[d.category] for d in drawings], dtype=np.int64)
    return x, dt, mask, y
