"""A tiny but real ONNX streaming step for tests that need a model without training one.

The graph honours the full artifact contract (names, shapes, dynamic batch, float32, NaN = missing)
and is built with `onnx.helper` only, so tests of the service, evaluation and registry never need
torch. `reference_step` computes the same step in numpy so tests can check what the runtime returns.

    next_state = tanh(decay * state + nan_to_zero(obs) @ W / 100 + observed_mask @ M + elapsed * c)
    risk       = sigmoid(next_state @ v + b)
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.card import ModelCard
from models.contract import FEATURES, MIN_OPSET, N_FEATURES

FIXTURE_NAME = "sepsis-cfc"
FIXTURE_VERSION = "1"
_DECAY = 0.9
_IR_VERSION = 8  # the IR of opset 17; old enough for every onnxruntime the project supports


@dataclass(frozen=True)
class FixtureWeights:
    W: np.ndarray  # [40, S] observation weights
    M: np.ndarray  # [40, S] missingness-mask weights
    c: np.ndarray  # [1, S] elapsed-time weights
    v: np.ndarray  # [S, 1] risk head
    b: np.ndarray  # [1] risk bias
    decay: float = _DECAY


def fixture_weights(state_size: int = 8, seed: int = 0) -> FixtureWeights:
    """Deterministic weights: the same (state_size, seed) always gives the same model."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return FixtureWeights(
        W=(rng.standard_normal((N_FEATURES, state_size)) / np.sqrt(N_FEATURES)).astype(f32),
        M=(rng.standard_normal((N_FEATURES, state_size)) * 0.1).astype(f32),
        c=(rng.standard_normal((1, state_size)) * 0.5).astype(f32),
        v=(rng.standard_normal((state_size, 1)) * 1.5).astype(f32),
        b=np.array([-0.5], dtype=f32),
    )


def reference_step(observation: np.ndarray, elapsed_hours: np.ndarray, state: np.ndarray,
                   weights: FixtureWeights) -> tuple[np.ndarray, np.ndarray]:
    """The fixture graph in numpy: (risk [B, 1], next_state [B, S]) in float32."""
    obs = np.asarray(observation, dtype=np.float32)
    missing = np.isnan(obs)
    filled = np.where(missing, np.float32(0), obs)
    mask = (~missing).astype(np.float32)
    elapsed = np.asarray(elapsed_hours, dtype=np.float32).reshape(-1, 1)
    pre = (np.float32(weights.decay) * state + (filled @ weights.W) / np.float32(100)
           + mask @ weights.M + elapsed * weights.c)
    next_state = np.tanh(pre).astype(np.float32)
    logit = next_state @ weights.v + weights.b
    risk = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return risk, next_state


def build_fixture_graph(state_size: int = 8, seed: int = 0, n_features: int = N_FEATURES,
                        opset: int = MIN_OPSET, observation_dtype: int | None = None):
    """The fixture as an onnx.ModelProto. `n_features` and `observation_dtype` exist so tests can
    build graphs that break the contract on purpose."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    obs_type = TensorProto.FLOAT if observation_dtype is None else observation_dtype
    w = fixture_weights(state_size, seed)
    if n_features != N_FEATURES:
        rng = np.random.default_rng(seed + 1)
        w = FixtureWeights(W=rng.standard_normal((n_features, state_size)).astype(np.float32) / 10,
                           M=rng.standard_normal((n_features, state_size)).astype(np.float32) / 10,
                           c=w.c, v=w.v, b=w.b)

    def const(name: str, array) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)

    initializers = [
        const("W", w.W), const("M", w.M), const("c", w.c), const("v", w.v), const("b", w.b),
        const("decay", np.float32(w.decay)), const("hundred", np.float32(100.0)), const("zero", np.float32(0.0)),
    ]
    obs = "observation" if obs_type == TensorProto.FLOAT else "observation_raw"
    nodes = []
    if obs_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["observation"], [obs], to=TensorProto.FLOAT))
    nodes += [
        helper.make_node("IsNaN", [obs], ["missing"]),
        helper.make_node("Where", ["missing", "zero", obs], ["filled"]),
        helper.make_node("Not", ["missing"], ["observed"]),
        helper.make_node("Cast", ["observed"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["filled", "W"], ["obs_term_raw"]),
        helper.make_node("Div", ["obs_term_raw", "hundred"], ["obs_term"]),
        helper.make_node("MatMul", ["mask", "M"], ["mask_term"]),
        helper.make_node("Mul", ["state", "decay"], ["memory"]),
        helper.make_node("Mul", ["elapsed_hours", "c"], ["time_term"]),
        helper.make_node("Add", ["memory", "obs_term"], ["pre1"]),
        helper.make_node("Add", ["pre1", "mask_term"], ["pre2"]),
        helper.make_node("Add", ["pre2", "time_term"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["next_state"]),
        helper.make_node("MatMul", ["next_state", "v"], ["logit_raw"]),
        helper.make_node("Add", ["logit_raw", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["risk"]),
    ]
    graph = helper.make_graph(
        nodes, "fixture_sepsis_step",
        inputs=[
            helper.make_tensor_value_info("observation", obs_type, ["batch", n_features]),
            helper.make_tensor_value_info("elapsed_hours", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", state_size]),
        ],
        outputs=[
            helper.make_tensor_value_info("risk", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("next_state", TensorProto.FLOAT, ["batch", state_size]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="models.testing")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model


def fixture_card(state_size: int = 8, threshold: float = 0.5, name: str = FIXTURE_NAME,
                 version: str = FIXTURE_VERSION, **overrides) -> dict:
    """A valid card for the fixture. It was never evaluated, so every metric is None and the card
    says so rather than carrying invented numbers."""
    card = {
        "name": name,
        "version": str(version),
        "created": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).isoformat(),
        "source_commit": "fixture",
        "training_data": {"name": "none (synthetic test fixture, untrained)", "sha256": "0" * 64,
                          "stays": 0, "rows": 0},
        "features": list(FEATURES),
        "state_size": state_size,
        "core": "fixture",
        "hidden_size": state_size,
        "opset": MIN_OPSET,
        "threshold": threshold,
        "threshold_selection": "Fixed by the test that built this fixture; not chosen on data.",
        "metrics": {"split": "none: untrained fixture, never evaluated", "auroc": None, "auprc": None,
                    "utility": None, "alarms_per_patient_day": None, "septic_alarmed_before_onset": None,
                    "alarmed_stays_septic": None, "median_lead_time_hours": None},
        "intended_use": "Software tests only. Not a clinical model.",
        "limitations": ["Random weights: its risk carries no clinical meaning."],
    }
    card.update(overrides)
    return card


def fixture_operating_points(threshold: float = 0.5, name: str = FIXTURE_NAME,
                             version: str = FIXTURE_VERSION) -> dict:
    """A valid operating_points.json for the fixture: three points around the card's threshold
    and four risk bands. Like the card it was never measured, so every figure is None."""
    unmeasured = {"sensitivity": None, "ppv": None, "alarms_per_patient_day": None,
                  "median_lead_time_hours": None, "utility": None}

    def point(point_id: str, label: str, value: float) -> dict:
        return {"id": point_id, "label": label, "threshold": value,
                "validation": dict(unmeasured), "test": dict(unmeasured)}

    edges = [0.0, 0.25, 0.5, 0.75, 1.0]
    return {
        "model": name,
        "version": str(version),
        "selected_on": "none: untrained fixture, thresholds fixed by the test that built it",
        "definitions": {"all figures": "None: the fixture was never evaluated"},
        "source": {"data": "none"},
        "points": [point("utility_optimum", "fixture: the card's threshold", threshold),
                   point("alarms_per_day_0.2", "fixture: a higher threshold", (threshold + 1.0) / 2),
                   point("sensitivity_0.8", "fixture: a lower threshold", threshold / 2)],
        "risk_bands": [{"low": lo, "high": hi, "words": "untrained fixture: this band was never measured",
                        "validation_ppv": None} for lo, hi in zip(edges, edges[1:])],
    }


def write_fixture_model(directory: str | Path, state_size: int = 8, threshold: float = 0.5,
                        name: str = FIXTURE_NAME, version: str = FIXTURE_VERSION, seed: int = 0,
                        card_overrides: dict | None = None,
                        operating_points: bool | dict = True) -> Path:
    """Write model.onnx, model_card.json and operating_points.json into `directory` (created if
    needed); return it.

    For a registry layout pass `root / name / version`. `card_overrides` replaces top-level card
    keys (e.g. {"state_size": 9}) to make a card that disagrees with its graph; a card that fails
    the schema is still written, so tests can exercise load errors. `operating_points`: True
    writes `fixture_operating_points`, False none, a dict that content as-is (valid or not).
    """
    import onnx

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    card = fixture_card(state_size, threshold, name, str(version))
    card.update(card_overrides or {})
    if not card_overrides:
        ModelCard.model_validate(card)  # the default fixture must always be a valid card
    onnx.save(build_fixture_graph(state_size, seed), str(directory / "model.onnx"))
    (directory / "model_card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    if operating_points is not False:
        points = (fixture_operating_points(threshold, card.get("name", name), str(card.get("version", version)))
                  if operating_points is True else operating_points)
        (directory / "operating_points.json").write_text(json.dumps(points, indent=2), encoding="utf-8")
    return directory


class CountingStep:
    """A step `(obs, elapsed, state) -> (risk, next_state)` that records each call's row count
    (how many rows a batched caller such as models/explain.py sent in each call)."""

    def __init__(self, step):
        self.step, self.calls = step, []

    def __call__(self, obs, elapsed, state):
        self.calls.append(len(obs))
        return self.step(obs, elapsed, state)
