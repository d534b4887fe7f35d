"""The cross-fitted ladder: each core's seed-sets side by side, with the boosting peer.

A rung is one recipe with only the core changed; each of its seed-sets is one 5-fold cross-fitted
model (`sepsis crossfit`, its metrics.json). Per rung: every seed-set's out-of-fold (OOF) and test
figures, their mean and spread (sample standard deviation over the seed-sets), and the lowest OOF
plausibility share. OOF figures are the ones to rank by; test was read once per seed-set, for the record.

    python -m training sepsis ladder --rung CfC-128=DIR,DIR,DIR --rung MLP=DIR,... --peer DIR --out DIR
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

FIGURES = (("oof", "auroc"), ("oof", "utility"), ("test", "auroc"), ("test", "utility"))


def seed_set(record: dict) -> dict:
    """The figures the ladder shows of one cross-fitted seed-set."""
    shares = {v: s["share_higher"] for v, s in record["plausibility_oof"]["variables"].items()}
    lowest = min(shares, key=lambda v: shares[v])
    return {"run": record["run"], "member_seeds": record.get("member_seeds"),
            **{f"{part}_{name}": float(record[part][name]) for part, name in FIGURES},
            "oof_auroc_per_fold": [float(f["auroc"]) for f in record["oof_per_fold"]],
            "plausible_variables": sum(s >= 0.95 for s in shares.values()), "variables": len(shares),
            "lowest_share": [lowest, float(shares[lowest])],
            "best_epochs": record.get("best_epochs"), "epochs_run": record.get("epochs_run")}


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values)}


def summarize(rungs: dict[str, list[dict]], peer: dict | None = None) -> dict:
    """rungs: name -> the seed-sets' crossfit records (metrics.json); peer: the boosting peer's record."""
    if not rungs or any(not sets for sets in rungs.values()):
        raise ValueError("every rung needs at least one seed-set")
    out = {"rungs": {}}
    for name, records in rungs.items():
        folds = {r["folds"] for r in records}
        if len(folds) != 1:
            raise ValueError(f"{name}: seed-sets cross-fitted over different fold counts {sorted(folds)}")
        sets = [seed_set(r) for r in records]
        out["rungs"][name] = {"seed_sets": sets, **{f"{p}_{n}": _spread([s[f"{p}_{n}"] for s in sets])
                                                    for p, n in FIGURES}}
    if peer is not None:
        out["peer"] = {"run": peer["run"], **{f"{p}_{n}": float(peer[p][n]) for p, n in FIGURES},
                       "oof_auroc_per_fold": [float(f["auroc"]) for f in peer["oof_per_fold"]]}
    return out


def _cell(spread: dict) -> str:
    if spread["sd"] is None:
        return f"{spread['mean']:.4f}"
    return f"{spread['mean']:.4f} ± {spread['sd']:.4f}"


def markdown(summary: dict) -> str:
    """One row per rung: mean ± sd over its seed-sets (and the seed-sets' count), then the peer."""
    head = ("| rung | seed-sets | OOF AUROC | OOF utility | test AUROC | test utility | variables >= 95% (OOF), lowest |\n"
            "|---|---|---|---|---|---|---|")
    rows = []
    for name, rung in summary["rungs"].items():
        sets = rung["seed_sets"]
        plaus = "; ".join(f"{s['plausible_variables']} of {s['variables']}, {s['lowest_share'][0]} "
                          f"{s['lowest_share'][1]:.1%}" for s in sets)
        rows.append(f"| {name} | {len(sets)} | " + " | ".join(_cell(rung[f"{p}_{n}"]) for p, n in FIGURES)
                    + f" | {plaus} |")
    if "peer" in summary:
        p = summary["peer"]
        rows.append(f"| boosting `{p['run']}` | - | " + " | ".join(f"{p[f'{a}_{b}']:.4f}" for a, b in FIGURES) + " | - |")
    return "\n".join([head, *rows]) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Each seed-set as a dot (OOF AUROC and utility, per rung), the peer as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["rungs"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (part, metric) in zip(axes, (("oof", "auroc"), ("oof", "utility"))):
        for i, name in enumerate(names):
            values = [s[f"{part}_{metric}"] for s in summary["rungs"][name]["seed_sets"]]
            ax.scatter([i] * len(values), values, color="C0", zorder=3)
            ax.hlines(summary["rungs"][name][f"{part}_{metric}"]["mean"], i - 0.25, i + 0.25, color="C0")
        if "peer" in summary:
            ax.axhline(summary["peer"][f"{part}_{metric}"], color="C3", linestyle="--", label="boosting (same folds)")
            ax.legend(loc="upper right", fontsize=8)
        low, high = ax.get_ylim()
        ax.set_ylim(low - 0.1 * (high - low), high + 0.15 * (high - low))  # room for the legend and the dots
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(f"out-of-fold {metric.upper() if metric == 'auroc' else metric}")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Cross-fitted ladder: each dot one 5-fold seed-set, the bar their mean", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_cli(a) -> int:
    rungs: dict[str, list[dict]] = {}
    for spec in a.rung:
        name, sep, dirs = spec.partition("=")
        if not sep or not dirs:
            raise SystemExit(f"--rung {spec!r}: expected NAME=DIR[,DIR...]")
        records = []
        for d in dirs.split(","):
            path = Path(d) / "metrics.json"
            if not path.exists():
                raise SystemExit(f"--rung {name}: no {path}")
            records.append(json.loads(path.read_text()))
        rungs[name] = records
    peer = json.loads((Path(a.peer) / "metrics.json").read_text()) if a.peer else None
    summary = summarize(rungs, peer)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ladder.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "ladder.md").write_text(markdown(summary))
    plot(summary, out / "ladder.png")
    print(markdown(summary))
    return 0
