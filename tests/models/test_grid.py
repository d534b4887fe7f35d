"""The model's hourly grid: which hour a timestamped value belongs to, and what several values of one
variable in one hour (re-sent, amended, entered in error) become."""
from __future__ import annotations

import datetime as dt

import pytest

from models.contract import CLINICAL, LABS, RESULTED_LABS, STEP, VITALS
from models.grid import BeforeAdmission, Charted, current, hour_of, hour_start, hour_value, hourly

UTC = dt.timezone.utc
ADMIT = dt.datetime(2024, 3, 1, 7, 20, tzinfo=UTC)


def at(minutes: float) -> dt.datetime:
    return ADMIT + dt.timedelta(minutes=minutes)


def test_the_contract_names_one_hour_steps_and_the_challenge_groups():
    assert STEP == dt.timedelta(hours=1)
    assert VITALS + LABS == CLINICAL and len(VITALS) == 8 and len(LABS) == 26
    assert "FiO2" not in RESULTED_LABS and len(RESULTED_LABS) == 25 and "EtCO2" not in RESULTED_LABS


@pytest.mark.parametrize("minutes, iculos", [
    (0, 1),                         # the admission itself opens hour 1
    (59, 1), (59.999, 1),
    (60, 2),                        # exactly on the hour: the next hour begins
    (60 + 1e-3, 2), (119, 2), (120, 3),
    (24 * 60 * 30 + 30, 24 * 30 + 1),
])
def test_hour_of_counts_one_hour_buckets_from_admission(minutes, iculos):
    assert hour_of(at(minutes), ADMIT) == iculos


def test_hour_of_is_exact_one_microsecond_before_the_hour():
    assert hour_of(ADMIT + 5 * STEP - dt.timedelta(microseconds=1), ADMIT) == 5
    assert hour_of(ADMIT + 5 * STEP, ADMIT) == 6


def test_hour_of_reads_times_in_any_zone():
    cet = dt.timezone(dt.timedelta(hours=1))
    assert hour_of(at(90).astimezone(cet), ADMIT) == 2


def test_a_time_before_admission_has_no_hour():
    with pytest.raises(BeforeAdmission, match="before the ICU admission"):
        hour_of(at(-0.001), ADMIT)


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="no time zone"):
        hour_of(dt.datetime(2024, 3, 1, 9), ADMIT)


def test_hour_start_is_where_an_hour_begins():
    assert hour_start(1, ADMIT) == ADMIT and hour_start(3, ADMIT) == at(120)
    assert all(hour_of(hour_start(k, ADMIT), ADMIT) == k for k in range(1, 50))
    with pytest.raises(ValueError, match="count from 1"):
        hour_start(0, ADMIT)


def test_several_values_in_one_hour_give_their_median():
    assert hour_value([80.0]) == 80.0
    assert hour_value([80.0, 120.0, 90.0]) == 90.0
    assert hour_value([80.0, 90.0, 100.0, 200.0]) == 95.0
    with pytest.raises(ValueError):
        hour_value([])


def test_hourly_files_values_into_hours_and_takes_each_hours_median():
    msgs = [Charted("a", "HR", at(5), 80.0), Charted("b", "HR", at(40), 100.0), Charted("c", "HR", at(59), 90.0),
            Charted("d", "HR", at(60), 130.0), Charted("e", "Lactate", at(61), 2.5)]
    assert hourly(msgs, ADMIT) == {(1, "HR"): 90.0, (2, "HR"): 130.0, (2, "Lactate"): 2.5}


def test_a_resent_value_counts_once():
    msgs = [Charted("a", "HR", at(5), 80.0), Charted("b", "HR", at(30), 100.0), Charted("b", "HR", at(30), 100.0),
            Charted("b", "HR", at(30), 100.0)]
    assert hourly(msgs, ADMIT) == {(1, "HR"): 90.0}  # not 100 (the median of 80, 100, 100, 100)


def test_an_amendment_replaces_the_value_it_amends():
    wrong = Charted("lab-1", "Lactate", at(10), 25.0)
    fixed = Charted("lab-1", "Lactate", at(10), 2.5, "amended")
    assert hourly([wrong, fixed], ADMIT) == {(1, "Lactate"): 2.5}
    # a corrected status is the same act; a later amendment replaces an earlier one
    again = Charted("lab-1", "Lactate", at(10), 2.7, "corrected")
    assert hourly([wrong, fixed, again], ADMIT) == {(1, "Lactate"): 2.7}


def test_a_late_original_never_undoes_its_amendment():
    wrong = Charted("lab-1", "Lactate", at(10), 25.0)
    fixed = Charted("lab-1", "Lactate", at(10), 2.5, "amended")
    assert hourly([fixed, wrong], ADMIT) == {(1, "Lactate"): 2.5}  # the amendment arrived first
    assert hourly([wrong, fixed, wrong], ADMIT) == {(1, "Lactate"): 2.5}  # the original re-sent after it


def test_entered_in_error_removes_the_value_for_good():
    msgs = [Charted("a", "HR", at(5), 80.0), Charted("b", "HR", at(30), 300.0),
            Charted("b", "HR", at(30), 300.0, "entered-in-error"), Charted("b", "HR", at(30), 300.0)]
    assert hourly(msgs, ADMIT) == {(1, "HR"): 80.0}
    assert current([Charted("x", "HR", at(1), 1.0), Charted("x", "HR", at(1), 1.0, "entered-in-error")]) == {}


def test_an_amendment_may_move_a_value_to_another_hour():
    """The draw time was charted wrongly: the amendment's time is the one that counts."""
    msgs = [Charted("lab-1", "WBC", at(50), 12.0), Charted("lab-1", "WBC", at(70), 12.0, "amended")]
    assert hourly(msgs, ADMIT) == {(2, "WBC"): 12.0}


def test_a_final_result_replaces_its_preliminary_one():
    msgs = [Charted("lab-1", "WBC", at(10), 11.0, "preliminary"), Charted("lab-1", "WBC", at(10), 12.0, "final"),
            Charted("lab-1", "WBC", at(10), 11.0, "preliminary")]  # a stale preliminary re-sent after it
    assert hourly(msgs, ADMIT) == {(1, "WBC"): 12.0}


def test_unknown_statuses_and_variables_are_refused_by_name():
    with pytest.raises(ValueError, match="'cancelled' carries no value"):
        Charted("a", "HR", at(1), 80.0, "cancelled")
    with pytest.raises(ValueError, match="'ICULOS' is not one of"):
        Charted("a", "ICULOS", at(1), 3.0)


def test_from_admission_steps_the_hours_before_a_files_first_row_empty():
    import numpy as np

    from models.contract import INDEX, N_FEATURES
    from models.grid import from_admission

    a = np.full((2, N_FEATURES), np.nan, np.float32)
    a[:, INDEX["ICULOS"]] = [1, 2]
    a[1, INDEX["HR"]] = 80
    b = np.full((2, N_FEATURES), np.nan, np.float32)
    b[:, INDEX["ICULOS"]] = [3, 4]
    b[:, INDEX["Age"]] = 70
    b[0, INDEX["HR"]] = 90
    rows, offsets, kept = from_admission(np.concatenate([a, b]), np.array([0, 2, 4]))
    assert offsets.tolist() == [0, 2, 6] and kept.tolist() == [0, 1, 4, 5]
    assert rows[2:4, INDEX["ICULOS"]].tolist() == [1, 2] and rows[2:4, INDEX["Age"]].tolist() == [70, 70]
    assert np.isnan(rows[2:4, :34]).all() and rows[4, INDEX["HR"]] == 90
    np.testing.assert_array_equal(rows[kept], np.concatenate([a, b]))
