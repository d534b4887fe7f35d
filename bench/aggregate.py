"""Aggregate benchmark runs: mean ± std over seeds per (task, data variant, core).

usage: PYTHONPATH=. python bench/aggregate.py RESULTS_DIR
Reads RESULTS_DIR/<task>/<run>/metrics.json; writes RESULTS_DIR/summary.{md,json} and, per task
and variant, RESULTS_DIR/<task>/stress_<variant>.png (mean accuracy vs drop rate, both stress
variants, CfC against LSTM).
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from training.stress import plot_stress

TASKS = ("nmnist", "quickdraw", "iam")


def _variant(m: dict) -> str:
    c = m.get("config", {})
    return str(c.get("variant") or c.get("format") or ("generated" if c.get("generated") else "iam"))


def _ms(values) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def collect(root: Path) -> dict:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for task in TASKS:
        for f in sorted((root / task).glob("*/metrics.json")):
            m = json.loads(f.read_text())
            groups[(task, _variant(m), m["config"]["core"])].append(m)
    return groups


def summarise(groups: dict) -> list[dict]:
    rows = []
    for (task, variant, core), runs in sorted(groups.items()):
        row = {"task": task, "variant": variant, "core": core, "seeds": [r["seed"] for r in runs],
               "parameters_core": runs[0]["parameters_core"],
               "parameters_total": runs[0]["parameters_total"],
               "seconds_per_epoch": _ms([r["seconds_per_epoch"] for r in runs]),
               "epochs_run": _ms([r["epochs_run"] for r in runs]), "data": runs[0]["data"]}
        if task == "iam":
            row["test_cer"] = _ms([r["test_cer"] for r in runs])
            row["test_wer"] = _ms([r["test_wer"] for r in runs])
        else:
            row["test_accuracy"] = _ms([r["test_accuracy"] for r in runs])
        key = "cer" if task == "iam" else "accuracy"
        stress = defaultdict(list)
        for r in runs:
            for p in r.get("stress", []):
                stress[(p["variant"], p["rate"])].append(p[key])
        if stress:
            row["stress_metric"] = key
            row["stress"] = [{"variant": v, "rate": k, **_ms(a)} for (v, k), a in sorted(stress.items())]
        rows.append(row)
    return rows


def _fmt(s: dict, scale: float = 1.0, digits: int = 2) -> str:
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    out = ["| task | data variant | core | seeds | test accuracy % / CER | WER | core params | "
           "total params | s/epoch | epochs |", "|" + "---|" * 10]
    for r in rows:
        score = (_fmt(r["test_accuracy"], 100) if "test_accuracy" in r else _fmt(r["test_cer"], 1, 4))
        w = _fmt(r["test_wer"], 1, 4) if "test_wer" in r else ""
        out.append(f"| {r['task']} | {r['variant']} | {r['core']} | {len(r['seeds'])} | {score} | {w} | "
                   f"{r['parameters_core']:,} | {r['parameters_total']:,} | "
                   f"{_fmt(r['seconds_per_epoch'])} | {r['epochs_run']['mean']:.0f} |")
    stress_rows = [r for r in rows if "stress" in r]
    if stress_rows:
        rates = sorted({p["rate"] for r in stress_rows for p in r["stress"]})
        out += ["", "Temporal dropout at inference (test accuracy % for classification, CER for iam; "
                "mean ± std over seeds):", "",
                "| task | data variant | core | stress variant | " + " | ".join(f"{k:.0%}" for k in rates) + " |",
                "|" + "---|" * (4 + len(rates))]
        for r in stress_rows:
            for v in ("zero", "remove"):
                pts = {p["rate"]: p for p in r["stress"] if p["variant"] == v}
                acc = r["stress_metric"] == "accuracy"
                cells = [(_fmt(pts[k], 100 if acc else 1, 1 if acc else 3) if k in pts else "")
                         for k in rates]
                out.append(f"| {r['task']} | {r['variant']} | {r['core']} | {v} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    rows = summarise(collect(root))
    if not rows:
        print(f"error: no {root}/<task>/<run>/metrics.json found", file=sys.stderr)
        return 2
    (root / "summary.json").write_text(json.dumps(rows, indent=2))
    (root / "summary.md").write_text(markdown(rows))
    by_plot = defaultdict(dict)
    for r in rows:
        if "stress" in r:
            by_plot[(r["task"], r["variant"])][r["core"]] = [
                {"variant": p["variant"], "rate": p["rate"], "accuracy": p["mean"]} for p in r["stress"]]
    for (task, variant), curves in by_plot.items():
        metric = "CER" if task == "iam" else "accuracy"
        plot_stress(curves, root / task / f"stress_{variant}.png",
                    f"{task} ({variant}): mean test {metric} over seeds vs temporal dropout",
                    ylabel=f"test {metric}")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
