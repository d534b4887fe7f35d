"""Two models' hourly predictions on the same stays, scored as the challenge scores them, with a
paired bootstrap over stays for how far the figures and their difference could move.

Each side is a folder of the challenge's prediction files (`<patient>.psv`, a header and then
`PredictedProbability|PredictedLabel` per hour of the stay's file): what `evaluate-onnx --out DIR`
writes for a shipped step, and `baseline --folds K --predictions DIR` for the cross-fitted boosting
peer. AUROC from the probabilities (every hour pooled) and the normalised utility from the labels
(each model at its own threshold, chosen out of fold), with `training/sepsis/metrics.py`'s
definitions, the ones every table of the project uses.

The bootstrap draws stays with replacement, the same draw for both sides: a stay's hours stay
together (hours of one patient are not independent) and the difference is paired, so what the two
models share (which stays are hard) cancels out of its spread. The percentile interval of a split
of this size says how much another sample of as many stays may move a figure; the held-back stays
are such a sample, not a bound on it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from training.sepsis import metrics as M
from training.sepsis.evaluate_onnx import HEADER


@dataclass(frozen=True)
class Side:
    name: str
    probs: list[np.ndarray]
    alarms: list[np.ndarray]


def read_predictions(folder: Path, patient_ids, lengths) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(probabilities, 0/1 alarms) per stay, in the order of `patient_ids`, from `<folder>/<id>.psv`.
    A missing file, a stay of another length or a malformed row is a ValueError naming the file
    (and line)."""
    folder = Path(folder)
    probs, alarms = [], []
    for pid, n in zip(patient_ids, lengths):
        path = folder / f"{pid}.psv"
        if not path.is_file():
            raise ValueError(f"{path}: missing (one file per stay of the split)")
        lines = path.read_text().splitlines()
        if not lines or lines[0].strip() != HEADER:
            raise ValueError(f"{path}, line 1: expected the header {HEADER!r}")
        rows = [line for line in lines[1:] if line.strip()]
        if len(rows) != n:
            raise ValueError(f"{path}: {len(rows)} hours, but the stay has {n}")
        p, a = np.empty(n), np.empty(n, np.int8)
        for k, line in enumerate(rows):
            parts = line.split("|")
            try:
                p[k], a[k] = float(parts[0]), int(parts[1])
                if len(parts) != 2 or not np.isfinite(p[k]) or a[k] not in (0, 1):
                    raise ValueError
            except (ValueError, IndexError):
                raise ValueError(f"{path}, line {k + 2}: {line!r} is not 'probability|0 or 1'") from None
        probs.append(p)
        alarms.append(a)
    return probs, alarms


@dataclass(frozen=True)
class StayBounds:
    """What the labels alone fix, once for any number of models: the utility table of the stays,
    where each stay starts in it, and per stay the utility of the best predictions and of never
    alarming."""
    table: M.UtilityTable
    starts: np.ndarray
    best: np.ndarray
    inaction: np.ndarray


def stay_bounds(labels) -> StayBounds:
    table = M.utility_table(labels)
    starts = np.cumsum([0] + [len(x) for x in labels])[:-1]
    best = np.array([M.utility_table([lab]).best for lab in labels])
    return StayBounds(table, starts, best, np.add.reduceat(table.u_neg, starts))


def stay_utilities(labels, alarms, bounds: StayBounds | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stay: the utility of `alarms`, of the best predictions and of never alarming (the sums
    the normalised utility is made of, so any set of stays can be scored from them). `bounds`:
    `stay_bounds(labels)`, when several models are scored on the same stays."""
    bounds = bounds or stay_bounds(labels)
    y = np.concatenate(alarms).astype(bool)
    observed = np.add.reduceat(np.where(y, bounds.table.u_pos, bounds.table.u_neg), bounds.starts)
    return observed, bounds.best, bounds.inaction


def paired_bootstrap(labels, a: Side, b: Side, replicates: int = 1000, seed: int = 0,
                     progress: bool = True, bars: dict[str, float] | None = None) -> dict:
    """Each side's AUROC and normalised utility on all stays and over `replicates` paired draws of
    stays, and the difference a - b: point, 95% percentile interval, share of draws a is ahead.
    `bars` ({"auroc": 0.835, ...}): also each side's share of draws at or above each bar."""
    n = len(labels)
    lengths = np.array([len(x) for x in labels])
    starts = np.cumsum(np.r_[0, lengths])[:-1]
    flat_y = np.concatenate(labels).astype(np.int8)
    flat = {s.name: np.concatenate(s.probs) for s in (a, b)}
    bounds = stay_bounds(labels)
    sums = {s.name: stay_utilities(labels, s.alarms, bounds) for s in (a, b)}

    def scores(idx: np.ndarray) -> dict:
        lens = lengths[idx]  # every hour of each drawn stay, as often as the stay was drawn
        rows = np.repeat(starts[idx] - np.cumsum(np.r_[0, lens[:-1]]), lens) + np.arange(lens.sum())
        out = {}
        for s in (a, b):
            y, p = flat_y[rows], flat[s.name][rows]
            obs, best, inaction = (x[idx] for x in sums[s.name])
            span = best.sum() - inaction.sum()
            out[s.name] = {"auroc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
                           "utility": float((obs.sum() - inaction.sum()) / span) if span > 0 else float("nan")}
        return out

    point = scores(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = {s.name: {"auroc": [], "utility": []} for s in (a, b)}
    for _ in tqdm(range(replicates), desc="bootstrap over stays", disable=not progress):
        got = scores(np.sort(rng.integers(0, n, n)))
        for side in got:
            for metric, v in got[side].items():
                draws[side][metric].append(v)

    def interval(x) -> list[float]:
        x = np.asarray(x)
        x = x[np.isfinite(x)]
        return [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]

    result = {"stays": n, "hours": int(lengths.sum()), "septic_stays": int(sum(lab.any() for lab in labels)),
              "replicates": replicates, "seed": seed, "models": {}, "difference": {"a": a.name, "b": b.name}}
    for s in (a, b):
        result["models"][s.name] = {m: {"all_stays": point[s.name][m], "interval_95": interval(draws[s.name][m])}
                                    for m in ("auroc", "utility")}
        for m, bar in (bars or {}).items():  # among the draws where the metric is defined (a septic stay drawn)
            x = np.asarray(draws[s.name][m])
            result["models"][s.name][m]["share_at_or_above"] = {str(bar): float(np.mean(x[np.isfinite(x)] >= bar))}
    for m in ("auroc", "utility"):
        diff = np.asarray(draws[a.name][m]) - np.asarray(draws[b.name][m])
        diff = diff[np.isfinite(diff)]
        result["difference"][m] = {"all_stays": point[a.name][m] - point[b.name][m], "interval_95": interval(diff),
                                   "share_a_ahead": float(np.mean(diff > 0)), "draws": diff.tolist()}
    return result


def table_md(result: dict) -> str:
    a, b = result["difference"]["a"], result["difference"]["b"]
    lines = [f"{result['stays']:,} stays ({result['septic_stays']:,} septic, {result['hours']:,} hours); "
             f"{result['replicates']:,} paired draws of stays (seed {result['seed']}); 95% percentile intervals.", "",
             "| | AUROC | normalised utility |", "|---|---|---|"]
    def at_or_above(cell: dict) -> str:
        return "".join(f"; >= {bar} in {100 * share:.0f}% of draws" for bar, share in cell.get("share_at_or_above", {}).items())

    for name in (a, b):
        m = result["models"][name]
        lines.append(f"| {name} | " + " | ".join(
            f"{m[k]['all_stays']:.4f} [{m[k]['interval_95'][0]:.4f}, {m[k]['interval_95'][1]:.4f}]{at_or_above(m[k])}"
            for k in ("auroc", "utility")) + " |")
    d = result["difference"]
    lines.append(f"| {a} - {b} | " + " | ".join(
        f"{d[k]['all_stays']:+.4f} [{d[k]['interval_95'][0]:+.4f}, {d[k]['interval_95'][1]:+.4f}]; "
        f"{a} ahead in {100 * d[k]['share_a_ahead']:.1f}% of draws" for k in ("auroc", "utility")) + " |")
    return "\n".join(lines) + "\n"


def difference_png(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = result["difference"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, label in zip(axes, ("auroc", "utility"), ("hourly AUROC", "normalised utility")):
        x = np.asarray(d[metric]["draws"])
        ax.hist(x, bins=40, color="#4477aa", alpha=0.85)
        ax.axvline(0, color="black", lw=1)
        lo, hi = d[metric]["interval_95"]
        ax.axvspan(lo, hi, color="#ddaa33", alpha=0.2, label="95% interval")
        ax.axvline(d[metric]["all_stays"], color="#cc3311", lw=2, label="all stays")
        ax.set_title(f"{label}: {d['a']} - {d['b']}")
        ax.set_xlabel("difference over paired draws of stays")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_cli(a) -> int:
    from training.sepsis.replay import select_stays

    sides = []
    for spec in (a.a, a.b):
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"sepsis compare: {spec!r}: expected NAME=FOLDER")
        sides.append((name, Path(folder)))
    if sides[0][0] == sides[1][0]:
        raise SystemExit(f"sepsis compare: both sides are named {sides[0][0]!r}")
    stays = select_stays(a.data, a.split, a.split_seed, None)
    labels = [s.labels.astype(np.int8) for s in stays]
    ids, lengths = [s.patient_id for s in stays], [len(s.labels) for s in stays]
    loaded = []
    for name, folder in sides:
        try:
            probs, alarms = read_predictions(folder, ids, lengths)
        except ValueError as err:
            raise SystemExit(f"sepsis compare: {err}") from None
        loaded.append(Side(name, probs, alarms))
    bars = {}
    for spec in a.bar or []:
        metric, sep, value = spec.partition("=")
        try:
            if not sep or metric not in ("auroc", "utility"):
                raise ValueError
            bars[metric] = float(value)
        except ValueError:
            raise SystemExit(f"sepsis compare: --bar {spec!r}: expected auroc=NUMBER or utility=NUMBER") from None
    result = paired_bootstrap(labels, loaded[0], loaded[1], a.replicates, a.seed, progress=not a.no_progress,
                              bars=bars)
    result.update({"split": a.split, "split_seed": a.split_seed, "data": str(a.data),
                   "folders": {name: str(folder) for name, folder in sides}})
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    (out / "compare.md").write_text(table_md(result))
    difference_png(result, out / "compare.png")
    print(table_md(result))
    return 0
