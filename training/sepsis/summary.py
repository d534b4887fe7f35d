"""Aggregate sepsis runs over seeds: a markdown table, summary.json and a comparison plot."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

HOURLY = ("auroc", "auprc", "utility", "alarms_per_patient_day", "septic_alarmed_before_onset",
          "alarmed_stays_septic", "non_septic_alarmed", "median_lead_time_hours",
          "median_lead_time_last_episode_hours")
PATIENT = ("precision", "recall", "f1", "false_positives", "auroc", "auprc")


def _group_key(m: dict) -> str:
    """Runs that differ only in their seed form one group: the run name without its -s<seed>."""
    return re.sub(r"-s\d+$", "", m["run"])


def _mean_std(values) -> str:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def summarize(results: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(results.glob("*/metrics.json"))]
    groups: dict[str, list[dict]] = defaultdict(list)
    for m in runs:
        groups[_group_key(m)].append(m)
    lines, summary = [], {}
    for objective, keys in (("hourly", HOURLY), ("patient", PATIENT)):
        # runs trained on the utility objective are still scored hour by hour
        rows = {k: g for k, g in groups.items()
                if {"utility": "hourly"}.get(g[0]["config"]["objective"], g[0]["config"]["objective"]) == objective}
        if not rows:
            continue
        lines.append(f"\n### {objective}-level task (test split, mean ± std over seeds)\n")
        lines.append("| model | seeds | " + " | ".join(keys) + " | core params | s/epoch |")
        lines.append("|" + "---|" * (len(keys) + 4))
        for name, g in sorted(rows.items()):
            cells = [_mean_std([m["test"].get(k) for m in g]) for k in keys]
            lines.append(f"| {name} | {len(g)} | " + " | ".join(cells)
                         + f" | {g[0]['parameters']['core']:,} | {_seconds(g)} |")
            summary[name] = {k: [m["test"].get(k) for m in g] for k in keys} | {
                "seeds": [m["config"]["seed"] for m in g], "runs": [m["run"] for m in g]}
    dropout = _dropout_table(groups)
    if dropout:
        lines += dropout
    (results / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    _plot(summary, results / "summary.png")
    return "\n".join(lines)


def _dropout_table(groups: dict[str, list[dict]]) -> list[str]:
    """Test AUROC and utility when rows are dropped at inference (mean over seeds)."""
    rows = []
    for name, g in sorted(groups.items()):
        if g[0]["config"]["objective"] == "patient" or "temporal_dropout_test" not in g[0] or len(g) < 2:
            continue
        for variant in ("remove", "zero"):
            cells = []
            for rate in g[0]["config"]["dropout_rates"]:
                picked = [r for m in g for r in m["temporal_dropout_test"] if r["variant"] == variant and r["rate"] == rate]
                cells.append(f"{np.mean([r['auroc'] for r in picked]):.3f} / {np.mean([r['utility'] for r in picked]):.3f}")
            rows.append(f"| {name} | {variant} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    rates = next(iter(groups.values()))[0]["config"]["dropout_rates"]
    return ["\n### temporal dropout at inference (test AUROC / utility, mean over seeds)\n",
            "| model | variant | " + " | ".join(f"{int(r * 100)}%" for r in rates) + " |",
            "|" + "---|" * (len(rates) + 2)] + rows


def _seconds(group: list[dict]) -> str:
    times = [m["seconds_per_epoch"] for m in group if "seconds_per_epoch" in m]
    return f"{np.mean(times):.1f}" if times else "n/a"


def _plot(summary: dict, path: Path) -> None:
    """Mean ± std (dots: seeds) per model, on axes zoomed to the spread: differences of 0.005 AUROC
    decide this table, and bars from zero hide them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hourly = {k: v for k, v in summary.items() if "utility" in v}
    if not hourly:
        return
    names = sorted(hourly)
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.45 * len(names) + 1.8), sharey=True)
    for ax, metric in zip(axes, ("auroc", "auprc", "utility")):
        vals = [np.array([x for x in hourly[n][metric] if x is not None], float) for n in names]
        for i, v in enumerate(vals):
            if len(v) == 0:
                continue
            ax.errorbar(v.mean(), i, xerr=v.std(ddof=1) if len(v) > 1 else 0, fmt="o", color="C0", capsize=4)
            ax.scatter(v, [i] * len(v), color="k", s=10, zorder=3)
        ax.set_title(f"test {metric}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
