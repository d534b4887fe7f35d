"""Train/validation/test splits of a Cohort by patient, so no stay is seen by two parts.

Membership depends only on the seed and the patient ids (not on the cohort's row order), so the
same seed gives the same test patients to every model, whatever subset order it was loaded in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Split:
    train: np.ndarray   # int64 indices into a Cohort, sorted
    val: np.ndarray
    test: np.ndarray
    name: str

    def __post_init__(self):
        parts = np.concatenate([self.train, self.val, self.test])
        if len(np.unique(parts)) != len(parts):
            raise ValueError(f"split {self.name!r}: train, val and test overlap")


def _check_fractions(fractions: Sequence[float], n_parts: int) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (n_parts,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be {n_parts} non-negative numbers summing to 1, got {tuple(fractions)}")
    return f


def _allocate(members: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle one stratum and cut it so each part is within one stay of its exact share."""
    shuffled = members[rng.permutation(len(members))]
    cuts = np.rint(np.cumsum(fractions) * len(members)).astype(np.int64)
    cuts[-1] = len(members)
    return np.split(shuffled, cuts[:-1])


def _stratified(cohort, indices: np.ndarray, strata: np.ndarray, fractions: np.ndarray,
                rng: np.random.Generator) -> list[np.ndarray]:
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    # canonical order within the cohort: by patient id, so the cohort's stay order does not matter
    indices = indices[np.argsort(cohort.patient_ids[indices], kind="stable")]
    strata = strata[indices]
    for key in sorted(set(strata.tolist())):
        for part, chunk in zip(parts, _allocate(indices[strata == key], fractions, rng)):
            part.append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts]


def patient_split(cohort, seed: int = 0, fractions=(0.70, 0.15, 0.15)) -> Split:
    """Train/val/test by patient, stratified by (hospital, septic)."""
    f = _check_fractions(fractions, 3)
    strata = np.char.add(cohort.hospitals.astype(str), np.where(cohort.septic, ":septic", ":not"))
    train, val, test = _stratified(cohort, np.arange(len(cohort)), strata, f, np.random.default_rng(seed))
    return Split(train, val, test, name="patient")


def cross_hospital_split(cohort, train_on: str = "A", seed: int = 0, val_fraction=0.15) -> Split:
    """Train/val from one hospital (stratified by septic); test is every stay of the other hospital(s)."""
    hospitals = cohort.hospitals.astype(str)
    present = sorted(set(hospitals.tolist()))
    if train_on not in present:
        raise ValueError(f"train_on={train_on!r}: the cohort has hospitals {present}")
    if len(present) < 2:
        raise ValueError(f"cross-hospital split needs a second hospital; the cohort only has {present}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    f = _check_fractions((1.0 - val_fraction, val_fraction), 2)
    home = np.flatnonzero(hospitals == train_on)
    strata = np.where(cohort.septic, "septic", "not")
    train, val = _stratified(cohort, home, strata, f, np.random.default_rng(seed))
    test = np.flatnonzero(hospitals != train_on).astype(np.int64)
    return Split(train, val, test, name=f"cross-{train_on}")


def crossfit_split(cohort, fold: int, folds: int, seed: int = 0) -> Split:
    """Fold `fold` of `folds` over the development stays (patient_split's train + validation, by
    patient, stratified by hospital and sepsis): train on the other folds, validate on this one.
    The test stays are patient_split's with the same seed, so every fold and every model is read
    once on the same held-out stays."""
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"fold {fold} of {folds}: need folds >= 2 and 0 <= fold < folds")
    base = patient_split(cohort, seed=seed)
    dev = np.concatenate([base.train, base.val])
    strata = np.char.add(cohort.hospitals.astype(str), np.where(cohort.septic, ":septic", ":not"))
    # a stream of its own: fold membership does not move when the 70/15/15 split's stream does
    parts = _stratified(cohort, dev, strata, np.full(folds, 1.0 / folds), np.random.default_rng([seed, folds]))
    train = np.sort(np.concatenate([p for k, p in enumerate(parts) if k != fold]))
    return Split(train, parts[fold], base.test, name=f"crossfit-{fold}of{folds}")


def crossfit_folds(cohort, folds: int, seed: int = 0) -> list[np.ndarray]:
    """The validation stays of each fold, in fold order (together: every development stay once)."""
    return [crossfit_split(cohort, k, folds, seed).val for k in range(folds)]


def out_of_fold_order(per_stay: np.ndarray, splits: Sequence[Split]) -> np.ndarray:
    """A per-stay array (indexed like the Cohort) in the order cross-fitting pools its out-of-fold
    predictions: each fold's held-out stays (`split.val`) in turn."""
    per_stay = np.asarray(per_stay)
    return np.concatenate([per_stay[np.asarray(split.val)] for split in splits])
