import numpy as np

from training.sepsis.dropout import drop_mask, remove_rows, zero_rows


def test_drop_mask_is_seeded_and_never_drops_the_admission_row():
    offsets = np.array([0, 5, 9, 20])
    a, b = drop_mask(offsets, 0.5, seed=3), drop_mask(offsets, 0.5, seed=3)
    assert np.array_equal(a, b)
    assert not a[[0, 5, 9]].any()
    assert 0.2 < drop_mask(np.array([0, 10_000]), 0.3, seed=1).mean() < 0.4


def test_remove_rows_accumulates_elapsed_time_into_the_next_kept_row():
    values = np.arange(7, dtype=np.float32)[:, None].repeat(2, 1)
    elapsed = np.array([0, 1, 1, 2, 0, 1, 3], dtype=np.float32)  # two stays: rows 0-3 and 4-6
    offsets = np.array([0, 4, 7])
    dropped = np.array([False, True, True, False, False, True, False])
    v, e, o, source = remove_rows(values, elapsed, offsets, dropped)
    assert v[:, 0].tolist() == [0, 3, 4, 6]
    # row 3 comes 1 + 1 + 2 = 4 h after row 0; row 6 comes 1 + 3 = 4 h after row 4
    assert e.tolist() == [0, 4, 0, 4]
    assert o.tolist() == [0, 2, 4]
    # each original hour is scored with the latest kept row at or before it
    assert source.tolist() == [0, 0, 0, 1, 2, 2, 3]


def test_zero_rows_is_the_studys_variant():
    values = np.ones((3, 2), dtype=np.float32)
    out = zero_rows(values, np.array([False, True, False]))
    assert out.tolist() == [[1, 1], [0, 0], [1, 1]] and values.sum() == 6
