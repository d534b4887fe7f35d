"""Operating points of a shipped model: thresholds chosen on the validation split, each read once
on the test split for the record, the re-alert policy chosen with them, and risk bands that give a
risk its measured meaning.

Every alarm figure is `models.alarm_figures`' (the one definition the service shows too), over
the alarms of `models.alarm_policy` (the code the service is to run): with nobody acting, one alarm per
episode (a run of hours with risk >= threshold); with the re-alert policy, every alarm
acknowledged at once (`training.sepsis.ward_simulation`). The utility is the challenge's.

Points: the utility optimum (`metrics.choose_threshold`), the lowest threshold whose validation
alarm rate is within each budget, the highest threshold whose validation sensitivity reaches each
target, and the default: the policy's fewest alarms per patient-day that still catch
`ward_simulation.IN_WINDOW` of the septic stays in the window, among the policies that re-alert at
least `ward_simulation.BAR` of the stays dismissed early whose risk then doubled in the window. A
threshold sits halfway between two adjacent validation risks, like the card's, so float32
differences between runtimes do not flip an alarm.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from models.alarm_figures import DEFINITIONS as FIGURE_DEFINITIONS
from models.alarm_figures import first_measured
from models.alarm_policy import SILENT_FOR_GOOD, AlarmPolicy
from models.operating_points import AlarmPolicySettings, OperatingPoints, band_words, percent
from training.sepsis import metrics as M
from training.sepsis import ward_simulation as W
from training.sepsis.batching import per_stay

# The event a risk band counts is the utility's reward window, read from utility_table's own
# defaults so the two cannot drift apart.
_UTILITY_DEFAULTS = inspect.signature(M.utility_table).parameters
DT_EARLY = float(_UTILITY_DEFAULTS["dt_early"].default)   # -12: hours before onset
DT_LATE = float(_UTILITY_DEFAULTS["dt_late"].default)     # +3: hours after onset
EVENT = f"in the {-DT_EARLY:g} h before sepsis onset or the {DT_LATE:g} h after it"

BUDGETS = (0.1, 0.2, 0.5)
SENSITIVITIES = (0.8, 0.9)
# Band edges at these quantiles of the validation hours' risk: most hours are low, so the bands
# are finer where alarms are decided.
BAND_QUANTILES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)

DEFINITIONS = {
    **FIGURE_DEFINITIONS,
    "utility": "PhysioNet/CinC 2019 normalised utility of risk >= threshold",
    "policy_alarms_per_patient_day": "alarms per patient-day with the table's alarm_policy at the point's threshold "
                                     "and every alarm acknowledged the hour it is raised (raised, re-alerts, escalations)",
    "policy_caught_in_window": "caught_in_window with the same policy and ward (an acknowledged alarm no longer counts "
                               "as open, so a stay is caught only by an alarm raised inside the window)",
    "risk_bands": f"validation patient-hours by risk; validation_ppv = share of them {EVENT} "
                  f"(hours of septic stays later than {DT_LATE:g} h after onset are left out, as the utility leaves them unscored)",
}
POLICY_POINT = f"in_window_{W.IN_WINDOW:g}_with_policy"


class Scored:
    """One split's labels and risks per stay, with what every threshold's figures need. `starts`:
    each stay's first measured row (`models.alarm_figures.first_measured`, `scored` passes it):
    every alarm figure skips the hours before it; the utility scores every row. None: each stay
    from its first row (labels and risks without their rows at hand)."""

    def __init__(self, labels: Sequence[np.ndarray], probs: Sequence[np.ndarray],
                 starts: Sequence[int] | None = None):
        self.labels, self.probs = list(labels), list(probs)
        self.starts = None if starts is None else [int(x) for x in starts]
        if self.starts is not None and len(self.starts) != len(self.labels):
            raise ValueError(f"{len(self.starts)} starts for {len(self.labels)} stays")
        self.risks = M.pooled(self.labels, self.probs)[1]  # checks stays and hours match
        self._table = M.utility_table(self.labels)

    def alarms(self, threshold: float) -> dict:
        return M.alarm_metrics(self.labels, self.probs, threshold, self.starts)

    def figures(self, threshold: float, policy: AlarmPolicySettings | None = None) -> dict:
        """The contract's figures (models.operating_points.PointFigures) at `threshold`; with a
        policy, also its figures when every alarm is acknowledged at once."""
        a = self.alarms(threshold)
        utility = float(self._table.normalise(self._table.utility(self.risks >= threshold)))
        out = {"sensitivity": a["septic_alarmed_before_onset"], "ppv": a["alarmed_stays_septic"],
               "alarms_per_patient_day": a["alarms_per_patient_day"],
               "median_lead_time_hours": a["median_lead_time_hours"],
               "utility": None if np.isnan(utility) else utility,
               "caught_in_window": a["caught_in_window"],
               "median_lead_time_in_window_hours": a["median_lead_time_in_window_hours"],
               "ppv_alarms": a["ppv_alarms"], "red_share": a["red_share"]}
        if policy is not None:
            f = W.ward_figures(self.labels, self.probs, policy.at(threshold), "acknowledge_all", self.starts)
            out.update(policy_alarms_per_patient_day=f.alarms_per_patient_day,
                       policy_caught_in_window=f.caught_in_window)
        return out


# ---------------------------------------------------------------- choosing thresholds

def _between(levels: np.ndarray, k: int) -> float:
    """A threshold alarming exactly on risks >= levels[k]: halfway to the next lower risk."""
    if k <= 0:
        return float(levels[0]) / 2 if len(levels) else 0.0
    if k >= len(levels):
        return float(levels[-1]) + 1e-6 * max(1.0, abs(float(levels[-1])))
    mid = (float(levels[k]) + float(levels[k - 1])) / 2
    if np.float32(mid) <= np.float32(levels[k - 1]):  # adjacent float32 risks: the midpoint would not survive
        mid = float(levels[k])
    return mid


def _first_true(ok: Callable[[int], bool], lo: int, hi: int) -> int:
    """The lowest k in [lo, hi] with ok(k), given not ok(lo - 1) and ok(hi); ok is evaluated only
    at the k it returns and on the way, so the answer is always checked."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def threshold_for_budget(val: Scored, budget: float) -> float | None:
    """The lowest threshold whose validation alarm rate is at most `budget` alarms per patient-day
    (the rate is not strictly monotone, so this is a boundary found by bisection, checked at the
    returned threshold). None when even alarming only on the top risk exceeds the budget."""
    levels = np.unique(val.risks)

    def rate(t: float) -> float:
        return val.alarms(t)["alarms_per_patient_day"] or 0.0

    if rate(_between(levels, 0)) <= budget:
        return _between(levels, 0)
    k = _first_true(lambda k: rate(float(levels[k])) <= budget, 1, len(levels) - 1)
    if rate(float(levels[k])) > budget:
        return None
    t = _between(levels, k)
    return t if rate(t) <= budget else float(levels[k])


def threshold_for_sensitivity(val: Scored, target: float) -> float | None:
    """The highest threshold whose validation sensitivity is at least `target` (sensitivity only
    falls as the threshold rises). None when no threshold reaches it."""
    levels = np.unique(val.risks)

    def sens(t: float) -> float:
        return val.alarms(t)["septic_alarmed_before_onset"] or 0.0

    if not len(levels) or sens(float(levels[0])) < target:
        return None
    # the first level that misses the target (len(levels): none misses); the one below reaches it
    k = _first_true(lambda k: k == len(levels) or sens(float(levels[k])) < target, 1, len(levels))
    return _between(levels, k - 1)


def choose_points(val: Scored, budgets: Sequence[float] = BUDGETS,
                  sensitivities: Sequence[float] = SENSITIVITIES, progress: bool = True) -> list[dict]:
    """[{"id", "label", "threshold"}] chosen on validation only; unreachable targets are left out."""
    wanted = ([("utility_optimum", "utility optimum", None)]
              + [(f"alarms_per_day_{b:g}", f"at most {b:g} alarms per patient-day", ("budget", b)) for b in budgets]
              + [(f"sensitivity_{s:g}", f"sensitivity at least {s:g}", ("sensitivity", s)) for s in sensitivities])
    points = []
    for point_id, label, rule in tqdm(wanted, desc="choosing thresholds on validation", unit="point",
                                      disable=not progress):
        if rule is None:
            threshold, _ = M.choose_threshold(val.labels, val.probs)
        elif rule[0] == "budget":
            threshold = threshold_for_budget(val, rule[1])
        else:
            threshold = threshold_for_sensitivity(val, rule[1])
        if threshold is not None and 0.0 <= threshold <= 1.0:
            points.append({"id": point_id, "label": label, "threshold": float(threshold)})
    return points


# ---------------------------------------------------------------- the re-alert policy and the default

SWEEP_QUANTILES = np.linspace(0.6, 0.995, 64)  # where the sweep looks for each policy's threshold


def choose_policy(val: Scored, progress: bool = True) -> tuple[AlarmPolicySettings, float, list[dict]] | None:
    """(policy, default threshold, sweep rows) chosen on validation (`ward_simulation.sweep` on a
    coarse grid of thresholds, `choose` among them, then the threshold refined between the grid's
    neighbours); None when no policy setting reaches the bar."""
    levels = np.unique(val.risks)
    coarse = levels[np.unique(np.searchsorted(levels, np.quantile(val.risks, SWEEP_QUANTILES)).clip(0, len(levels) - 1))]
    with tqdm(total=1, desc="re-alert policy sweep on validation", disable=not progress) as bar:
        rows = W.sweep(val.labels, val.probs, coarse, starts=val.starts)
        bar.update(1)
    best = W.choose(rows)
    if best is None:
        return None
    settings = {"rise_factor": best["rise_factor"], "lockout_hours": best["lockout_hours"]}
    k = int(np.searchsorted(coarse, best["threshold"]))
    upper = coarse[k + 1] if k + 1 < len(coarse) else np.inf
    fine = levels[(levels >= best["threshold"]) & (levels < upper)]
    t = W.highest_threshold_catching(val.labels, val.probs, fine, settings, starts=val.starts)
    threshold = _between(levels, int(np.searchsorted(levels, t)))
    chosen_by = (f"on validation, of rise factors {', '.join('off' if r is None else f'{r:g}' for r in W.RISE_FACTORS)} "
                 f"x lockouts {', '.join(f'{h:g} h' for h in W.LOCKOUTS)}, each at its highest threshold catching "
                 f"{W.IN_WINDOW:g} of septic stays in the window with every alarm acknowledged: the fewest alarms per "
                 f"patient-day among those re-alerting at least {W.BAR:g} of the septic stays acknowledged 12 h or more "
                 f"before onset whose risk then reached 2x the acknowledged risk in the window")
    return AlarmPolicySettings(**settings, tiers=[], chosen_by=chosen_by), threshold, rows


def policy_record(val: Scored, test: Scored, policy: AlarmPolicySettings, points: OperatingPoints,
                  rows: list[dict]) -> dict:
    """What the policy does at every point on validation, the test split read once at each, and
    the behaviour it replaced (an acknowledgement lasting the stay) beside it."""
    at = []
    for p in points.points:
        entry = {"id": p.id, "threshold": p.threshold}
        for name, split in (("validation", val), ("test", test)):
            entry[name] = {"policy": W.policy_row(split.labels, split.probs, policy.at(p.threshold), split.starts),
                           "silent_for_good": W.policy_row(split.labels, split.probs,
                                                           AlarmPolicy(p.threshold, **SILENT_FOR_GOOD), split.starts)}
        at.append(entry)
    # tiers were left out of the sweep: this measures what the stricter points as tiers would add
    default = points.default()
    tiers = tuple(sorted({p.threshold for p in points.points if p.threshold > default.threshold}))
    with_tiers = policy.model_copy(update={"tiers": list(tiers)})
    tier_check = [W.policy_row(val.labels, val.probs, s.at(default.threshold), val.starts)
                  for s in (policy, with_tiers)]
    return {"policy": json.loads(policy.model_dump_json()), "in_window_target": W.IN_WINDOW, "bar": W.BAR,
            "scenarios": W.__doc__.split("Ward scenarios:", 1)[1].strip(), "sweep_validation": rows, "points": at,
            "tiers_validation": tier_check}


# ---------------------------------------------------------------- risk bands

def event_hours(labels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(counted, event) per hour of all stays concatenated: an event hour lies in the utility's
    window [onset + dt_early, onset + dt_late] of a septic stay; hours after the window are not
    counted (the patient is septic already, the utility does not score them)."""
    flat = M._flatten_labels(labels)
    onset = M._onset_per_stay(flat)[flat.stay]
    with np.errstate(invalid="ignore"):
        rel = flat.hour - onset  # -inf on non-septic stays
    counted = ~(np.isfinite(rel) & (rel > DT_LATE))
    event = np.isfinite(rel) & (rel >= DT_EARLY) & (rel <= DT_LATE)
    return counted, event


def _two_figures(x: float) -> float:
    return float(f"{x:.2g}")


def band_edges(val_risks: np.ndarray, quantiles: Sequence[float] = BAND_QUANTILES) -> list[float]:
    """0, the validation risk at each quantile rounded to two significant figures (readable in
    words), 1; duplicates merged."""
    inner = sorted({_two_figures(q) for q in np.quantile(val_risks, quantiles) if 0.0 < q < 1.0})
    return [0.0] + [e for e in inner if 0.0 < e < 1.0] + [1.0]


def _band_shares(split: Scored, edges: Sequence[float]) -> list[tuple[int, int]]:
    counted, event = event_hours(split.labels)
    p = split.risks[counted]
    e = event[counted]
    which = np.clip(np.searchsorted(np.asarray(edges), p, side="right") - 1, 0, len(edges) - 2)
    hours = np.bincount(which, minlength=len(edges) - 1)
    events = np.bincount(which, weights=e, minlength=len(edges) - 1)
    return [(int(h), int(n)) for h, n in zip(hours, events)]


def risk_bands(val: Scored, test: Scored, edges: Sequence[float] | None = None) -> list[dict]:
    edges = list(edges) if edges is not None else band_edges(val.risks)
    bands = []
    for (lo, hi), (vh, ve), (th, te) in zip(zip(edges, edges[1:]), _band_shares(val, edges), _band_shares(test, edges)):
        share = ve / vh if vh else None
        bands.append({"low": lo, "high": hi, "words": band_words(share, lo, hi, EVENT),
                      "validation_ppv": share, "validation_hours": vh,
                      "test_ppv": te / th if th else None, "test_hours": th})
    return bands


# ---------------------------------------------------------------- the whole table

def operating_points(val: Scored, test: Scored, model: str, version: str, source: dict,
                     budgets: Sequence[float] = BUDGETS, sensitivities: Sequence[float] = SENSITIVITIES,
                     progress: bool = True, records: dict | None = None) -> OperatingPoints:
    """Thresholds and the re-alert policy from `val`; `test` is read once per chosen threshold,
    after all are chosen. `records`, if given, receives the policy record (`policy_record`)."""
    chosen = choose_points(val, budgets, sensitivities, progress)
    picked = choose_policy(val, progress)
    policy, default = None, "utility_optimum"
    if picked is not None:
        policy, threshold, rows = picked
        chosen.append({"id": POLICY_POINT, "threshold": float(threshold),
                       "label": f"catches {W.IN_WINDOW:g} of septic stays in the window with re-alerts (fewest alarms)"})
        default = POLICY_POINT
    points = [{**p, "validation": val.figures(p["threshold"], policy), "test": test.figures(p["threshold"], policy)}
              for p in tqdm(chosen, desc="figures on validation and test", unit="point", disable=not progress)]
    table = OperatingPoints.model_validate({
        "model": model, "version": version, "selected_on": "validation", "definitions": DEFINITIONS,
        "source": source, "points": points, "risk_bands": risk_bands(val, test),
        "default_point": default if default in {p["id"] for p in chosen} else None, "alarm_policy": policy})
    if records is not None and picked is not None:
        records["alarm_policy"] = policy_record(val, test, policy, table, rows)
    return table


def tradeoff_curve(split: Scored, n: int = 60) -> list[dict]:
    """Caught in the window, PPV and alarms per patient-day at thresholds spread over the split's upper
    risks (where the trade-off is), for the plot."""
    qs = 1.0 - np.geomspace(0.5, 2e-4, n)
    rows = []
    for t in np.unique(np.quantile(split.risks, qs)):
        f = split.figures(float(t))
        rows.append({"threshold": float(t), **f})
    return rows


def _cell(x, fmt):
    return "–" if x is None else format(x, fmt)


def markdown_table(points: OperatingPoints) -> str:
    lines = ["| operating point | threshold | split | caught in window | lead in window (h) | PPV (stays) | "
             "PPV (alarms) | alarms / patient-day | red share | with re-alerts: alarms / patient-day | "
             "with re-alerts: caught in window | alarmed before onset (2nd line) | utility |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points.points:
        for name, f in (("validation", p.validation), ("test", p.test)):
            label = f"**{p.label}** (default)" if p.id == points.default_point else p.label
            head = f"{label} | {percent(p.threshold)} ({p.threshold:.4g})" if name == "validation" else " | "
            lines.append(f"| {head} | {name} | {_cell(f.caught_in_window, '.3f')} | "
                         f"{_cell(f.median_lead_time_in_window_hours, '.0f')} | {_cell(f.ppv, '.3f')} | "
                         f"{_cell(f.ppv_alarms, '.3f')} | {_cell(f.alarms_per_patient_day, '.3f')} | "
                         f"{_cell(f.red_share, '.3f')} | {_cell(f.policy_alarms_per_patient_day, '.3f')} | "
                         f"{_cell(f.policy_caught_in_window, '.3f')} | {_cell(f.sensitivity, '.3f')} | "
                         f"{_cell(f.utility, '.3f')} |")
    return "\n".join(lines)


def policy_tables(record: dict) -> str:
    """The sweep (validation) and, at every point, the policy against an acknowledgement that lasts
    the stay, under both ward scenarios (validation, then test read once)."""
    def bar(d):
        de = d["dismissed_early"]
        return (f"{de['new_alarm_in_window']}/{de['rose']} ({_cell(de['share_new_alarm'], '.3f')})",
                f"{de['alarm_open_in_window']}/{de['rose']}")

    lines = ["| rise factor | lockout (h) | threshold | alarms / patient-day | caught in window | "
             "re-alerted in the window (dismissed early, risk doubled) |", "|---|---|---|---|---|---|"]
    for r in record["sweep_validation"]:
        a = r["acknowledge_all"]
        lines.append(f"| {'off' if r['rise_factor'] is None else format(r['rise_factor'], 'g')} | "
                     f"{r['lockout_hours']:g} | {percent(r['threshold'])} | {a['alarms_per_patient_day']:.3f} | "
                     f"{_cell(a['caught_in_window'], '.3f')} | {bar(a)[0]} |")
    for r in record.get("tiers_validation", []):
        a = r["acknowledge_all"]
        tiers = ", ".join(percent(t) for t in r["tiers"]) or "none"
        lines.append(f"| {'off' if r['rise_factor'] is None else format(r['rise_factor'], 'g')} | "
                     f"{r['lockout_hours']:g}, tiers: {tiers} | {percent(r['threshold'])} | "
                     f"{a['alarms_per_patient_day']:.3f} | {_cell(a['caught_in_window'], '.3f')} | {bar(a)[0]} |")
    sweep = "\n".join(lines)
    lines = ["| point | split | policy | ward | alarms / patient-day | caught in window | "
             "dismissed early, risk doubled: new alarm in window | ...or one open when it began |",
             "|---|---|---|---|---|---|---|---|"]
    for p in record["points"]:
        for split in ("validation", "test"):
            for policy in ("policy", "silent_for_good"):
                row = p[split][policy]
                for ward in ("acknowledge_all", "dismiss_early"):
                    f = row[ward]
                    new, held = bar(f)
                    lines.append(f"| {p['id']} ({percent(p['threshold'])}) | {split} | "
                                 f"{'re-alerts' if policy == 'policy' else 'silent for good'} | {ward} | "
                                 f"{f['alarms_per_patient_day']:.3f} | {_cell(f['caught_in_window'], '.3f')} | "
                                 f"{new} | {held} |")
    return sweep, "\n".join(lines)


def bands_table(points: OperatingPoints) -> str:
    lines = ["| risk | validation hours | share in the window (validation) | test hours | share (test) |",
             "|---|---|---|---|---|"]
    for b in points.risk_bands:
        vp = "–" if b.validation_ppv is None else f"{b.validation_ppv:.3f}"
        tp = "–" if b.test_ppv is None else f"{b.test_ppv:.3f}"
        lines.append(f"| {percent(b.low)}–{percent(b.high)} | {b.validation_hours} | {vp} | {b.test_hours} | {tp} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- running the model

def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stream_risks(runtime, cohort, chunk: int = 1024, progress: bool = True, what: str = "") -> np.ndarray:
    """Risk of every row of `cohort` through the ONNX step (the runtime's lockstep
    `run_sequences`), `chunk` stays at a time so the progress bar moves."""
    from models.contract import elapsed_hours

    elapsed = elapsed_hours(cohort.values, cohort.offsets)
    stays = list(zip(per_stay(cohort.values, cohort.offsets), per_stay(elapsed, cohort.offsets)))
    out = []
    with tqdm(total=len(stays), desc=f"{runtime.name}-{runtime.version} over {len(stays)} {what} stays".replace("  ", " "), unit="stay",
              disable=not progress) as bar:
        for i in range(0, len(stays), chunk):
            out.extend(runtime.run_sequences(stays[i:i + chunk]))
            bar.update(len(stays[i:i + chunk]))
    return np.concatenate(out) if out else np.empty(0, np.float32)


def cached_risks(runtime, cohort, cache_dir: Path, tag: str, progress: bool = True, what: str = "") -> np.ndarray:
    """stream_risks, kept in `cache_dir` under the model file's and the rows' fingerprints."""
    rows = hashlib.sha256(cohort.patient_ids.astype(str).tobytes() + cohort.offsets.tobytes()).hexdigest()[:16]
    key = f"{runtime.name}-{runtime.version}-{file_sha256(runtime.model_dir / 'model.onnx')[:16]}-{cohort.source_sha256[:16]}-{rows}-{tag}"
    path = Path(cache_dir) / f"risks-{key}.npy"
    if path.exists():
        risks = np.load(path)
        if len(risks) == len(cohort.values):
            return risks
    risks = stream_risks(runtime, cohort, progress=progress, what=what)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, risks)
    return risks


def scored(cohort, risks: np.ndarray) -> Scored:
    """A split's Scored, each stay monitored from its first measured row."""
    return Scored(per_stay(cohort.labels, cohort.offsets), per_stay(risks, cohort.offsets),
                  first_measured(cohort.values, cohort.offsets))


def write_outputs(points: OperatingPoints, curves: dict, model_dir: Path | None, out: Path, command: str,
                  overwrite: bool = False, records: dict | None = None) -> list[Path]:
    """operating_points.json into the model folder (refusing to replace it or the folder's README
    unless `overwrite`), and the record (json with curves, plot, the policy record) into `out`."""
    written = []
    if model_dir is not None:
        target = Path(model_dir) / "operating_points.json"
        for existing in (target, Path(model_dir) / "README.md"):
            if existing.exists() and not overwrite:
                raise FileExistsError(f"{existing} exists; pass --overwrite to replace it")
        target.write_text(points.to_json() + "\n", encoding="utf-8")
        written.append(target)
    out.mkdir(parents=True, exist_ok=True)
    record = {**json.loads(points.to_json()), "curves": curves, "command": command}
    (out / "operating_points.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    written.append(out / "operating_points.json")
    if records and "alarm_policy" in records:
        target = out / "alarm_policy.json"
        target.write_text(json.dumps({**records["alarm_policy"], "command": command}, indent=2) + "\n", encoding="utf-8")
        written.append(target)
    written.append(tradeoff_png(points, curves, out / "tradeoff.png"))
    return written


def tradeoff_png(points: OperatingPoints, curves: dict, path: Path) -> Path:
    """Caught in the window and PPV against alarms per patient-day on validation, each operating point
    marked with its validation (filled) and test (hollow) figures."""
    from training.sepsis.plots import save_figure  # first: it sets the Agg backend (files only)

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    curve = [r for r in curves["validation"] if r["alarms_per_patient_day"]]
    x = [r["alarms_per_patient_day"] for r in curve]
    ax.plot(x, [r["caught_in_window"] for r in curve], color="tab:blue",
            label="septic stays caught in [onset - 12 h, onset + 3 h] (validation)")
    ax.plot(x, [r["sensitivity"] for r in curve], color="tab:blue", linestyle=":",
            label="second line: alarmed any time before onset (validation)")
    ax.plot(x, [r["ppv"] if r["ppv"] is not None else np.nan for r in curve], color="tab:orange",
            label="PPV, per alarmed stay (validation)")
    markers = "osD^vP*X"
    for i, p in enumerate(points.points):
        m = markers[i % len(markers)]
        for split, fill in (("validation", True), ("test", False)):
            f = getattr(p, split)
            if f.alarms_per_patient_day is None:
                continue
            for value, colour in ((f.caught_in_window, "tab:blue"), (f.ppv, "tab:orange")):
                if value is not None:
                    ax.scatter([f.alarms_per_patient_day], [value], marker=m, s=55, zorder=3,
                               facecolors=colour if fill else "white", edgecolors=colour)
        ax.scatter([], [], marker=m, color="grey", label=f"{p.label} (threshold {percent(p.threshold)})")
    ax.scatter([], [], marker="o", facecolors="white", edgecolors="grey", label="hollow: the same threshold on test")
    ax.set_xscale("log")
    ax.set_xlabel("alarms per patient-day (alarm episodes / patient-days)")
    ax.set_ylabel("share")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{points.model} {points.version}: alarms against septic stays caught in the window and PPV (thresholds chosen on validation)", fontsize=9)
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(0.0, 0.47), framealpha=0.95)
    return save_figure(fig, path)


# ---------------------------------------------------------------- the command

def measure(model_dir: Path, data: Path, split_seed: int = 0, cache_dir: Path = Path(".cache/sepsis"),
            device: str = "cpu", budgets: Sequence[float] = BUDGETS,
            sensitivities: Sequence[float] = SENSITIVITIES, progress: bool = True) -> tuple[OperatingPoints, dict, dict]:
    """Stream the validation and test stays of `data` (patient split `split_seed`) through the
    model's ONNX step and build its operating points; also the validation trade-off curve and the
    re-alert policy's record."""
    from models.runtime import StepRuntime
    from training.sepsis.data import load_cohort
    from training.sepsis.splits import patient_split

    runtime = StepRuntime.open(Path(model_dir), device=device)
    cohort = load_cohort(data, cache_dir=Path(cache_dir), progress=progress)
    split = patient_split(cohort, seed=split_seed)
    parts = {}
    for name, idx in (("validation", split.val), ("test", split.test)):
        sub = cohort.subset(idx)
        risks = cached_risks(runtime, sub, Path(cache_dir) / "operating_points", f"{name}-s{split_seed}", progress, name)
        parts[name] = scored(sub, risks)
    split_words = f"patient split seed {split_seed} (70/15/15 by patient, stratified by hospital and sepsis)"
    return _measured(runtime, cohort, data, split_words, parts["validation"], parts["test"], budgets,
                     sensitivities, progress)


def _measured(runtime, cohort, data: Path, split_words: str, val: Scored, test: Scored, budgets: Sequence[float],
              sensitivities: Sequence[float], progress: bool) -> tuple[OperatingPoints, dict, dict]:
    """The operating points of `val` (where they are chosen) and `test`, with their record's source,
    the validation trade-off curve and the re-alert policy's record: what `measure` and
    `measure_crossfit` share once each has its two splits scored."""
    source = {"data": Path(data).name, "data_sha256": cohort.source_sha256, "split": split_words,
              "validation_stays": len(val.labels), "validation_hours": int(sum(len(x) for x in val.labels)),
              "test_stays": len(test.labels), "test_hours": int(sum(len(x) for x in test.labels)),
              "model_sha256": file_sha256(runtime.model_dir / "model.onnx"), "provider": runtime.provider,
              "card_threshold": runtime.threshold}
    records: dict = {}
    points = operating_points(val, test, runtime.name, runtime.version, source, budgets, sensitivities, progress,
                              records)
    return points, {"validation": tradeoff_curve(val)}, records


def measure_crossfit(model_dir: Path, crossfit: Path, data: Path, cache_dir: Path = Path(".cache/sepsis"),
                     device: str = "cpu", budgets: Sequence[float] = BUDGETS,
                     sensitivities: Sequence[float] = SENSITIVITIES,
                     progress: bool = True) -> tuple[OperatingPoints, dict, dict]:
    """A cross-fitted model's operating points: chosen on its out-of-fold predictions (each member of
    `<crossfit>/ensemble.pt` on the fold it did not train on, calibrated as the shipped step is), the
    test split streamed through the shipped ONNX step. Its validation stays trained four of the five
    members, so the patient split's validation figures would flatter it: this is `measure` for such models."""
    import torch

    from models.runtime import StepRuntime
    from training.sepsis.batching import CohortTensors
    from training.sepsis.crossfit import fold_models
    from training.sepsis.data import load_cohort
    from training.sepsis.ensemble import load_model
    from training.sepsis.predict import predict_stays, stay_labels
    from training.sepsis.splits import crossfit_split, out_of_fold_order

    record = json.loads((Path(crossfit) / "metrics.json").read_text())
    ensemble = load_model(torch.load(Path(crossfit) / "ensemble.pt", map_location="cpu")).to(device).eval()
    k, seed = record["folds"], record["config"]["split_seed"]
    if len(ensemble.members) % k:
        raise ValueError(f"{crossfit}: {len(ensemble.members)} members for {k} folds")
    runtime = StepRuntime.open(Path(model_dir), device=device)
    cohort = load_cohort(data, cache_dir=Path(cache_dir), progress=progress)
    if cohort.source_sha256 != record["data_sha256"]:
        raise ValueError(f"{data}: not the archive {crossfit} was trained on")
    splits = [crossfit_split(cohort, f, k, seed) for f in range(k)]
    tensors = CohortTensors.from_cohort(cohort, device)
    labels, risks = [], []
    identity = torch.tensor([1.0, 0.0])
    if not all(torch.equal(m.calibration.cpu(), identity) for m in ensemble.members):
        raise ValueError(f"{crossfit}: members carry their own calibration; the ensemble's is fitted on raw logits")
    with torch.no_grad():
        for member, split in zip(fold_models(list(ensemble.members), k, ensemble.weights), splits):
            labels += stay_labels(tensors, split.val)
            # the fold's (mean) logit through the ensemble's calibration, fitted on these out-of-fold logits
            risks += [ensemble.risk(torch.logit(torch.from_numpy(p).double(), eps=1e-7)).float().numpy()
                      for p in predict_stays(member, tensors, split.val)]
    tsub = cohort.subset(splits[0].test)
    # the cache key names the model file and the rows: `measure`'s test risks of this model are these
    test = scored(tsub, cached_risks(runtime, tsub, Path(cache_dir) / "operating_points", f"test-s{seed}", progress,
                                     "test"))
    split_words = (f"{k}-fold cross-fitting over patient split seed {seed}'s training + validation stays; "
                   "'validation' figures are out-of-fold (each stay scored by the member that did not train on it)")
    # each out-of-fold stay monitored from its first measured row, in the order its labels came
    starts = out_of_fold_order(first_measured(cohort.values, cohort.offsets), splits)
    return _measured(runtime, cohort, data, split_words, Scored(labels, risks, starts), test, budgets, sensitivities,
                     progress)


def _policy_section(points: OperatingPoints, records: dict | None, record: str) -> str:
    if not records or "alarm_policy" not in records or points.alarm_policy is None:
        return ""
    sweep, at_points = policy_tables(records["alarm_policy"])
    pol = points.alarm_policy
    default = points.default()
    f = default.validation
    return f"""
## The re-alert policy and the default point

An acknowledged or dismissed alarm comes back (`models.alarm_policy`, the code the service is to run):
{pol.at(default.threshold).describe()}. Chosen {pol.chosen_by}.

**Default: {default.label}, threshold {percent(default.threshold)}.** On validation, with every alarm
acknowledged the hour it is raised, it costs {f.policy_alarms_per_patient_day:.3f} alarms per patient-day and
catches {f.policy_caught_in_window:.3f} of septic stays in [onset - 12 h, onset + 3 h]; left unacknowledged its
episodes are {f.alarms_per_patient_day:.3f} per patient-day and keep {f.red_share:.3f} of patient-hours red.
Test, read once: {default.test.policy_alarms_per_patient_day:.3f} alarms per patient-day, {default.test.policy_caught_in_window:.3f} caught.

The sweep on validation (ward: every alarm acknowledged at once; each setting at its highest
threshold catching {W.IN_WINDOW:g} of septic stays in the window; a setting missing here reaches that
at no threshold of the sweep's grid; the last two rows: the chosen setting at the default threshold
without and with the stricter points' thresholds as escalation tiers):

{sweep}

At every point, the policy against an acknowledgement that lasts the stay (the behaviour it
replaced), under both scripted wards (`acknowledge_all`: every alarm acknowledged at once;
`dismiss_early`: each stay's first alarm dismissed at once when it came 12 h or more before onset,
later alarms left open). "Dismissed early, risk doubled": septic stays whose first alarm was
acknowledged or dismissed 12 h or more before onset and whose risk then reached 2x that risk inside
the window; how many got a new alarm raised inside the window, and how many had one raised after
the dismissal at least open when the window began. Full record:
[`{record}alarm_policy.json`]({record}alarm_policy.json).

{at_points}
"""


def readme(points: OperatingPoints, command: str, record: str, records: dict | None = None) -> str:
    """The table in words and numbers; `record` is where the plot and the full record lie, relative
    to the README."""
    s = points.source
    definitions = "\n".join(f"- **{k}**: {v}" for k, v in points.definitions.items())
    # a cross-fitted model chooses on out-of-fold predictions; its "validation" rows are those
    chosen_on = ("the out-of-fold predictions of its cross-fitted members (rows \"validation\")"
                 if "out-of-fold" in str(s.get("split")) else "the validation split")
    check = ""
    if "utility_optimum" in {p.id for p in points.points} and s.get("card_threshold") is not None:
        check = (f"\nCross-check: the utility optimum found here through the ONNX step is "
                 f"{points.point('utility_optimum').threshold:.6g}; the card's threshold (chosen the same way "
                 f"in training) is {float(s['card_threshold']):.6g}.\n")
    return f"""# Operating points of {points.model} {points.version}

Thresholds chosen on {chosen_on} ({s.get('validation_stays')} stays, {s.get('validation_hours')} hours),
each then read once on the test split ({s.get('test_stays')} stays, {s.get('test_hours')} hours) for the record:
{s.get('split')} of `{s.get('data')}`, the shipped ONNX step run through `models.runtime` ({s.get('provider')}).
The model card's own threshold ({s.get('card_threshold')}) is not changed by this table. A unit that
chooses no point gets the default (in bold, `default_point` in the file); it may choose any other.
The first figures are the challenge window's ([onset - 12 h, onset + 3 h]); "alarmed before onset"
is the older, looser line. Written by:

```
{command}
```

{markdown_table(points)}
{check}
Definitions, as measured:

{definitions}

## What a risk meant on validation

The risk bands behind `models.operating_points.risk_in_words`: of the validation patient-hours in
each band, the share that came {EVENT}; the test split's share beside it for the record.

{bands_table(points)}
{_policy_section(points, records, record)}
Plot: [`{record}tradeoff.png`]({record}tradeoff.png), caught in the window and PPV against alarms per patient-day
over validation thresholds, the points marked (filled: validation, hollow: test). Full record with the
curve: [`{record}operating_points.json`]({record}operating_points.json).
"""


def run_cli(a) -> int:
    command = (f"python -m training sepsis operating-points --model {a.model} --data {a.data} "
               f"--split-seed {a.split_seed} --out {a.out} --budgets {' '.join(f'{b:g}' for b in a.budgets)} "
               f"--sensitivities {' '.join(f'{x:g}' for x in a.sensitivities)}")
    for b in a.budgets:
        if not b > 0:
            raise ValueError(f"--budgets: {b:g} is not a positive number of alarms per patient-day")
    for x in a.sensitivities:
        if not 0 < x <= 1:
            raise ValueError(f"--sensitivities: {x:g} is not a share in (0, 1]")
    if a.crossfit:
        command += f" --crossfit {a.crossfit}"
        points, curves, records = measure_crossfit(Path(a.model), Path(a.crossfit), Path(a.data), Path(a.cache_dir),
                                                   a.device, a.budgets, a.sensitivities, progress=not a.no_progress)
    else:
        points, curves, records = measure(Path(a.model), Path(a.data), a.split_seed, Path(a.cache_dir), a.device,
                                          a.budgets, a.sensitivities, progress=not a.no_progress)
    out = Path(a.out)
    model_dir = None if a.no_model_file else Path(a.model)
    written = write_outputs(points, curves, model_dir, out, command, a.overwrite, records)
    (out / "README.md").write_text(readme(points, command, "", records), encoding="utf-8")
    written.append(out / "README.md")
    if model_dir is not None:
        rel = os.path.relpath(out.resolve(), model_dir.resolve())
        (model_dir / "README.md").write_text(readme(points, command, rel.rstrip("/") + "/", records), encoding="utf-8")
        written.append(model_dir / "README.md")
    print(markdown_table(points))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
