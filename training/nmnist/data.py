"""Read N-MNIST event files and turn them into binned event-count sequences.

Formats read (from a .tar/.tar.xz archive or a directory):
- the small subset: `<root>/<id>.bs2` files plus `train1K.txt` / `test100.txt` label lists
  (a header line, then `<id>\t<class>` lines);
- the full dataset: `Train/<digit>/<id>.bin` and `Test/<digit>/<id>.bin`.
Every event is 5 bytes: x, y, then 1 polarity bit and a 23-bit timestamp in microseconds.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

SENSOR = 34
EVENT_BYTES = 5
LABEL_FILES = {"train1K.txt": "train", "test100.txt": "test"}
TIME_UNIT_US = 100_000.0  # event-variant time spans are in units of 100 ms (ms / 100)


class NMNISTFormatError(ValueError):
    """A file that is not in the N-MNIST format; the message names the file and position."""


@dataclass(frozen=True)
class Events:
    x: np.ndarray  # uint8
    y: np.ndarray  # uint8
    p: np.ndarray  # uint8, 0 or 1
    t: np.ndarray  # int64 microseconds


@dataclass(frozen=True)
class Sample:
    sample_id: str
    label: int
    split: str  # "train" or "test"
    events: Events


def decode_events(data: bytes, source: str) -> Events:
    if len(data) % EVENT_BYTES:
        whole = len(data) // EVENT_BYTES
        raise NMNISTFormatError(
            f"{source}: truncated event at byte {whole * EVENT_BYTES} (event {whole}): file has "
            f"{len(data)} bytes, not a multiple of {EVENT_BYTES} bytes per event")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, EVENT_BYTES)
    x, y = raw[:, 0], raw[:, 1]
    bad = np.flatnonzero((x >= SENSOR) | (y >= SENSOR))
    if bad.size:
        k = int(bad[0])
        raise NMNISTFormatError(
            f"{source}: event {k} at byte {k * EVENT_BYTES}: x={x[k]}, y={y[k]} outside the "
            f"{SENSOR}x{SENSOR} sensor")
    p = raw[:, 2] >> 7
    t = ((raw[:, 2].astype(np.int64) & 0x7F) << 16) | (raw[:, 3].astype(np.int64) << 8) | raw[:, 4]
    return Events(x.copy(), y.copy(), p.copy(), t)


def encode_events(x, y, p, t) -> bytes:
    """The inverse of decode_events (used to write fixtures)."""
    t = np.asarray(t, dtype=np.int64)
    raw = np.stack([np.asarray(x), np.asarray(y), (np.asarray(p) << 7) | ((t >> 16) & 0x7F),
                    (t >> 8) & 0xFF, t & 0xFF], axis=1).astype(np.uint8)
    return raw.tobytes()


def parse_labels(text: str, source: str) -> list[tuple[str, int]]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) > 9:
            col = len(line) - len(line.lstrip()) + 1
            raise NMNISTFormatError(
                f"{source}: line {lineno}, column {col}: expected '<id><TAB><class 0-9>', got {line!r}")
        rows.append((parts[0], int(parts[1])))
    return rows


class _Files:
    """Name -> bytes over an archive or a directory, with names relative to its root."""

    def __init__(self, path: Path):
        self.path = path
        self._data: dict[str, bytes] = {}
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    self._data[f.relative_to(path).as_posix()] = b""  # read lazily
            self._lazy = True
        elif path.is_file():
            self._lazy = False
            try:
                with tarfile.open(path) as tar:
                    for m in tar.getmembers():
                        if m.isfile():
                            fh = tar.extractfile(m)
                            self._data[m.name] = fh.read() if fh else b""
            except tarfile.TarError as err:
                raise NMNISTFormatError(f"{path}: not a readable tar archive ({err})") from err
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")

    def names(self) -> list[str]:
        return list(self._data)

    def read(self, name: str) -> bytes:
        if name not in self._data:
            raise KeyError(name)
        return (self.path / name).read_bytes() if self._lazy else self._data[name]

    def where(self, name: str) -> str:
        return f"{self.path}:{name}" if not self._lazy else str(self.path / name)


def load_nmnist(path: str | Path) -> list[Sample]:
    files = _Files(Path(path))
    names = files.names()
    label_files = [n for n in names if PurePosixPath(n).name in LABEL_FILES]
    samples: list[Sample] = []
    if label_files:
        for lf in sorted(label_files):
            split = LABEL_FILES[PurePosixPath(lf).name]
            root = PurePosixPath(lf).parent
            rows = parse_labels(files.read(lf).decode("utf-8", "replace"), files.where(lf))
            text_lines = files.read(lf).decode("utf-8", "replace").splitlines()
            for sample_id, label in rows:
                name = (root / f"{sample_id}.bs2").as_posix()
                if name not in files._data:
                    lineno = next(i for i, l in enumerate(text_lines, 1) if l.split()[:1] == [sample_id])
                    raise NMNISTFormatError(
                        f"{files.where(lf)}: line {lineno}, column 1: sample {sample_id!r} has no "
                        f"file {name}")
                samples.append(Sample(sample_id, label, split,
                                      decode_events(files.read(name), files.where(name))))
        return samples
    for name in names:
        parts = PurePosixPath(name).parts
        if name.endswith(".bin") and len(parts) >= 3 and parts[-3] in ("Train", "Test") \
                and parts[-2].isdigit():
            split = "train" if parts[-3] == "Train" else "test"
            samples.append(Sample(f"{parts[-3]}/{parts[-2]}/{PurePosixPath(name).stem}",
                                  int(parts[-2]), split, decode_events(files.read(name), files.where(name))))
    if not samples:
        raise NMNISTFormatError(
            f"{path}: found neither train1K.txt/test100.txt label lists nor Train|Test/<digit>/*.bin files")
    return samples


# ---------------------------------------------------------------- binning (pure)
def _histogram(ev: Events, bins: np.ndarray, n_bins: int) -> np.ndarray:
    counts = np.zeros((n_bins, 2, SENSOR, SENSOR), dtype=np.float32)
    np.add.at(counts, (bins, ev.p.astype(np.int64), ev.y.astype(np.int64), ev.x.astype(np.int64)), 1.0)
    return np.log1p(counts)


def bin_fixed_time(ev: Events, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Equal-duration bins over [0, last event]; per-polarity log1p counts [n_bins, 2, 34, 34].
    Spans are 1 per bin (the study's setting)."""
    if len(ev.t) == 0:
        return np.zeros((n_bins, 2, SENSOR, SENSOR), np.float32), np.ones(n_bins, np.float32)
    end = float(ev.t.max()) + 1.0
    bins = np.minimum((ev.t * n_bins / end).astype(np.int64), n_bins - 1)
    return _histogram(ev, bins, n_bins), np.ones(n_bins, np.float32)


def bin_equal_events(ev: Events, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Bins holding equal numbers of events (time-ordered); span of bin i = real time between the
    centres of bins i-1 and i (bin 0: from t=0), in units of 100 ms."""
    n = len(ev.t)
    if n == 0:
        return np.zeros((n_bins, 2, SENSOR, SENSOR), np.float32), np.ones(n_bins, np.float32)
    order = np.argsort(ev.t, kind="stable")
    bins = np.empty(n, dtype=np.int64)
    bins[order] = np.minimum(np.arange(n) * n_bins // n, n_bins - 1)
    t_sorted = ev.t[order].astype(np.float64)
    centres = np.zeros(n_bins)
    prev = 0.0
    for b in range(n_bins):
        chunk = t_sorted[(np.arange(n) * n_bins // n) == b]
        centres[b] = (chunk[0] + chunk[-1]) / 2.0 if chunk.size else prev
        prev = centres[b]
    dt = np.diff(np.concatenate([[0.0], centres])) / TIME_UNIT_US
    return _histogram(ev, bins, n_bins), dt.astype(np.float32)


def to_arrays(samples: list[Sample], variant: str = "fixed", n_bins: int = 10):
    """Stack samples into (x [N, T, 2, 34, 34], dt [N, T], y [N])."""
    fn = {"fixed": bin_fixed_time, "events": bin_equal_events}.get(variant)
    if fn is None:
        raise ValueError(f"unknown N-MNIST variant {variant!r}: expected 'fixed' or 'events'")
    xs, dts = zip(*(fn(s.events, n_bins) for s in samples)) if samples else ((), ())
    x = np.stack(xs) if xs else np.zeros((0, n_bins, 2, SENSOR, SENSOR), np.float32)
    dt = np.stack(dts) if dts else np.zeros((0, n_bins), np.float32)
    y = np.array([s.label for s in samples], dtype=np.int64)
    return x, dt, y
