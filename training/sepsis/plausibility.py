"""Does the model respect physiology? Response curves of the exported step, and the export gate.

For each variable of the reference table with a documented abnormal value (`models/reference.py`:
HR, O2Sat, Temp, SBP, MAP, Resp, HCO3, pH, Creatinine, Lactate, Bilirubin_total, WBC, Platelets):

1. every stay is streamed through the exported ONNX step up to hour 12 (or its last hour if
   shorter), giving that hour's row as measured and the state before it;
2. that row is scored with the variable posted at each point of a grid from its normal to its
   abnormal value, everything else as measured (the carried history untouched, so the variants
   of one patient differ in that one value only); all variants go through the step in batched calls;
3. per variable: the share of patients whose risk is higher at the abnormal value than at the
   normal one (the physiological way), the share where it is lower (the wrong way), the median
   risk ratio abnormal / normal, and the median ratio along the grid (the curve that is plotted).

The gate (`check`) refuses a model that moves the wrong way in more than 5% of patients on any
variable; it reads the validation split. `python -m training sepsis plausibility` writes the record.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.contract import FEATURES, INDEX, elapsed_hours
from models.reference import NORMAL, PLAUSIBILITY, REFERENCES

Step = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

HOUR = 12               # the hour each stay is probed at (its last hour if shorter)
POINTS = 7              # grid points from normal to abnormal, both included
MAX_WRONG_WAY = 0.05    # the gate: at most this share of patients may move the wrong way, per variable
MAX_ROWS = 4096         # rows per step call

# "Clearly abnormal" values for checking the direction of explanations: well past the SIRS,
# qSOFA, SOFA or septic-shock threshold of each variable (see models/reference_values.csv).
CLEARLY_ABNORMAL: dict[str, tuple[str, float]] = {
    "SBP": ("<", 90), "MAP": ("<", 65), "HR": (">", 110), "Lactate": (">=", 4), "Resp": (">", 24),
    "Temp": (">", 38.3), "WBC": (">", 12), "Platelets": ("<", 100), "pH": ("<", 7.3), "Creatinine": (">", 2),
    "Bilirubin_total": (">", 2), "HCO3": ("<", 18),
}


class ImplausibleModelError(ValueError):
    """The model's risk moves against physiology in too many patients (see `check`)."""


@dataclass(frozen=True)
class Probe:
    """One row per stay, as the step sees it at the probed hour."""
    rows: np.ndarray      # [n, 40] float32, the hour's observation as measured
    elapsed: np.ndarray   # [n, 1] float32
    states: np.ndarray    # [n, S] float32, the state before that hour
    hours: np.ndarray     # [n] int, the probed hour (1-based ICU row index)


def _risks(step: Step, obs, elapsed, state, max_rows: int = MAX_ROWS) -> np.ndarray:
    out = np.empty(len(obs), dtype=np.float64)
    for lo in range(0, len(obs), max_rows):
        hi = lo + max_rows
        risk, _ = step(obs[lo:hi], elapsed[lo:hi], state[lo:hi])
        out[lo:hi] = np.asarray(risk, dtype=np.float64).reshape(-1)
    return out


def probe_rows(step: Step, state_size: int, values: np.ndarray, offsets: np.ndarray, hour: int = HOUR) -> Probe:
    """Stream every stay (values [rows, 40], offsets [n + 1]) up to min(hour, its length): the
    row of that hour and the state before it. All stays step in lockstep, one call per hour."""
    lengths = np.diff(offsets)
    if np.any(lengths < 1):
        raise ValueError("every stay needs at least one row")
    elapsed = elapsed_hours(values, offsets).reshape(-1, 1)
    probe = np.minimum(lengths, hour)  # 1-based hour probed per stay
    states = np.zeros((len(lengths), state_size), dtype=np.float32)
    for t in range(int(probe.max()) - 1):
        live = np.flatnonzero(probe > t + 1)  # stays that still have an hour before their probe
        rows = offsets[live] + t
        _, nxt = step(values[rows], elapsed[rows], states[live])
        states[live] = np.asarray(nxt, dtype=np.float32)
    at = offsets[:-1] + probe - 1
    return Probe(values[at].astype(np.float32), elapsed[at].astype(np.float32), states, probe)


def grid(feature: str, points: int = POINTS) -> np.ndarray:
    ref = REFERENCES[feature]
    return np.linspace(ref.normal, ref.abnormal, points).astype(np.float32)


def response_curves(step: Step, probe: Probe, variables=PLAUSIBILITY, points: int = POINTS,
                    max_rows: int = MAX_ROWS) -> dict[str, np.ndarray]:
    """{variable: risk [n, points]}: each probed row with that variable posted at each grid point."""
    n = len(probe.rows)
    curves = {}
    for name in variables:
        values = grid(name, points)
        obs = np.repeat(probe.rows, points, axis=0)
        obs[:, INDEX[name]] = np.tile(values, n)
        risk = _risks(step, obs, np.repeat(probe.elapsed, points, axis=0), np.repeat(probe.states, points, axis=0),
                      max_rows)
        curves[name] = risk.reshape(n, points)
    return curves


def summarize(curves: dict[str, np.ndarray], points: int = POINTS) -> dict[str, dict]:
    """Per variable: the shares that move the physiological and the wrong way, the median risk
    ratio abnormal / normal, and the median ratio (with its quartiles) along the grid."""
    out = {}
    for name, risk in curves.items():
        ref = REFERENCES[name]
        normal, abnormal = risk[:, 0], risk[:, -1]
        ratio = risk / np.maximum(normal[:, None], 1e-12)
        out[name] = {
            "unit": ref.unit, "system": ref.system, "normal": ref.normal, "abnormal": ref.abnormal,
            "direction": ref.direction, "grid": [float(v) for v in grid(name, points)],
            "patients": int(len(risk)),
            "share_physiological": float(np.mean(abnormal > normal)),
            "share_wrong_way": float(np.mean(abnormal < normal)),
            "median_risk_ratio": float(np.median(ratio[:, -1])),
            "median_risk_normal": float(np.median(normal)),
            "median_risk_abnormal": float(np.median(abnormal)),
            "ratio_median_by_point": [float(v) for v in np.median(ratio, axis=0)],
            "ratio_q25_by_point": [float(v) for v in np.quantile(ratio, 0.25, axis=0)],
            "ratio_q75_by_point": [float(v) for v in np.quantile(ratio, 0.75, axis=0)],
        }
    return out


def failures(variables: dict[str, dict], max_wrong_way: float = MAX_WRONG_WAY) -> dict[str, float]:
    """{variable: share moving the wrong way} for every variable over the limit."""
    return {name: v["share_wrong_way"] for name, v in variables.items() if v["share_wrong_way"] > max_wrong_way}


def check(result: dict, max_wrong_way: float = MAX_WRONG_WAY) -> None:
    """Raise ImplausibleModelError naming each variable that moves the wrong way in more than
    `max_wrong_way` of patients. Only a validation-split record may gate (test is for the record)."""
    if result.get("split") != "validation":
        raise ValueError(f"the plausibility gate reads the validation split, got a {result.get('split')!r} record")
    bad = failures(result["variables"], max_wrong_way)
    if bad:
        listed = ", ".join(f"{k} {v:.1%}" for k, v in sorted(bad.items(), key=lambda kv: -kv[1]))
        raise ImplausibleModelError(
            f"{result['model']} v{result['version']}: abnormal values lower the risk in more than "
            f"{max_wrong_way:.0%} of {result['stays']} validation patients for {listed} "
            f"(`python -m training sepsis plausibility` writes the curves)")


def explanation_directions(step: Step, memory, probe: Probe) -> dict:
    """Of the clearly abnormal values the step reads at each probed row (posted or carried),
    the share that each explanation method gives a negative contribution, among all 40 deltas and
    among the SHOWN leading ones the service lists (`top_contributions`)."""
    from models.explain import (CLINICAL_SYSTEMS, SHOWN, STALE_HOURS, by_system, latest_values, system_deltas,
                                top_contributions, unmeasured_deltas, withheld_deltas)

    values = latest_values(probe.rows, probe.states, memory)
    abnormal = np.zeros_like(values, dtype=bool)
    for name, (op, limit) in CLEARLY_ABNORMAL.items():
        v = values[:, INDEX[name]]
        with np.errstate(invalid="ignore"):
            abnormal[:, INDEX[name]] = {"<": v < limit, ">": v > limit, ">=": v >= limit}[op]
    out = {"stays": int(len(values)), "clearly_abnormal_values": int(abnormal.sum()),
           "thresholds": {k: f"{op} {limit}" for k, (op, limit) in CLEARLY_ABNORMAL.items()}}
    for baseline in ("missing", "reference"):
        deltas = withheld_deltas(step, probe.rows, probe.elapsed, probe.states, memory=memory, baseline=baseline)
        if baseline == "reference" and memory is not None:  # "not measured" needs the step's memory
            out["unmeasured"] = _unmeasured_summary(
                unmeasured_deltas(step, probe.rows, probe.elapsed, probe.states, memory=memory), deltas, STALE_HOURS)
        lowering = abnormal & (np.round(deltas, 6) < 0)
        out[f"lowering_{baseline}"] = int(lowering.sum())
        out[f"share_lowering_{baseline}"] = float(lowering.sum() / max(abnormal.sum(), 1))
        out[f"by_variable_{baseline}"] = {
            name: [int(lowering[:, INDEX[name]].sum()), int(abnormal[:, INDEX[name]].sum())]
            for name in CLEARLY_ABNORMAL}
        listed = np.zeros_like(abnormal)
        for i in range(len(values)):
            for item in top_contributions(deltas[i], values[i], SHOWN):
                listed[i, INDEX[item["feature"]]] = True
        if baseline == "reference":  # each organ system holding a clearly abnormal value, replaced together
            systems = system_deltas(step, probe.rows, probe.elapsed, probe.states, memory=memory)
            with_abnormal = by_system(abnormal)
            down = with_abnormal & (np.round(systems, 6) < 0)
            out["systems_reference"] = {
                "systems_with_clearly_abnormal_values": int(with_abnormal.sum()), "lowering": int(down.sum()),
                "share_lowering": float(down.sum() / max(with_abnormal.sum(), 1)),
                "by_system": {name: [int(down[:, g].sum()), int(with_abnormal[:, g].sum())]
                              for g, name in enumerate(CLINICAL_SYSTEMS) if with_abnormal[:, g].any()}}
        shown, shown_lowering = abnormal & listed, lowering & listed
        out[f"shown_{baseline}"] = {"listed": SHOWN, "clearly_abnormal_values": int(shown.sum()),
                                    "lowering": int(shown_lowering.sum()),
                                    "share_lowering": float(shown_lowering.sum() / max(shown.sum(), 1)),
                                    "by_variable": {name: [int(shown_lowering[:, INDEX[name]].sum()),
                                                           int(shown[:, INDEX[name]].sum())]
                                                    for name in CLEARLY_ABNORMAL}}
    return out


def _unmeasured_summary(unmeasured: np.ndarray, deltas: np.ndarray, stale_hours: float) -> dict:
    """How much "not measured" matters at these rows, beside the values' own contributions."""
    clinical = np.abs(np.where(np.isfinite(NORMAL), deltas, 0.0)).max(axis=1)
    present = unmeasured != 0
    biggest = np.abs(unmeasured).max(axis=1)
    by_variable = {}
    for j in np.flatnonzero(present.any(axis=0)):
        d = unmeasured[present[:, j], j]
        by_variable[FEATURES[j]] = {"rows": int(len(d)), "median_delta": float(np.median(d)),
                                    "share_raising": float(np.mean(d > 0))}
    return {"stale_hours": stale_hours,
            "rows_where_it_exceeds_every_value_contribution": int(np.sum(biggest > clinical)),
            "share_raising": float(np.mean(unmeasured[present] > 0)) if present.any() else None,
            "by_variable": by_variable}


def measure(runtime, cohort, split: str, max_stays: int | None = None, seed: int = 0,
            explanations: int = 0) -> dict:
    """The plausibility record of a shipped step (`models.runtime.StepRuntime`) on a cohort (one
    split's stays), optionally on a random subset of `max_stays` of them, and the direction of
    explanations on the first `explanations` of those stays."""
    indices = np.arange(len(cohort))
    if max_stays is not None and max_stays < len(cohort):
        indices = np.sort(np.random.default_rng(seed).choice(len(cohort), max_stays, replace=False))
    sub = cohort.subset(indices)

    def step(obs, elapsed, state):
        return runtime._run(np.ascontiguousarray(obs, dtype=np.float32),
                            np.ascontiguousarray(elapsed, dtype=np.float32).reshape(-1, 1),
                            np.ascontiguousarray(state, dtype=np.float32))

    probe = probe_rows(step, runtime.state_size, sub.values, sub.offsets)
    variables = summarize(response_curves(step, probe))
    result = {
        "model": runtime.name, "version": runtime.version, "split": split, "stays": int(len(sub)),
        "stays_in_split": int(len(cohort)), "subset_seed": seed if len(sub) < len(cohort) else None,
        "probe": f"each stay streamed through the ONNX step to hour {HOUR} (its last hour if shorter); that "
                 f"row re-scored with one variable posted at {POINTS} points from normal to abnormal, "
                 "everything else as measured",
        "max_wrong_way": MAX_WRONG_WAY,
        "variables": variables,
        "failing": failures(variables),
    }
    if explanations:
        from models.explain import find_memory

        n = min(explanations, len(sub))
        # explanations are read at each stay's last hour (what the ward sees last), not hour 12
        first = sub.subset(np.arange(n))
        last = probe_rows(step, runtime.state_size, first.values, first.offsets, hour=int(first.lengths.max()))
        result["explanations"] = {"hour": "each stay's last hour",
                                  **explanation_directions(step, find_memory(step, runtime.state_size), last)}
    return result


def plot(result: dict, path: Path) -> None:
    """One small-multiples figure: per variable, the median risk ratio (IQR band) along the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    names = list(result["variables"])
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        v = result["variables"][name]
        x = v["grid"]
        ax.fill_between(x, v["ratio_q25_by_point"], v["ratio_q75_by_point"], alpha=0.25, color="tab:blue")
        ax.plot(x, v["ratio_median_by_point"], color="tab:blue", marker="o", ms=3)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
        wrong = v["share_wrong_way"]
        ax.set_title(f"{name}: {v['share_physiological']:.0%} up, {wrong:.0%} down",
                     fontsize=9, color="tab:red" if wrong > result["max_wrong_way"] else "black")
        ax.set_xlabel(f"{name} ({v['unit']})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("risk / risk at normal", fontsize=8)
    fig.suptitle(f"{result['model']} v{result['version']}: risk as one variable moves from normal to abnormal "
                 f"({result['split']}, {result['stays']} stays; median and IQR)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out: Path) -> Path:
    """plausibility_<split>.json and plausibility_<split>.png in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"plausibility_{result['split']}.json").write_text(json.dumps(result, indent=2))
    plot(result, out / f"plausibility_{result['split']}.png")
    return out


REPOSITORY_MODELS = Path(__file__).resolve().parents[2] / "models"


def gate_applies(mode: str, out: Path) -> bool:
    """Export's `--plausibility-gate`: "on", "off", or "auto" = on for a version exported into this
    repository's models/ folder (what the service ships), off elsewhere (fixtures, experiments)."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"--plausibility-gate must be auto, on or off, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    return Path(out).resolve().is_relative_to(REPOSITORY_MODELS)


@dataclass(frozen=True)
class Gate:
    """What export needs to gate a model: the archive, its patient split seed and the stay subset."""
    data: Path
    split_seed: int = 0
    max_stays: int | None = 1000
    cache_dir: Path = Path(".cache/sepsis")
    record: Path | None = None   # where to write the record (JSON + PNG); None: nowhere

    def __call__(self, model_dir: Path) -> dict:
        """Measure the exported step in `model_dir` on the validation split; raise if it fails."""
        from models.runtime import StepRuntime
        from training.sepsis.data import load_cohort
        from training.sepsis.splits import patient_split

        runtime = StepRuntime.open(model_dir, device="cpu")
        cohort = load_cohort(self.data, cache_dir=self.cache_dir, progress=False)
        val = cohort.subset(patient_split(cohort, seed=self.split_seed).val)
        result = measure(runtime, val, "validation", max_stays=self.max_stays)
        if self.record is not None:
            write(result, self.record)
        check(result)
        return result



def _model_dir(ref: str) -> Path:
    if Path(ref).is_dir():
        return Path(ref)
    from models.registry import ModelNotFoundError, resolve

    name, _, version = ref.partition("/")
    try:
        return resolve(name, version or None).path
    except ModelNotFoundError as err:
        raise ValueError(f"--model {ref}: {err}") from None


def run_cli(a) -> int:
    """`python -m training sepsis plausibility`: the record (JSON + PNG) of one split."""
    from models.runtime import StepRuntime
    from training.sepsis.data import load_cohort
    from training.sepsis.splits import patient_split

    runtime = StepRuntime.open(_model_dir(a.model_ref), device="cpu")
    cohort = load_cohort(a.data, cache_dir=Path(a.cache_dir))
    split = patient_split(cohort, seed=a.split_seed)
    part = cohort.subset(split.val if a.split == "validation" else split.test)
    result = measure(runtime, part, a.split, max_stays=a.max_stays or None, seed=a.seed,
                     explanations=a.explanations)
    result["split_seed"] = a.split_seed
    out = Path(a.out) if a.out else Path("results/sepsis/plausibility") / f"{runtime.name}-{runtime.version}"
    write(result, out)
    summary = {k: round(v["share_wrong_way"], 3) for k, v in result["variables"].items()}
    print(json.dumps({"model": f"{runtime.name}-{runtime.version}", "split": a.split, "stays": result["stays"],
                      "share_wrong_way": summary, "failing": sorted(result["failing"])}))
    if "explanations" in result:
        e = result["explanations"]
        print(json.dumps({**{k: e[k] for k in ("stays", "clearly_abnormal_values", "share_lowering_missing",
                                               "share_lowering_reference")},
                          "shown_share_lowering_reference": e["shown_reference"]["share_lowering"]}))
    return 0
