"""The PhysioNet 2019 loader: what it accepts, how it says what is wrong, and its cache."""
from __future__ import annotations

import numpy as np
import pytest

from tests.training.conftest import HEADER, NAN, make_archive, psv_text, synthetic_rows, synthetic_stays, write_tree
from training.sepsis import data
from training.sepsis.data import (COLUMNS, FEATURES, LABEL, Cohort, DataFormatError, Stay, iter_stays,
                                  load_cohort, parse_psv)


def rows_of(hours=5, onset=None, seed=0):
    return synthetic_rows(np.random.default_rng(seed), hours, onset)


def assert_same_cohort(a: Cohort, b: Cohort):
    np.testing.assert_array_equal(a.patient_ids, b.patient_ids)
    np.testing.assert_array_equal(a.hospitals, b.hospitals)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.values, b.values)  # NaNs in the same places compare equal
    np.testing.assert_array_equal(a.labels, b.labels)


def test_columns_are_the_challenge_header():
    assert COLUMNS == HEADER and len(COLUMNS) == 41
    assert FEATURES == COLUMNS[:40] and LABEL == COLUMNS[-1] == "SepsisLabel"


def test_parse_psv_keeps_values_missingness_and_labels():
    rows = rows_of(6, onset=3)
    rows[2][0] = 101.5
    rows[2][1] = NAN
    values, labels = parse_psv(psv_text(rows), "p000001.psv")
    assert values.dtype == np.float32 and values.shape == (6, 40)
    assert labels.dtype == np.int8 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert values[2, 0] == np.float32(101.5) and np.isnan(values[2, 1])
    expected = np.array([[r[j] for j in range(40)] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(values, expected)


def test_parse_psv_accepts_windows_line_endings_and_trailing_blank_lines():
    rows = rows_of(3)
    text = psv_text(rows).replace("\n", "\r\n") + "\r\n"
    values, labels = parse_psv(text, "x.psv")
    assert values.shape == (3, 40) and len(labels) == 3


def error_of(text: str, source="setA/p000009.psv") -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        parse_psv(text, source)
    err = info.value
    assert err.file == source and source in str(err)
    return err


@pytest.mark.parametrize("header, column", [
    (("HeartRate",) + HEADER[1:], "HR"),           # renamed
    (HEADER[:-1], "SepsisLabel"),                   # missing last column
    (HEADER[:4] + HEADER[5:], "DBP"),               # MAP dropped: DBP arrives where MAP should be
    (HEADER + ("Extra",), "Extra"),                 # one column too many
])
def test_header_errors_name_the_column(header, column):
    text = "|".join(header) + "\n" + "|".join(["1"] * 41) + "\n"
    err = error_of(text)
    assert err.line == 1
    if column == "DBP":
        assert err.column == "MAP" and "'DBP'" in str(err)
    else:
        assert err.column == column and column in str(err)


def test_row_with_a_missing_field_names_line_and_first_missing_column():
    rows = rows_of(5)
    rows[3] = rows[3][:40]
    err = error_of(psv_text(rows))
    assert (err.line, err.column) == (5, "SepsisLabel")
    assert "line 5" in str(err) and "40 fields" in str(err)


def test_row_with_an_extra_field_names_its_line():
    rows = rows_of(5)
    rows[0] = rows[0] + [1]
    err = error_of(psv_text(rows))
    assert err.line == 2 and "42 fields" in str(err)


@pytest.mark.parametrize("bad", ["abc", "", "NA", "inf", "1.2.3"])
def test_non_numeric_field_names_line_and_column(bad):
    rows = rows_of(6)
    rows[4][2] = bad  # Temp on line 6
    err = error_of(psv_text(rows))
    assert (err.line, err.column) == (6, "Temp")
    assert "line 6, column Temp" in str(err)


@pytest.mark.parametrize("label", ["2", "-1", "0.5", "NaN"])
def test_sepsis_label_must_be_0_or_1(label):
    rows = rows_of(4)
    rows[1][40] = label
    err = error_of(psv_text(rows))
    assert (err.line, err.column) == (3, "SepsisLabel")


def test_iculos_must_be_present():
    rows = rows_of(4)
    rows[2][39] = NAN
    err = error_of(psv_text(rows))
    assert (err.line, err.column) == (4, "ICULOS")


def test_iculos_must_not_decrease_but_may_repeat():
    rows = rows_of(4)
    rows[2][39] = rows[1][39]  # repeat: allowed
    parse_psv(psv_text(rows), "ok.psv")
    rows[3][39] = rows[2][39] - 1
    err = error_of(psv_text(rows))
    assert (err.line, err.column) == (5, "ICULOS") and "decreases" in str(err)


def test_header_only_file_is_an_error():
    err = error_of("|".join(HEADER) + "\n")
    assert err.line == 2 and "no data rows" in str(err)


@pytest.mark.parametrize("position", [3, 57])
def test_error_inside_an_archive_names_the_member_line_and_column(tmp_path, position):
    """Among many good stays parsed together, the one bad member is still named precisely."""
    stays = synthetic_stays(60, seed=1)
    member = list(stays)[position]
    stays[member][7][12] = "12,5"  # PaCO2, line 9
    archive = make_archive(tmp_path, stays)
    with pytest.raises(DataFormatError) as info:
        load_cohort(archive, cache_dir=tmp_path / "cache", progress=False)
    err = info.value
    assert (err.file, err.line, err.column) == (member, 9, "PaCO2")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_structural_error_in_a_directory_names_the_file(tmp_path):
    stays = synthetic_stays(30, seed=2)
    member = list(stays)[11]
    stays[member][2] = stays[member][2][:-3]
    root = write_tree(tmp_path / "tree", stays)
    with pytest.raises(DataFormatError) as info:
        load_cohort(root, cache_dir=tmp_path / "cache", progress=False)
    assert info.value.file == str(root / member)
    assert (info.value.line, info.value.column) == (4, "HospAdmTime")


def test_directory_and_archives_give_the_same_cohort(tmp_path, sepsis_stays):
    tree = write_tree(tmp_path / "tree", sepsis_stays)
    # an archive with members in a different order must still give the same cohort
    shuffled = dict(reversed(list(sepsis_stays.items())))
    xz = make_archive(tmp_path, shuffled, "dev.tar.xz")
    gz = make_archive(tmp_path, sepsis_stays, "dev.tar.gz")
    cohorts = [load_cohort(s, cache_dir=tmp_path / "cache", progress=False) for s in (tree, xz, gz)]
    for other in cohorts[1:]:
        assert_same_cohort(cohorts[0], other)
    c = cohorts[0]
    assert len(c) == 100 and list(c.patient_ids) == sorted(c.patient_ids)
    assert int(c.offsets[-1]) == sum(len(r) for r in sepsis_stays.values())


def test_cohort_matches_what_was_written(sepsis_archive, sepsis_stays, tmp_path):
    c = load_cohort(sepsis_archive, cache_dir=tmp_path / "cache", progress=False)
    by_id = {m.split("/")[1][:-4]: (m.split("/")[0][-1], rows) for m, rows in sepsis_stays.items()}
    for i in range(len(c)):
        stay = c.stay(i)
        hospital, rows = by_id[stay.patient_id]
        assert stay.hospital == hospital == c.hospitals[i]
        assert stay.labels.tolist() == [int(r[40]) for r in rows]
        assert stay.septic == bool(c.septic[i]) == any(r[40] == 1 for r in rows)
        assert len(stay) == c.lengths[i] == len(rows)
    assert c.values.dtype == np.float32 and c.labels.dtype == np.int8 and c.offsets.dtype == np.int64
    assert set(c.hospitals) == {"A", "B"}


def test_iter_stays_yields_every_stay(sepsis_tree, sepsis_archive, tmp_path):
    from_tree = list(iter_stays(sepsis_tree))
    from_archive = {s.patient_id: s for s in iter_stays(sepsis_archive)}
    assert len(from_tree) == len(from_archive) == 100
    for s in from_tree:
        other = from_archive[s.patient_id]
        assert s.hospital == other.hospital
        np.testing.assert_array_equal(s.values, other.values)
        np.testing.assert_array_equal(s.labels, other.labels)


def test_second_load_uses_the_cache_without_parsing(sepsis_archive, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_cohort(sepsis_archive, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.npz"))) == 1

    def no_parsing(*args, **kwargs):
        raise AssertionError("parser called although the cache is valid")

    monkeypatch.setattr(data, "_parse_chunks", no_parsing)
    second = load_cohort(sepsis_archive, cache_dir=cache, progress=False)
    assert_same_cohort(first, second)
    assert second.source_sha256 == first.source_sha256 == data.source_fingerprint(sepsis_archive)


def test_changed_archive_invalidates_the_cache(tmp_path, sepsis_stays):
    cache = tmp_path / "cache"
    archive = make_archive(tmp_path, sepsis_stays)
    before = load_cohort(archive, cache_dir=cache, progress=False)
    member = "setA/p000001.psv"
    sepsis_stays[member][0][0] = 222.0
    archive = make_archive(tmp_path, sepsis_stays)  # same path, new contents
    after = load_cohort(archive, cache_dir=cache, progress=False)
    assert after.source_sha256 != before.source_sha256
    i = int(np.flatnonzero(after.patient_ids == "p000001")[0])
    assert after.stay(i).values[0, 0] == 222.0 and before.stay(i).values[0, 0] != 222.0


def test_changed_directory_invalidates_the_cache(tmp_path, sepsis_stays):
    cache = tmp_path / "cache"
    tree = write_tree(tmp_path / "tree", sepsis_stays)
    assert len(load_cohort(tree, cache_dir=cache, progress=False)) == 100
    (tree / "setA" / "p000001.psv").unlink()
    assert len(load_cohort(tree, cache_dir=cache, progress=False)) == 99


def test_corrupt_cache_is_rebuilt_not_fatal(sepsis_archive, tmp_path):
    cache = tmp_path / "cache"
    first = load_cohort(sepsis_archive, cache_dir=cache, progress=False)
    (path,) = cache.glob("*.npz")
    path.write_bytes(b"not a zip file")
    again = load_cohort(sepsis_archive, cache_dir=cache, progress=False)
    assert_same_cohort(first, again)
    assert path.stat().st_size > 100  # rewritten


def test_duplicate_patient_id_is_an_error(tmp_path):
    stays = {"setA/p000001.psv": rows_of(3), "other/p000001.psv": rows_of(4, seed=1)}
    with pytest.raises(DataFormatError, match="p000001"):
        load_cohort(make_archive(tmp_path, stays), cache_dir=tmp_path / "c", progress=False)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.tar.xz"):
        load_cohort(tmp_path / "nowhere.tar.xz", cache_dir=tmp_path / "c", progress=False)


def test_hospital_from_directory_else_from_id(tmp_path):
    stays = {"flat/p000003.psv": rows_of(2), "flat/p100004.psv": rows_of(2), "setB/p000005.psv": rows_of(2)}
    c = load_cohort(make_archive(tmp_path, stays), cache_dir=tmp_path / "c", progress=False)
    assert dict(zip(c.patient_ids, c.hospitals)) == {"p000003": "A", "p100004": "B", "p000005": "B"}


def test_elapsed_hours_from_iculos_with_fallback_for_missing():
    values = np.full((5, 40), np.nan, dtype=np.float32)
    values[:, 39] = [3, 4, 6, np.nan, 8]
    stay = Stay("p000001", "A", values, np.array([0, 0, 0, 1, 1], dtype=np.int8))
    assert stay.elapsed_hours.dtype == np.float32
    assert stay.elapsed_hours.tolist() == [0.0, 1.0, 2.0, 1.0, 1.0]
    assert stay.septic


def test_subset_gathers_whole_stays(sepsis_archive, tmp_path):
    c = load_cohort(sepsis_archive, cache_dir=tmp_path / "cache", progress=False)
    idx = np.array([7, 2, 55])
    sub = c.subset(idx)
    assert len(sub) == 3 and sub.offsets[-1] == len(sub.values) == len(sub.labels)
    for j, i in enumerate(idx):
        a, b = sub.stay(j), c.stay(i)
        assert a.patient_id == b.patient_id
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(sub.septic, c.septic[idx])


def test_parsing_in_many_small_chunks_gives_the_same_cohort(sepsis_archive, tmp_path, monkeypatch):
    whole = load_cohort(sepsis_archive, cache_dir=tmp_path / "a", progress=False)
    monkeypatch.setattr(data, "_CHUNK_BYTES", 3000)  # a few stays per chunk
    chunked = load_cohort(sepsis_archive, cache_dir=tmp_path / "b", progress=False)
    assert_same_cohort(whole, chunked)


def test_truncated_archive_is_a_format_error_naming_the_archive(sepsis_archive, tmp_path):
    broken = tmp_path / "broken.tar.xz"
    broken.write_bytes(sepsis_archive.read_bytes()[: sepsis_archive.stat().st_size // 2])
    with pytest.raises(DataFormatError) as info:
        load_cohort(broken, cache_dir=tmp_path / "cache", progress=False)
    assert info.value.file == str(broken) and "unreadable archive" in str(info.value)
