"""PhysioNet/CinC 2019 sepsis stays: parse and validate `.psv` files, load a whole cohort, cache it.

One `.psv` file is one ICU stay: a header of 41 pipe-separated names, then one row per hour, missing
values written `NaN`. Files come from a directory tree or straight from a tar archive.

Speed: 1.3M rows are parsed in chunks of a few thousand stays, each chunk as one pandas C-parser
call over the concatenated file bodies, with the structural checks (fields per row, empty fields)
done by numpy on the raw bytes. Only when a chunk fails is it re-checked line by line, file by
file, so the error can name the file, line and column.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import lzma
import os
import re
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from models.contract import FEATURES, ICULOS_INDEX, elapsed_hours

LABEL = "SepsisLabel"
COLUMNS: tuple[str, ...] = FEATURES + (LABEL,)  # a stay file's header

N_FIELDS = len(COLUMNS)
_HEADER = "|".join(COLUMNS).encode()
# Bumped whenever parsing or the cache layout changes, so old caches are not reused.
CACHE_FORMAT = 1
DEFAULT_CACHE_DIR = Path(".cache/sepsis")
# About 8 MB of text per pandas call: large enough to amortise the call, small enough that the
# numpy byte checks stay cheap in memory.
_CHUNK_BYTES = 8 << 20
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_SET_DIR = re.compile(r"set([A-Za-z])")


class DataFormatError(ValueError):
    """A malformed stay file; `line` is 1-based with the header as line 1."""

    def __init__(self, file: str, line: int | None, column: str | None, reason: str):
        self.file = file
        self.line = line
        self.column = column
        self.reason = reason
        where = file
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Stay:
    patient_id: str
    hospital: str
    values: np.ndarray   # float32 [T, 40], NaN = not measured
    labels: np.ndarray   # int8 [T]

    @property
    def septic(self) -> bool:
        return bool((self.labels == 1).any())

    @property
    def elapsed_hours(self) -> np.ndarray:
        """Hours since the previous row from ICULOS; 0 on the first row, 1 where ICULOS is unusable."""
        return elapsed_hours(self.values, np.array([0, len(self.values)]))

    def __len__(self) -> int:
        return len(self.labels)


def stay_identity(path: str) -> tuple[str, str]:
    """(patient_id, hospital) from a file path such as `setB/p100001.psv`.

    The hospital comes from a `setX` directory when there is one; otherwise from the id, because
    the challenge numbered hospital B's stays p1xxxxx.
    """
    parts = re.split(r"[\\/]", path)
    patient_id = Path(parts[-1]).stem
    for part in reversed(parts[:-1]):
        m = _SET_DIR.fullmatch(part)
        if m:
            return patient_id, m.group(1).upper()
    return patient_id, "B" if re.fullmatch(r"p1\d{5}", patient_id) else "A"


# ----------------------------------------------------------------------------------------------
# Parsing


def _split_header(raw: bytes, source: str) -> bytes:
    """Check the header line and return the body (rows), normalised to end in exactly one newline."""
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark some editors add
        raw = raw[3:]
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    header, sep, body = raw.partition(b"\n")
    if header != _HEADER:
        _check_header(header, source)
    body = body.rstrip(b"\n")
    if not body:
        raise DataFormatError(source, 2, None, "no data rows after the header")
    return body + b"\n"


def _check_header(header: bytes, source: str) -> None:
    try:
        names = header.decode("utf-8").split("|")
    except UnicodeDecodeError:
        raise DataFormatError(source, 1, None, "header is not UTF-8 text") from None
    names = [n.strip() for n in names]
    for i, expected in enumerate(COLUMNS):
        if i >= len(names):
            raise DataFormatError(source, 1, expected,
                                  f"header is missing column {expected!r} (field {i + 1} of {N_FIELDS})")
        if names[i] != expected:
            raise DataFormatError(source, 1, expected,
                                  f"header field {i + 1} is {names[i]!r}, expected {expected!r}")
    if len(names) > N_FIELDS:
        raise DataFormatError(source, 1, names[N_FIELDS],
                              f"header has {len(names)} fields, expected {N_FIELDS}: "
                              f"unexpected extra column {names[N_FIELDS]!r} after {LABEL!r}")


def _check_rows_slowly(body: bytes, source: str) -> None:
    """Line-by-line validation of one file's rows; raises at the first problem found."""
    prev_iculos = None
    for n, raw_line in enumerate(body.split(b"\n")[:-1]):
        line = n + 2
        try:
            fields = raw_line.decode("utf-8").split("|")
        except UnicodeDecodeError:
            raise DataFormatError(source, line, None, "row is not UTF-8 text") from None
        if len(fields) < N_FIELDS:
            raise DataFormatError(source, line, COLUMNS[len(fields)],
                                  f"row has {len(fields)} fields, expected {N_FIELDS} "
                                  f"(missing {COLUMNS[len(fields)]!r} onwards)")
        if len(fields) > N_FIELDS:
            raise DataFormatError(source, line, None,
                                  f"row has {len(fields)} fields, expected {N_FIELDS}")
        for name, field in zip(COLUMNS, fields):
            if field != "NaN" and not _NUMBER.fullmatch(field):
                raise DataFormatError(source, line, name,
                                      f"{field!r} is not a number or NaN")
        label = fields[-1]
        if label == "NaN" or float(label) not in (0.0, 1.0):
            raise DataFormatError(source, line, LABEL, f"SepsisLabel must be 0 or 1, got {label!r}")
        iculos = fields[ICULOS_INDEX]
        if iculos == "NaN":
            raise DataFormatError(source, line, "ICULOS", "ICULOS is missing (NaN)")
        value = float(iculos)
        if prev_iculos is not None and value < prev_iculos:
            raise DataFormatError(source, line, "ICULOS",
                                  f"ICULOS decreases from {prev_iculos:g} to {value:g}")
        prev_iculos = value


def _line_fields_ok(body: bytes) -> np.ndarray:
    """bool per row: exactly 41 non-empty fields. Vectorised over the raw bytes of many files."""
    buf = np.frombuffer(body, dtype=np.uint8)
    is_nl = buf == 10
    is_pipe = buf == 124
    nl_pos = np.flatnonzero(is_nl)
    pipes_before_nl = np.searchsorted(np.flatnonzero(is_pipe), nl_pos)
    ok = np.diff(pipes_before_nl, prepend=0) == N_FIELDS - 1
    # an empty field is a separator right after a separator or at the start of a line
    sep = is_nl | is_pipe
    prev_sep = np.r_[True, sep[:-1]]
    empty_at = np.flatnonzero(sep & prev_sep)
    if len(empty_at):
        ok[np.searchsorted(nl_pos, empty_at)] = False
    return ok


def _parse_bodies(bodies: list[bytes], sources: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of several files (headers already stripped) -> values [R, 40] f32, labels [R] i8, lengths [n]."""
    lengths = np.fromiter((b.count(b"\n") for b in bodies), dtype=np.int64, count=len(bodies))
    offsets = np.r_[0, np.cumsum(lengths)]
    joined = b"".join(bodies)

    def fail_at_row(row: int):
        f = int(np.searchsorted(offsets, row, side="right") - 1)
        _check_rows_slowly(bodies[f], sources[f])
        return f

    bad_rows = np.flatnonzero(~_line_fields_ok(joined))
    if len(bad_rows):
        fail_at_row(int(bad_rows[0]))
        raise AssertionError("row-structure check disagreed with the line-by-line check")  # pragma: no cover

    try:
        table = pd.read_csv(
            io.BytesIO(joined), sep="|", header=None, names=list(COLUMNS), dtype=np.float32,
            engine="c", keep_default_na=False, na_values=["NaN"], quoting=csv.QUOTE_NONE,
            skip_blank_lines=False,
        ).to_numpy(dtype=np.float32)
    except (ValueError, pd.errors.ParserError) as exc:
        for body, source in zip(bodies, sources):
            _check_rows_slowly(body, source)
        # pandas refused something the line check accepts: still say which files were involved
        raise DataFormatError(sources[0] if len(sources) == 1 else f"{sources[0]} .. {sources[-1]}",
                              None, None, f"could not parse: {exc}") from exc
    if len(table) != offsets[-1]:  # pragma: no cover - guarded by the structural check above
        raise DataFormatError(sources[0], None, None, "row count mismatch while parsing")

    values = table[:, :40]
    label_f = table[:, 40]
    problems = [
        (~np.isfinite(values) & ~np.isnan(values)).any(axis=1),   # inf is not a measurement
        (label_f != 0) & (label_f != 1),
        np.isnan(values[:, ICULOS_INDEX]),
    ]
    iculos = values[:, ICULOS_INDEX]
    decreasing = np.r_[False, np.diff(iculos) < 0]
    decreasing[offsets[:-1]] = False
    problems.append(decreasing)
    bad = np.flatnonzero(np.logical_or.reduce(problems))
    if len(bad):
        row = int(bad[0])
        f = fail_at_row(row)
        line = row - int(offsets[f]) + 2
        col = next((COLUMNS[j] for j in range(40) if np.isinf(values[row, j])), None)
        raise DataFormatError(sources[f], line, col, "value is infinite")
    return np.ascontiguousarray(values), label_f.astype(np.int8), lengths


def parse_psv(text: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """One stay's file contents -> (values float32 [T, 40], labels int8 [T]); DataFormatError if malformed."""
    body = _split_header(text.encode("utf-8"), source)
    values, labels, _ = _parse_bodies([body], [source])
    return values, labels


# ----------------------------------------------------------------------------------------------
# Reading sources


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith((".tar", ".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar.bz2"))


def _is_stay_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.endswith(".psv") and not base.startswith("._")  # "._x" are macOS resource forks


class _ProgressReader(io.RawIOBase):
    """A file wrapper that advances a progress bar by compressed bytes read (the archive is streamed)."""

    def __init__(self, f, bar):
        self._f, self._bar = f, bar

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        if self._bar is not None and n:
            self._bar.update(n)
        return n


def _iter_raw(source: Path, progress: bool) -> Iterator[tuple[str, bytes]]:
    """(name for messages, file bytes) for every stay file, in source order."""
    bar = None
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.psv") if _is_stay_name(p.name))
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(files), desc=f"parsing {source.name}", unit="stay")
        try:
            for p in files:
                yield str(p), p.read_bytes()
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return
    if not _is_archive(source):
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such file or directory")
        raise ValueError(f"{source}: expected a directory of .psv files or a .tar/.tar.xz/.tar.gz archive")
    with open(source, "rb") as raw:
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=source.stat().st_size, desc=f"parsing {source.name}",
                       unit="B", unit_scale=True)
        stream = io.BufferedReader(_ProgressReader(raw, bar), buffer_size=1 << 20)
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile() or not _is_stay_name(member.name):
                        continue
                    f = tar.extractfile(member)
                    yield member.name, f.read()
        except (tarfile.TarError, lzma.LZMAError, zlib.error, gzip.BadGzipFile, EOFError) as exc:
            raise DataFormatError(str(source), None, None,
                                  f"unreadable archive ({type(exc).__name__}: {exc})") from exc
        finally:
            if bar is not None:
                bar.close()


@dataclass
class _Chunk:
    names: list[str]
    values: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray


def _parse_chunks(source: Path, progress: bool) -> Iterator[_Chunk]:
    names: list[str] = []
    bodies: list[bytes] = []
    size = 0
    try:
        for name, raw in _iter_raw(source, progress):
            body = _split_header(raw, name)
            names.append(name)
            bodies.append(body)
            size += len(body)
            if size >= _CHUNK_BYTES:
                yield _Chunk(names, *_parse_bodies(bodies, names))
                names, bodies, size = [], [], 0
        if bodies:
            yield _Chunk(names, *_parse_bodies(bodies, names))
    except DataFormatError as exc:
        if exc.file != str(source) and not source.is_dir():
            exc.add_note(f"(member of archive {source})")  # `file` is the member path; say where it lives
        raise


def iter_stays(source: str | Path) -> Iterator[Stay]:
    """Every stay in a directory (recursively, `*.psv`, sorted by path) or a tar archive (member order)."""
    for chunk in _parse_chunks(Path(source), progress=False):
        offsets = np.r_[0, np.cumsum(chunk.lengths)]
        for i, name in enumerate(chunk.names):
            patient_id, hospital = stay_identity(name)
            a, b = offsets[i], offsets[i + 1]
            yield Stay(patient_id, hospital, chunk.values[a:b], chunk.labels[a:b])


# ----------------------------------------------------------------------------------------------
# Cohort


@dataclass
class Cohort:
    """All stays concatenated: stay i is rows offsets[i]:offsets[i+1] of values/labels."""

    patient_ids: np.ndarray   # str [N]
    hospitals: np.ndarray     # str [N], "A"/"B"
    offsets: np.ndarray       # int64 [N + 1]
    values: np.ndarray        # float32 [rows, 40]
    labels: np.ndarray        # int8 [rows]
    source_sha256: str

    def __post_init__(self):
        n = len(self.patient_ids)
        if len(self.hospitals) != n or len(self.offsets) != n + 1:
            raise ValueError("Cohort: patient_ids, hospitals and offsets[:-1] must have the same length")
        if self.values.shape != (int(self.offsets[-1]), len(FEATURES)) or len(self.labels) != self.values.shape[0]:
            raise ValueError("Cohort: values must be [offsets[-1], 40] and labels [offsets[-1]]")

    def __len__(self) -> int:
        return len(self.patient_ids)

    def stay(self, i: int) -> Stay:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return Stay(str(self.patient_ids[i]), str(self.hospitals[i]), self.values[a:b], self.labels[a:b])

    def subset(self, indices) -> "Cohort":
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        lengths = self.lengths[idx]
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        # row r of the subset comes from starts[stay] + (r - offsets[stay])
        rows = np.repeat(self.offsets[idx] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Cohort(self.patient_ids[idx], self.hospitals[idx], offsets,
                      self.values[rows], self.labels[rows], self.source_sha256)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def septic(self) -> np.ndarray:
        positives = np.r_[0, np.cumsum(self.labels == 1, dtype=np.int64)]
        return positives[self.offsets[1:]] > positives[self.offsets[:-1]]


def source_fingerprint(source: str | Path) -> str:
    """sha256 of an archive's bytes; for a directory, of its sorted .psv names, sizes and mtimes."""
    source = Path(source)
    h = hashlib.sha256()
    if source.is_dir():
        for p in sorted(source.rglob("*.psv")):
            st = p.stat()
            h.update(f"{p.relative_to(source).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _build_cohort(source: Path, sha: str, progress: bool) -> Cohort:
    names: list[str] = []
    values, labels, lengths = [], [], []
    for chunk in _parse_chunks(source, progress):
        names.extend(chunk.names)
        values.append(chunk.values)
        labels.append(chunk.labels)
        lengths.append(chunk.lengths)
    if not names:
        raise DataFormatError(str(source), None, None, "no .psv stay files found")
    ids, hospitals = zip(*(stay_identity(n) for n in names))
    ids = np.array(ids)
    hospitals = np.array(hospitals)
    lengths = np.concatenate(lengths)
    # order by patient id, so a directory and an archive of the same files give the same cohort
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(dup):
        first, second = order[dup[0]], order[dup[0] + 1]
        raise DataFormatError(names[second], None, None,
                              f"patient id {sorted_ids[dup[0]]} also appears in {names[first]}")
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    whole = Cohort(ids, hospitals, offsets, np.concatenate(values), np.concatenate(labels), sha)
    if np.array_equal(order, np.arange(len(order))):
        return whole
    return whole.subset(order)


def _cache_path(cache_dir: Path, sha: str) -> Path:
    return cache_dir / f"physionet2019-{sha[:32]}-v{CACHE_FORMAT}.npz"


def _save_cache(cohort: Cohort, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # write to a temporary file and rename: a crash mid-write never leaves a truncated cache behind
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        arrays = {"patient_ids": cohort.patient_ids, "hospitals": cohort.hospitals,
                  "offsets": cohort.offsets, "values": cohort.values, "labels": cohort.labels,
                  "source_sha256": np.array(cohort.source_sha256), "format": np.array(CACHE_FORMAT)}
        # deflate level 1: the mostly-NaN matrix shrinks ~7x (214 -> 29 MB) for ~1 s of writing,
        # where np.savez_compressed's default level takes ~4.5 s for little more
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for key, array in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cache(path: Path, sha: str) -> Cohort | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != CACHE_FORMAT or str(z["source_sha256"]) != sha:
                return None
            return Cohort(z["patient_ids"], z["hospitals"], z["offsets"], z["values"], z["labels"], sha)
    except (OSError, ValueError, KeyError):
        return None  # unreadable or stale cache: parse again and overwrite it


def load_cohort(source: str | Path, cache_dir: Path | None = None, progress: bool = True) -> Cohort:
    """Every stay of a directory or archive as one Cohort, sorted by patient id.

    The first call parses and writes `<cache_dir>/physionet2019-<sha>-v<format>.npz`; later calls
    on an unchanged source load that file instead (the key is the source's fingerprint).
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or directory")
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    sha = source_fingerprint(source)
    path = _cache_path(cache_dir, sha)
    if path.exists():
        cached = _load_cache(path, sha)
        if cached is not None:
            return cached
    cohort = _build_cohort(source, sha, progress)
    try:
        _save_cache(cohort, path)
    except OSError as exc:  # a read-only cache location must not stop training
        import warnings
        warnings.warn(f"could not write cohort cache {path}: {exc}", stacklevel=2)
    return cohort


def summarize(cohort: Cohort) -> dict:
    """Counts people check a cohort against: stays, rows, positive rows, septic stays per hospital."""
    septic = cohort.septic
    out = {"stays": len(cohort), "rows": int(cohort.offsets[-1]),
           "positive_rows": int((cohort.labels == 1).sum()), "septic_stays": int(septic.sum()),
           "hospitals": {}}
    for h in sorted(set(cohort.hospitals.tolist())):
        m = cohort.hospitals == h
        out["hospitals"][h] = {"stays": int(m.sum()), "septic_stays": int(septic[m].sum()),
                               "rows": int(cohort.lengths[m].sum())}
    return out


__all__ = ["COLUMNS", "FEATURES", "LABEL", "DataFormatError", "Stay", "Cohort", "parse_psv",
           "iter_stays", "load_cohort", "source_fingerprint", "stay_identity", "summarize"]
