"""Patient and cross-hospital splits: disjoint, complete, seeded, stratified."""
from __future__ import annotations

import numpy as np
import pytest

from tests.training.conftest import synthetic_stays, write_tree
from training.sepsis.data import load_cohort
from training.sepsis.splits import Split, cross_hospital_split, patient_split


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("splits")
    # 110 stays, 3:1 A:B so strata differ in size, about 30% septic
    stays = synthetic_stays(110, seed=3, septic_fraction=0.3, hospitals=("A", "A", "B", "A"))
    return load_cohort(write_tree(root / "tree", stays), cache_dir=root / "cache", progress=False)


def parts(split: Split):
    return split.train, split.val, split.test


def test_patient_split_is_disjoint_and_covers_every_stay(cohort):
    split = patient_split(cohort, seed=0)
    everything = np.concatenate(parts(split))
    assert len(everything) == len(np.unique(everything)) == len(cohort)
    assert all(p.dtype.kind == "i" for p in parts(split))


def test_patient_split_is_deterministic_per_seed(cohort):
    a, b, c = patient_split(cohort, seed=5), patient_split(cohort, seed=5), patient_split(cohort, seed=6)
    for x, y in zip(parts(a), parts(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.test, c.test)


def test_patient_split_does_not_depend_on_stay_order(cohort):
    perm = np.random.default_rng(0).permutation(len(cohort))
    shuffled = cohort.subset(perm)
    a, b = patient_split(cohort, seed=1), patient_split(shuffled, seed=1)
    for x, y in zip(parts(a), parts(b)):
        assert set(cohort.patient_ids[x]) == set(shuffled.patient_ids[y])


def test_patient_split_is_stratified_by_hospital_and_sepsis(cohort):
    fractions = (0.70, 0.15, 0.15)
    split = patient_split(cohort, seed=2, fractions=fractions)
    strata = {(h, s) for h, s in zip(cohort.hospitals, cohort.septic)}
    assert len(strata) == 4
    for h, s in strata:
        members = (cohort.hospitals == h) & (cohort.septic == s)
        n = members.sum()
        for part, f in zip(parts(split), fractions):
            assert abs(members[part].sum() - f * n) <= 1, (h, s, members[part].sum(), f * n)


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_refused(cohort, fractions):
    with pytest.raises(ValueError, match="fractions"):
        patient_split(cohort, fractions=fractions)


@pytest.mark.parametrize("train_on, other", [("A", "B"), ("B", "A")])
def test_cross_hospital_tests_on_exactly_the_other_hospital(cohort, train_on, other):
    split = cross_hospital_split(cohort, train_on=train_on, seed=0, val_fraction=0.2)
    np.testing.assert_array_equal(split.test, np.flatnonzero(cohort.hospitals == other))
    home = np.flatnonzero(cohort.hospitals == train_on)
    np.testing.assert_array_equal(np.sort(np.concatenate([split.train, split.val])), home)
    assert split.name == f"cross-{train_on}"
    for s in (True, False):
        members = cohort.septic[home] == s
        n_val = (cohort.septic[split.val] == s).sum()
        assert abs(n_val - 0.2 * members.sum()) <= 1


def test_cross_hospital_split_is_deterministic_per_seed(cohort):
    a, b = cross_hospital_split(cohort, seed=4), cross_hospital_split(cohort, seed=4)
    np.testing.assert_array_equal(a.val, b.val)
    assert not np.array_equal(a.val, cross_hospital_split(cohort, seed=9).val)


def test_cross_hospital_needs_the_training_hospital_and_another(cohort):
    with pytest.raises(ValueError, match="'C'"):
        cross_hospital_split(cohort, train_on="C")
    only_a = cohort.subset(np.flatnonzero(cohort.hospitals == "A"))
    with pytest.raises(ValueError, match="second hospital"):
        cross_hospital_split(only_a, train_on="A")
