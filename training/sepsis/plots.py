"""Figures people look at after a sepsis run; each function writes one PNG and returns its path."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: training runs on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve  # noqa: E402

from training.sepsis.metrics import pooled  # noqa: E402

MAX_POINTS = 4000  # a line of a million points looks the same as this and draws far faster


def _thin(n: int, keep: Sequence[int] = ()) -> np.ndarray:
    """Indices of at most ~MAX_POINTS evenly spaced points of a curve of n, plus `keep`."""
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.unique(np.r_[np.linspace(0, n - 1, MAX_POINTS).round().astype(int), np.asarray(keep, dtype=int)])


def save_figure(fig, path) -> Path:
    """Lay out, write (making the folder) and close a figure; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _require_both_classes(y: np.ndarray, what: str) -> None:
    if y.all() or not y.any():
        raise ValueError(f"{what} needs hours of both labels (got only label {int(y[0]) if len(y) else 'none'})")


def _roc_line(ax, y, p, name: str) -> None:
    fpr, tpr, _ = roc_curve(y, p)
    idx = _thin(len(fpr))
    ax.plot(fpr[idx], tpr[idx], label=f"{name} (AUROC {auc(fpr, tpr):.3f})")


def _roc_axes(ax, title: str) -> None:
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    ax.set(xlabel="false-positive rate (hours)", ylabel="true-positive rate (hours)", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")


def roc_curve_png(labels, probs, path, title: str = "Hourly ROC") -> Path:
    """ROC curve over all hours pooled, AUROC in the legend."""
    y, p = pooled(labels, probs)
    _require_both_classes(y, "an ROC curve")
    fig, ax = plt.subplots(figsize=(5, 5))
    _roc_line(ax, y, p, "model")
    _roc_axes(ax, title)
    return save_figure(fig, path)


def pr_curve_png(labels, probs, path, title: str = "Hourly precision-recall") -> Path:
    """Precision-recall curve over all hours pooled; the dashed line is the positive-hour rate,
    what a random score achieves."""
    y, p = pooled(labels, probs)
    _require_both_classes(y, "a precision-recall curve")
    precision, recall, _ = precision_recall_curve(y, p)
    idx = _thin(len(precision))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall[idx], precision[idx], label=f"model (AP {average_precision_score(y, p):.3f})")
    ax.axhline(y.mean(), color="grey", lw=0.8, ls="--", label=f"positive rate {y.mean():.3f}")
    ax.set(xlabel="recall (hours)", ylabel="precision (hours)", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right")
    return save_figure(fig, path)


def utility_curve_png(thresholds, utilities, chosen: float, path, title: str = "Normalised utility vs threshold") -> Path:
    """Normalised challenge utility against the alarm threshold, with the chosen threshold marked."""
    th = np.asarray(thresholds, dtype=float).reshape(-1)
    u = np.asarray(utilities, dtype=float).reshape(-1)
    if len(th) != len(u) or len(th) == 0:
        raise ValueError(f"thresholds ({len(th)}) and utilities ({len(u)}) must be equally long and non-empty")
    finite = np.isfinite(u)
    best = int(np.argmax(np.where(finite, u, -np.inf)))
    idx = _thin(len(th), keep=[best])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(th[idx], u[idx])
    ax.plot(th[best], u[best], "o", color="C1", label=f"maximum {u[best]:.3f} at {th[best]:.3f}")
    ax.axvline(chosen, color="C3", ls="--", label=f"chosen threshold {chosen:.3f}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="alarm threshold on hourly risk", ylabel="normalised utility", title=title)
    ax.legend(loc="best")
    return save_figure(fig, path)


def learning_curves_png(history: list[dict], path) -> Path:
    """Losses and validation scores per epoch; a panel per quantity that the history records
    (train_loss / val_loss, val_auroc, val_utility, val_auprc)."""
    if not history:
        raise ValueError("learning curves need a history of at least one epoch")
    panels = [("loss", ("train_loss", "val_loss")), ("validation AUROC", ("val_auroc",)),
              ("validation utility", ("val_utility",)), ("validation AUPRC", ("val_auprc",))]
    panels = [(t, [k for k in keys if any(h.get(k) is not None for h in history)]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys]
    if not panels:
        raise ValueError("history records none of train_loss, val_loss, val_auroc, val_utility, val_auprc")
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for k in keys:
            ax.plot(epochs, [np.nan if h.get(k) is None else h[k] for h in history], marker="o", ms=3, label=k)
        ax.set(xlabel="epoch", title=title)
        ax.legend()
    return save_figure(fig, path)


def dropout_png(rows: list[dict], path) -> Path:
    """AUROC and utility against the share of hours dropped at inference, one line per
    (model, variant)."""
    if not rows:
        raise ValueError("dropout plot needs at least one row")
    lines: dict[tuple, list[dict]] = {}
    for r in rows:
        lines.setdefault((r["model"], r["variant"]), []).append(r)
    colour = {m: f"C{i}" for i, m in enumerate(sorted({m for m, _ in lines}))}  # one colour per model
    styles = dict(zip(sorted({v for _, v in lines}), ("-", "--", ":", "-.") * 4))  # one dash per variant
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("auroc", "utility")):
        for (model, variant), rs in sorted(lines.items()):
            rs = sorted(rs, key=lambda r: r["rate"])
            ax.plot([r["rate"] for r in rs], [np.nan if r[metric] is None else r[metric] for r in rs],
                    marker="o", color=colour[model], ls=styles[variant], label=f"{model} ({variant})")
        ax.set(xlabel="share of hours dropped", ylabel=metric, title=f"hourly {metric} under temporal dropout")
        ax.legend()
    return save_figure(fig, path)


def compare_roc_png(curves: Mapping[str, tuple], path, title: str = "Hourly ROC") -> Path:
    """Several models' hourly ROC curves on one axes: `curves` maps name -> (labels, probs)."""
    if not curves:
        raise ValueError("compare_roc_png needs at least one curve")
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for name, (labels, probs) in curves.items():
        y, p = pooled(labels, probs)
        _require_both_classes(y, f"the ROC curve of {name!r}")
        _roc_line(ax, y, p, name)
    _roc_axes(ax, title)
    return save_figure(fig, path)


def reliability_png(curves: Mapping[str, list[dict]], path) -> Path:
    """Mean predicted risk against the observed hourly label rate, per risk decile."""
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for name, rows in curves.items():
        x = [r["mean_risk"] for r in rows]
        y = [r["label_rate"] for r in rows]
        ax.plot(x, y, marker="o", label=name)
        top = max(top, *x, *y)
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="perfect calibration")
    ax.set_xlabel("mean predicted risk (decile)")
    ax.set_ylabel("observed share of SepsisLabel = 1 hours")
    ax.set_title("Reliability of the hourly risk")
    ax.legend()
    return save_figure(fig, path)


def silence_drift_png(results: Mapping[str, dict], path) -> Path:
    """Per model: share of below-threshold stays still below, and mean risk change, against empty hours."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in results.items():
        hours = [row["empty_hours"] for row in r["rows"]]
        left.plot(hours, [row["below_stays_below"] for row in r["rows"]], marker="o", label=name)
        right.plot(hours, [row["mean_change"] for row in r["rows"]], marker="o", label=name)
    left.axhline(0.95, color="grey", linestyle="--", linewidth=1, label="bar: 95%")
    left.set(xlabel="empty observations (hours)", ylabel="below-threshold stays still below",
             title="Risk on silence: alarms raised by no data", ylim=(0, 1.02))
    right.set(xlabel="empty observations (hours)", ylabel="mean change in risk", title="Risk drift on silence")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    return save_figure(fig, path)
