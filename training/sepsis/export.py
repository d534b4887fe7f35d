"""Export a trained sepsis model as one ONNX streaming step plus its model card."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from models.alarm_figures import DEFINITIONS
from models.contract import FEATURES, INPUTS, OPSET, OUTPUTS
from training.sepsis.ensemble import SepsisEnsemble, load_model
from training.sepsis.model import SepsisModel, StreamingStep
from training.sepsis.trees import ML_OPSET

# The alarm headline is the challenge window's catch rate (models/alarm_figures.py, the one definition);
# "alarmed before onset" counts an alarm days early as a catch, so it follows only as the second line.
HEADLINE = ("caught_in_window", "median_lead_time_in_window_hours")
SECOND_LINE = ("septic_alarmed_before_onset", "median_lead_time_hours")
CARD_METRICS = ("auroc", "auprc", "utility", "alarms_per_patient_day", *HEADLINE, *SECOND_LINE,
                "alarmed_stays_septic", "non_septic_alarmed")
# the card's words for its alarm figures, taken from the one definition rather than restated
CARD_DEFINITIONS = {"window": DEFINITIONS["window"], "caught_in_window": DEFINITIONS["caught_in_window"],
                    "median_lead_time_in_window_hours": DEFINITIONS["median_lead_time_in_window_hours"],
                    "septic_alarmed_before_onset": DEFINITIONS["sensitivity"],
                    "median_lead_time_hours": DEFINITIONS["median_lead_time_hours"]}

INTENDED_USE = (
    "Decision support for adult ICU patients: an hourly early-warning score for sepsis (Sepsis-3, "
    "as labelled in the PhysioNet/CinC 2019 challenge), computed from routinely charted vitals, "
    "labs and demographics as they arrive. It prompts a clinician to assess the patient; it does "
    "not diagnose sepsis or recommend treatment."
)
LIMITATIONS = [
    "Trained and tested on two US hospital systems (PhysioNet 2019 sets A and B); performance on other "
    "hospitals, populations or charting practices is unknown (the challenge's unseen hospital scored far lower).",
    "Labels are the challenge's retrospective Sepsis-3 onset shifted 6 h earlier; clinical onset is uncertain by hours.",
    "Inputs must use PhysioNet units (e.g. Temp in deg C, FiO2 as a fraction); wrong units silently degrade the score.",
    "Expects roughly hourly observations; long gaps are handled through elapsed time but were rare in training.",
    "The operating threshold was chosen on a validation split to maximise the challenge utility; a ward may "
    "need another trade-off between alarms and missed cases.",
]


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def export_onnx(model: SepsisModel | SepsisEnsemble, path: Path) -> None:
    step = StreamingStep(model.cpu().eval())
    obs = torch.randn(2, len(FEATURES))
    obs[:, ::3] = float("nan")
    example = (obs, torch.ones(2, 1), torch.zeros(2, model.state_size))
    members = model.members if isinstance(model, SepsisEnsemble) else [model]
    # boosters (training/sepsis/trees.py) export as ONNX-ML's tree operator
    custom = {"ai.onnx.ml": ML_OPSET} if any(m.config.core == "trees" for m in members) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, example, str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
                          dynamic_axes={n: {0: "batch"} for n in INPUTS + OUTPUTS},
                          opset_version=OPSET, dynamo=False, custom_opsets=custom)
    # the exporter restores the wrapper's default training mode, which would switch dropout back on
    model.eval()


def build_card(model: SepsisModel | SepsisEnsemble, name: str, version: str, run_metrics: dict, data: dict) -> dict:
    test = run_metrics["test"]
    missing = [k for k in HEADLINE if k not in test]
    if missing:
        raise ValueError(f"the run's test metrics lack {missing}: the card's headline is the challenge window's "
                         "catch rate (re-evaluate the run with the current training/sepsis/metrics.py)")
    crossfit = "oof" in run_metrics  # training/sepsis/crossfit.py: chosen on out-of-fold predictions
    chosen_on = "the out-of-fold hours of the development stays" if crossfit else "the validation split's hours"
    limitations = list(LIMITATIONS)
    if crossfit:
        limitations = [x.replace("chosen on a validation split", "chosen on out-of-fold predictions")
                       for x in limitations]
    selection = run_metrics["threshold_selection"]
    if "calibration" in run_metrics:
        how = ("calibrated by the blend's logistic regression (training/sepsis/blend.py)"
               if "coefficients" in run_metrics["calibration"] else "Platt-calibrated")
        selection += (f"; the risk is {how} on {chosen_on}, so it estimates the share "
                      "of such hours labelled SepsisLabel = 1")
        limitations.append("Calibrated to the development hospitals' hourly label rate (about 1.8% of hours); where "
                           "sepsis is more or less common the risk is off by that factor, though its ranking holds.")
    else:
        limitations.append("The risk is not calibrated: training weighted septic hours, so it overstates the "
                           "probability of sepsis; read it as a score against the threshold.")
    if model.config.hold_silent:
        limitations.append("An observation that measures no vital sign or lab (only ICULOS and demographics) leaves the "
                           "risk unchanged: the score moves only with new evidence, so a patient whose monitoring has "
                           "stopped keeps their last risk. Show how old the last measurement is beside it.")
    return {
        "name": name,
        "version": str(version),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source_commit": git_commit(),
        "training_data": data,
        "features": list(FEATURES),
        "state_size": model.state_size,
        "core": (model.kinds if isinstance(model, SepsisEnsemble)
                 else model.config.core),
        "hidden_size": model.config.hidden_size,
        "opset": OPSET,
        "threshold": float(run_metrics["threshold"]),
        "threshold_selection": selection,
        "metrics": {"split": f"test: {run_metrics.get('split', 'held-out split')} ({run_metrics.get('n_test_stays')} stays), "
                             f"threshold from {'out-of-fold predictions' if crossfit else 'validation'}; "
                             f"training run {run_metrics.get('run')}",
                    **{k: test.get(k) for k in CARD_METRICS}, "definitions": CARD_DEFINITIONS},
        "intended_use": INTENDED_USE,
        "limitations": limitations,
    }


def export(checkpoint: Path, metrics_path: Path, out: Path, name: str, version: str,
           gate: Callable[[Path], object] | None = None) -> Path:
    """Write model.onnx and model_card.json into `out`; refuses to overwrite a shipped version.

    `gate` (e.g. `training.sepsis.plausibility.Gate`) is called with a temporary folder holding the
    exported step and card before anything reaches `out`; if it raises, nothing is written to `out`
    and the error propagates (a model that fails the physiology check is never shipped).
    """
    out = Path(out)
    if (out / "model.onnx").exists():
        raise FileExistsError(f"{out}/model.onnx exists: shipped versions are immutable, export a new version")
    ckpt = torch.load(checkpoint, map_location="cpu")
    model = load_model(ckpt)
    run_metrics = json.loads(Path(metrics_path).read_text())
    seen = "the model saw its training split only"
    if "oof" in run_metrics:
        kinds = run_metrics.get("calibration", {}).get("kinds")
        members = (f"each of the {run_metrics['folds']} cross-fitted members of each kind ({' and '.join(kinds)})"
                   if kinds else f"each of the {run_metrics['folds']} cross-fitted members")
        seen = (f"{members} saw all but one fold of the development stays (training + validation splits), none "
                "saw the test split")
    data = {"name": f"PhysioNet/CinC 2019 development archive (85% of the public training data); {seen}",
            "sha256": run_metrics["data_sha256"], "stays": int(run_metrics["n_train_stays"]),
            "rows": int(run_metrics["n_train_rows"])}
    card = build_card(model, name, version, run_metrics, data)
    from models.card import ModelCard  # validates the card against the registry's schema

    ModelCard.model_validate(card)

    def write(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        export_onnx(model, folder / "model.onnx")
        (folder / "model_card.json").write_text(json.dumps(card, indent=2))

    if gate is None:
        write(out)
        return out
    # staged outside the registry, so a running service never lists a model still being checked
    with tempfile.TemporaryDirectory(prefix="sepsis-export-") as tmp:
        write(Path(tmp))
        gate(Path(tmp))
        out.mkdir(parents=True, exist_ok=True)
        for file in ("model_card.json", "model.onnx"):  # the registry lists a folder once both exist
            shutil.move(Path(tmp) / file, out / file)
    return out
