"""Sepsis evaluation metrics on per-stay hourly arrays.

Every function takes `labels` (one 0/1 int array per stay: the challenge's SepsisLabel, which is 1
from 6 h before clinical onset t_sepsis onwards) and `probs` (one float array of hourly risk per
stay, same lengths); row t of a stay is hour t of that stay.

The utility is the PhysioNet/CinC 2019 challenge's (Reyna et al., Crit Care Med 2020). Per stay,
with t_sepsis = (index of the first label 1) - dt_optimal:

- septic stay, predicting 1 at hour t <= t_sepsis + dt_late earns
    max(m1 (t - t_sepsis) + b1, u_fp)  while t <= t_sepsis + dt_optimal  (0 at -12 h, 1 at -6 h)
    m2 (t - t_sepsis) + b2             after that                        (1 at -6 h, 0 at +3 h)
- septic stay, predicting 0 earns 0 while t <= t_sepsis + dt_optimal, then
    m3 (t - t_sepsis) + b3                                               (0 at -6 h, -2 at +3 h)
- hours after t_sepsis + dt_late are not scored (0 either way);
- non-septic stay: predicting 1 earns u_fp, predicting 0 earns u_tn.

Normalised utility = (U - U_inaction) / (U_best - U_inaction), each U summed over all stays, where
"inaction" predicts 0 everywhere and "best" predicts 1 exactly on [t_sepsis + dt_early,
t_sepsis + dt_late] of septic stays (clipped to the stay) and 0 elsewhere.

Metrics that are undefined on the given data (e.g. AUROC with one class, a lead time with no
early alarm) are NaN from the scalar functions and None in the dicts, so JSON stays valid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

Stays = Sequence[np.ndarray]


# ---------------------------------------------------------------- input checks and flattening

@dataclass(frozen=True)
class _Flat:
    """All stays concatenated: row arrays plus where each stay starts."""
    labels: np.ndarray   # int8 [rows]
    offsets: np.ndarray  # int64 [stays + 1]
    stay: np.ndarray     # int64 [rows], stay index of each row
    hour: np.ndarray     # int64 [rows], hour within its stay (0-based)


def _where(offsets: np.ndarray, row: int) -> str:
    stay = int(np.searchsorted(offsets, row, side="right") - 1)
    return f"stay {stay}, hour {row - int(offsets[stay])}"


def _flatten_labels(labels: Stays) -> _Flat:
    arrays = [np.asarray(lab).reshape(-1) for lab in labels]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    raw = np.concatenate(arrays) if arrays else np.zeros(0, np.int8)
    bad = ~np.isin(raw, (0, 1))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"labels of {_where(offsets, j)}: {raw[j].item()!r} is not 0 or 1")
    stay = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    hour = np.arange(len(raw), dtype=np.int64) - offsets[stay]
    return _Flat(raw.astype(np.int8), offsets, stay, hour)


def _flatten_probs(probs: Stays, flat: _Flat, name: str = "probs") -> np.ndarray:
    n_stays = len(flat.offsets) - 1
    if len(probs) != n_stays:
        raise ValueError(f"{name} has {len(probs)} stays but labels has {n_stays}")
    arrays = [np.asarray(p, dtype=np.float64).reshape(-1) for p in probs]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    mismatch = np.flatnonzero(lengths != np.diff(flat.offsets))
    if len(mismatch):
        i = int(mismatch[0])
        raise ValueError(f"{name} of stay {i} has {lengths[i]} hours but its labels have "
                         f"{int(flat.offsets[i + 1] - flat.offsets[i])}")
    p = np.concatenate(arrays) if arrays else np.zeros(0)
    bad = ~np.isfinite(p)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} of {_where(flat.offsets, j)}: {p[j].item()!r} is not a finite number")
    return p


def pooled(labels: Stays, probs: Stays) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probs) of all hours of all stays concatenated, after checking they match."""
    flat = _flatten_labels(labels)
    return flat.labels, _flatten_probs(probs, flat)


def _onset_per_stay(flat: _Flat, dt_optimal: float = -6) -> np.ndarray:
    """t_sepsis per stay (first label-1 hour - dt_optimal); +inf for stays that are never septic."""
    first = np.full(len(flat.offsets) - 1, np.inf)
    pos = flat.labels == 1
    np.minimum.at(first, flat.stay[pos], flat.hour[pos].astype(np.float64))
    return first - dt_optimal


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


# ---------------------------------------------------------------- ranking metrics

def hourly_auroc(labels: Stays, probs: Stays) -> float:
    """Area under the ROC curve over all hours of all stays pooled (sklearn `roc_auc_score`);
    NaN when the pooled labels hold only one class."""
    flat = _flatten_labels(labels)
    p = _flatten_probs(probs, flat)
    if len(np.unique(flat.labels)) < 2:
        return float("nan")
    return float(roc_auc_score(flat.labels, p))


def hourly_auprc(labels: Stays, probs: Stays) -> float:
    """Area under the precision-recall curve over all hours pooled, as average precision
    (sklearn `average_precision_score`: sum over thresholds of (R_n - R_{n-1}) P_n);
    NaN when no hour is labelled 1."""
    flat = _flatten_labels(labels)
    p = _flatten_probs(probs, flat)
    if not flat.labels.any():
        return float("nan")
    return float(average_precision_score(flat.labels, p))


# ---------------------------------------------------------------- challenge utility

@dataclass(frozen=True)
class UtilityTable:
    """Per-row utility of predicting 1 (`u_pos`) and 0 (`u_neg`), rows of all stays concatenated,
    plus the summed utility of the best and of the no-alarm predictions. Utility of any 0/1
    prediction vector `y` is then `sum(where(y, u_pos, u_neg))`."""
    u_pos: np.ndarray
    u_neg: np.ndarray
    best: float
    inaction: float

    def utility(self, predictions: np.ndarray) -> float:
        """Unnormalised utility of a 0/1 prediction per row (rows concatenated like the table)."""
        y = np.asarray(predictions).reshape(-1).astype(bool)
        if len(y) != len(self.u_pos):
            raise ValueError(f"predictions have {len(y)} rows but the utility table has {len(self.u_pos)}")
        return float(np.where(y, self.u_pos, self.u_neg).sum())

    def normalise(self, utility: float | np.ndarray) -> float | np.ndarray:
        """(U - U_inaction) / (U_best - U_inaction); NaN when there is no septic hour to score."""
        span = self.best - self.inaction
        if span <= 0:
            return np.full_like(np.asarray(utility, dtype=float), np.nan) if np.ndim(utility) else float("nan")
        return (utility - self.inaction) / span


def utility_table(labels: Stays, dt_early: float = -12, dt_optimal: float = -6, dt_late: float = 3,
                  max_u_tp: float = 1.0, min_u_fn: float = -2.0, u_fp: float = -0.05,
                  u_tn: float = 0.0) -> UtilityTable:
    """The challenge's utility of predicting 1 or 0 at every hour (see the module docstring)."""
    flat = _flatten_labels(labels)
    t_sepsis = _onset_per_stay(flat, dt_optimal)
    septic = np.isfinite(t_sepsis)[flat.stay]
    rel = flat.hour - t_sepsis[flat.stay]  # -inf on non-septic stays; only read where septic

    m1 = max_u_tp / (dt_optimal - dt_early)
    b1 = -m1 * dt_early
    m2 = -max_u_tp / (dt_late - dt_optimal)
    b2 = -m2 * dt_late
    m3 = min_u_fn / (dt_late - dt_optimal)
    b3 = -m3 * dt_optimal

    with np.errstate(invalid="ignore"):
        rising = rel <= dt_optimal
        scored = rel <= dt_late
        pos_septic = np.where(rising, np.maximum(m1 * rel + b1, u_fp), m2 * rel + b2)
        neg_septic = np.where(rising, 0.0, m3 * rel + b3)
    u_pos = np.where(septic, np.where(scored, pos_septic, 0.0), u_fp)
    u_neg = np.where(septic, np.where(scored, neg_septic, 0.0), u_tn)

    best_pred = septic & (rel >= dt_early) & (rel <= dt_late)
    best = float(np.where(best_pred, u_pos, u_neg).sum())
    inaction = float(u_neg.sum())
    return UtilityTable(u_pos=u_pos, u_neg=u_neg, best=best, inaction=inaction)


def normalized_utility(labels: Stays, predictions: Stays) -> float:
    """The challenge's normalised utility of 0/1 (or boolean) hourly predictions: 1 for the best
    predictions, 0 for never alarming, negative when worse than never alarming."""
    flat = _flatten_labels(labels)
    y = _flatten_probs(predictions, flat, name="predictions")
    if not np.isin(y, (0, 1)).all():
        j = int(np.flatnonzero(~np.isin(y, (0, 1)))[0])
        raise ValueError(f"predictions of {_where(flat.offsets, j)}: {y[j].item()!r} is not 0 or 1 "
                         "(threshold the risks first)")
    table = utility_table(labels)
    return float(table.normalise(table.utility(y)))


def utility_curve(table: UtilityTable, probs_concat: np.ndarray,
                  thresholds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised utility of predicting `probs >= threshold`, for every threshold at once.

    `probs_concat` are the risks of all stays concatenated in the table's row order. Default
    thresholds are the distinct risk values (the only places the utility can change). Sorting the
    risks once makes each threshold a binary search into a suffix sum of (u_pos - u_neg).
    """
    p = np.asarray(probs_concat, dtype=np.float64).reshape(-1)
    if len(p) != len(table.u_pos):
        raise ValueError(f"probs have {len(p)} rows but the utility table has {len(table.u_pos)}")
    order = np.argsort(p, kind="stable")
    p_sorted = p[order]
    gain = (table.u_pos - table.u_neg)[order]
    # suffix[k] = total gain of alarming on sorted rows k..end; suffix[n] = 0 (no alarm)
    suffix = np.r_[np.cumsum(gain[::-1])[::-1], 0.0]
    distinct = p_sorted[np.r_[True, p_sorted[1:] != p_sorted[:-1]]] if len(p_sorted) else p_sorted
    th = distinct if thresholds is None else np.asarray(thresholds, dtype=np.float64).reshape(-1)
    first_alarmed = np.searchsorted(p_sorted, th, side="left")
    utilities = table.normalise(table.inaction + suffix[first_alarmed])
    return th, np.asarray(utilities, dtype=np.float64)


def choose_threshold(labels: Stays, probs: Stays) -> tuple[float, float]:
    """(threshold, normalised utility) maximising the utility of `probs >= threshold`.

    The returned threshold sits halfway between the lowest alarmed risk and the highest risk
    below it, so tiny numeric differences (float32, another runtime) do not flip alarms. If no
    threshold beats never alarming, it lies above every risk and the utility is 0.
    """
    flat = _flatten_labels(labels)
    p = _flatten_probs(probs, flat)
    table = utility_table(labels)
    if table.best <= table.inaction:
        raise ValueError("cannot choose a threshold: no septic hour to score (no stay has a label 1)")
    th, u = utility_curve(table, p)
    if len(th) == 0 or u.max() <= 0.0:
        top = float(p.max()) if len(p) else 1.0
        return top + 1e-6 * max(1.0, abs(top)), 0.0
    k = int(np.argmax(u))  # first maximum: the highest utility at the lowest such threshold
    below = th[k - 1] if k > 0 else th[k] - 1e-6 * max(1.0, abs(th[k]))
    mid = (th[k] + below) / 2
    if np.float32(mid) <= np.float32(below):  # adjacent float32 risks: the midpoint would not survive
        mid = th[k]
    return float(mid), float(u[k])


# ---------------------------------------------------------------- alarms at a threshold

def alarm_metrics(labels: Stays, probs: Stays, threshold: float, starts: Sequence[int] | None = None) -> dict:
    """What a ward sees when alarms fire at `risk >= threshold` and nobody acts on them: the
    figures of `models.alarm_figures` (their one definition) over the alarms of
    `models.alarm_policy` with no ward action and no re-alerts (`SILENT_FOR_GOOD`), so one alarm
    per episode (a run of consecutive hours with risk >= threshold). Onset t_sepsis = first label-1 hour + 6 (the clinical onset).

    - alarms_per_patient_day: episodes / (all hours / 24); n_alarm_episodes their count.
    - caught_in_window: share of septic stays with an alarm raised in [t_sepsis - 12, t_sepsis + 3]
      or raised earlier and still on when that window begins; median_lead_time_in_window_hours:
      t_sepsis minus the raise of the alarm that caught the stay.
    - septic_alarmed_before_onset (the older, looser line): share of septic stays with an alarm at
      some hour t <= t_sepsis; median_lead_time_hours: t_sepsis - the stay's first alarm hour, over
      those stays; median_lead_time_last_episode_hours: the same with the latest alarm at or before
      onset (an alarm that fired on admission and went quiet for days inflates the first).
    - alarmed_stays_septic: share of stays with any alarm that are septic (PPV per stay);
      ppv_alarms: share of alarms raised in a septic stay's window (PPV per alarm).
    - non_septic_alarmed: share of non-septic stays with any alarm (stay-level false-positive rate).
    - red_share: share of hours with risk >= threshold (an alarm open).
    - hourly precision, recall (sensitivity) and specificity of the alarms against the labels.

    `starts`: each stay's first measured row (`models.alarm_figures.first_measured`): the stay is
    monitored from it, so no earlier hour alarms or counts in any of these (n_hours included);
    None: every stay from its first row.
    """
    from models.alarm_policy import SILENT_FOR_GOOD, AlarmPolicy
    from training.sepsis.ward_simulation import ward_figures

    flat = _flatten_labels(labels)
    p = _flatten_probs(probs, flat)
    f = ward_figures([flat.labels[a:b] for a, b in zip(flat.offsets[:-1], flat.offsets[1:])],
                     [p[a:b] for a, b in zip(flat.offsets[:-1], flat.offsets[1:])],
                     AlarmPolicy(float(threshold), **SILENT_FOR_GOOD), "none", starts)
    watched = _monitored_rows(flat.offsets, starts)
    alarm = p[watched] >= threshold
    y = flat.labels[watched].astype(bool)

    tp, fp = int((alarm & y).sum()), int((alarm & ~y).sum())
    fn, tn = int((~alarm & y).sum()), int((~alarm & ~y).sum())

    def share(num: int, den: int) -> float | None:
        return num / den if den else None

    return {
        "threshold": float(threshold),
        "n_stays": f.stays,
        "n_septic": f.septic,
        "n_hours": int(len(alarm)),
        "n_alarm_episodes": f.alarms,
        "alarms_per_patient_day": f.alarms_per_patient_day,
        "caught_in_window": f.caught_in_window,
        "median_lead_time_in_window_hours": f.median_lead_time_in_window_hours,
        "septic_alarmed_before_onset": f.sensitivity,
        "alarmed_stays_septic": f.ppv,
        "ppv_alarms": f.ppv_alarms,
        "non_septic_alarmed": f.non_septic_alarmed,
        "median_lead_time_hours": f.median_lead_time_hours,
        "median_lead_time_last_episode_hours": f.median_lead_time_last_alarm_hours,
        "red_share": f.red_share,
        "precision": share(tp, tp + fp),
        "recall": share(tp, tp + fn),
        "specificity": share(tn, tn + fp),
    }


def _monitored_rows(offsets: np.ndarray, starts: Sequence[int] | None) -> np.ndarray:
    """[rows] bool: the rows at or after their stay's first measured row (all rows when None)."""
    n = int(offsets[-1])
    if starts is None:
        return np.ones(n, bool)
    lengths = np.diff(offsets)
    if len(starts) != len(lengths):
        raise ValueError(f"{len(starts)} starts for {len(lengths)} stays")
    begin = np.repeat(np.asarray(offsets[:-1], np.int64) + np.asarray(starts, np.int64), lengths)
    return np.arange(n) >= begin


def evaluate(labels: Stays, probs: Stays, threshold: float | None = None,
             starts: Sequence[int] | None = None) -> dict:
    """AUROC, AUPRC, normalised utility and alarm metrics at `threshold`. With no threshold, the
    one maximising utility on these same stays is used, which flatters the result: the dict says
    so under `threshold_selection`. `starts`: each stay's first measured row, for the alarm
    metrics only (`alarm_metrics`); AUROC, AUPRC and the utility score every row."""
    flat = _flatten_labels(labels)
    p = _flatten_probs(probs, flat)
    if threshold is None:
        threshold, _ = choose_threshold(labels, probs)
        selection = "chosen on these same stays to maximise normalised utility (optimistic)"
    else:
        selection = "given"
    table = utility_table(labels)
    utility = float(table.normalise(table.utility(p >= threshold)))
    return {
        "auroc": _nan_to_none(hourly_auroc(labels, probs)),
        "auprc": _nan_to_none(hourly_auprc(labels, probs)),
        "utility": _nan_to_none(utility),
        "threshold_selection": selection,
        **alarm_metrics(labels, probs, threshold, starts),
    }


# ---------------------------------------------------------------- patient-level protocol

def stay_level_metrics(stay_labels: np.ndarray, stay_scores: np.ndarray, threshold: float = 0.5) -> dict:
    """One label and one score per stay (the reference study's patient-level protocol): a stay is
    predicted septic when its score >= threshold. precision = TP/(TP+FP), recall = TP/(TP+FN),
    f1 = 2TP/(2TP+FP+FN); auroc and auprc (average precision) rank the raw scores."""
    y = np.asarray(stay_labels).reshape(-1)
    s = np.asarray(stay_scores, dtype=np.float64).reshape(-1)
    if len(y) != len(s):
        raise ValueError(f"stay_labels has {len(y)} stays but stay_scores has {len(s)}")
    if not np.isin(y, (0, 1)).all():
        j = int(np.flatnonzero(~np.isin(y, (0, 1)))[0])
        raise ValueError(f"stay_labels[{j}] = {y[j].item()!r} is not 0 or 1")
    if not np.isfinite(s).all():
        j = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"stay_scores[{j}] = {s[j].item()!r} is not a finite number")
    y = y.astype(bool)
    pred = s >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    two_classes = 0 < y.sum() < len(y)
    return {
        "threshold": float(threshold),
        "n_stays": int(len(y)),
        "n_septic": int(y.sum()),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "true_negatives": tn,
        "auroc": float(roc_auc_score(y, s)) if two_classes else None,
        "auprc": float(average_precision_score(y, s)) if y.any() else None,
    }
