"""Boosters inside the streaming step (training/sepsis/trees.py) and the blend of a cross-fitted
network with boosters on the same folds (training/sepsis/blend.py): the trees score as LightGBM
does, in PyTorch and in the exported ONNX step; their inputs are the step's own memory; the blend
is chosen on out-of-fold logits and its operating points read the same fold models back."""
from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.contract import FEATURES, N_CLINICAL
from models.explain import find_memory
from tests.training.conftest import make_archive, synthetic_stays
from training.__main__ import main as cli
from training.sepsis import metrics as M
from training.sepsis.batching import CohortTensors
from training.sepsis.blend import DEVIATIONS, MONOTONE, monotone_constraints, step_inputs
from training.sepsis.crossfit import logit
from training.sepsis.data import load_cohort
from training.sepsis.ensemble import SepsisEnsemble, load_model
from training.sepsis.export import export_onnx
from training.sepsis.model import ModelConfig, SepsisModel
from training.sepsis.predict import predict_stays, stay_labels
from training.sepsis.splits import crossfit_split
from training.sepsis.trees import TreeEnsemble, TreeModel, TreeInputs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
K = 3


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("blend")
    stays = synthetic_stays(n=90, seed=5, septic_fraction=0.3)
    for i, rows in enumerate(stays.values()):
        if i % 3 == 0:  # a stay whose first hours carry only demographics, as one file in five does
            for row in rows[:2]:
                row[:N_CLINICAL] = [float("nan")] * N_CLINICAL
    return root, make_archive(root, stays)


@pytest.fixture(scope="module")
def cohort(archive):
    root, path = archive
    return load_cohort(path, cache_dir=root / "cache", progress=False)


def _booster(x: np.ndarray, y: np.ndarray, rounds: int = 30, **extra) -> lgb.Booster:
    params = {"objective": "binary", "num_leaves": 15, "min_child_samples": 5, "learning_rate": 0.2,
              "verbosity": -1, "num_threads": 1, **extra}
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=rounds)


@pytest.fixture(scope="module")
def boosters(cohort):
    x, _ = step_inputs(cohort.values, cohort.offsets)
    y = cohort.labels.astype(np.int8)
    return [_booster(x, y, rounds=20 + 5 * i, seed=i) for i in range(2)], x


def test_trees_score_as_lightgbm_does_in_torch_and_in_the_exported_graph(boosters, tmp_path):
    """Missing values (most of the inputs), values on a split's threshold and the boosters' mean."""
    models, x = boosters
    trees = TreeEnsemble([b.model_to_string() for b in models])
    rows = x[:3000].copy()
    # values exactly on thresholds: float32 x <= double threshold, the booster's own comparison
    dump = models[0].dump_model()["tree_info"][0]["tree_structure"]
    rows[:50, dump["split_feature"]] = np.float32(dump["threshold"])
    expected = np.mean([b.predict(rows.astype(np.float64), raw_score=True) for b in models], axis=0)
    with torch.no_grad():
        got = trees(torch.from_numpy(rows)).numpy()[:, 0]
    np.testing.assert_allclose(got, expected, atol=1e-5)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.trees = trees

        def forward(self, z):
            return self.trees(z)

    path = tmp_path / "trees.onnx"
    torch.onnx.export(Wrap(), (torch.from_numpy(rows[:4]),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False,
                      custom_opsets={"ai.onnx.ml": 3})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": rows})[0][:, 0], expected, atol=1e-5)


def test_a_threshold_rounds_down_so_float32_values_split_as_in_double():
    from training.sepsis.trees import _float32_at_most

    for t in (36.95, 0.1, -2.3, 1e-40, 7.0):
        f = np.float32(_float32_at_most(t))
        assert float(f) <= t and float(np.nextafter(f, np.float32(np.inf))) > t


@pytest.mark.parametrize("deviations", [None, DEVIATIONS])
def test_step_inputs_are_the_step_memory_the_trees_read(cohort, deviations):
    """`step_inputs` (what boosters train on) equals TreeInputs stepped hour by hour inside a
    start-at-first model: nothing before a stay's first measured hour, 0 elapsed at it; temperature
    and WBC as their distance from normal where asked."""
    x, names = step_inputs(cohort.values, cohort.offsets, deviations)
    assert len(names) == len(FEATURES) + 2 * N_CLINICAL
    renamed = {f"{n}_from_normal" for n in (deviations or {})}
    assert [n for n in names[: len(FEATURES)] if n not in renamed] == [f for f in FEATURES if f not in (deviations or {})]
    if deviations:
        t = FEATURES.index("Temp")
        raw, _ = step_inputs(cohort.values, cohort.offsets)
        np.testing.assert_allclose(x[:, t], np.abs(raw[:, t] - 37.0))

    class Probe(TreeModel):
        def _head(self, encoded, core_out):
            self.seen_inputs.append(encoded.clone())
            return torch.zeros(encoded.shape[0], 1)

    dumps = _booster(x, cohort.labels.astype(np.int8), rounds=2).model_to_string()
    probe = Probe(TreeEnsemble([dumps]), deviations)
    tensors = CohortTensors.from_cohort(cohort, "cpu")
    for stay in range(0, 30):
        probe.seen_inputs = []
        lo, hi = cohort.offsets[stay], cohort.offsets[stay + 1]
        state = torch.zeros(1, probe.state_size)
        for row in range(lo, hi):
            obs = tensors.values[row: row + 1]
            _, state = probe.step_logit(obs, tensors.elapsed[row: row + 1].reshape(1, 1), state)
        stepped = torch.cat(probe.seen_inputs).numpy()
        np.testing.assert_array_equal(np.isnan(stepped), np.isnan(x[lo:hi]))
        np.testing.assert_allclose(np.nan_to_num(stepped), np.nan_to_num(x[lo:hi]), rtol=0, atol=1e-4)


def test_monotone_constraints_hold_the_septic_direction(cohort):
    """One-sided variables move the boosters' risk one way only; temperature and WBC, read as their
    distance from normal, can only raise it on either side (fever and hypothermia alike)."""
    x, names = step_inputs(cohort.values, cohort.offsets, DEVIATIONS)
    assert monotone_constraints(names)[names.index("Temp_from_normal")] == 1
    b = _booster(x, cohort.labels.astype(np.int8), rounds=30, monotone_constraints=monotone_constraints(names),
                 monotone_constraints_method="advanced")
    trees = TreeEnsemble([b.model_to_string()])
    rows = torch.from_numpy(x[:500].copy())
    checked = 0
    for name, sign in [*MONOTONE.items(), ("Temp_from_normal", 1), ("WBC_from_normal", 1)]:
        j = names.index(name)
        if np.isnan(x[:, j]).all():
            continue  # never measured in the fixture
        checked += 1
        grid = torch.linspace(float(np.nanmin(x[:, j])), float(np.nanmax(x[:, j])), 6)
        scores = []
        for value in grid:
            r = rows.clone()
            r[:, j] = value
            with torch.no_grad():
                scores.append(trees(r)[:, 0])
        steps = sign * torch.diff(torch.stack(scores), dim=0)
        assert (steps >= -1e-6).all(), name
    assert checked >= 5


def _cfc(seed: int, cohort) -> SepsisModel:
    torch.manual_seed(seed)
    config = ModelConfig(hidden_size=8, backbone_units=8, encoder_units=16, skip=True, hold_silent=True,
                         start_at_first=True)
    v = cohort.values
    return SepsisModel(config, np.nan_to_num(np.nanmean(v, axis=0)), np.nan_to_num(np.nanstd(v, axis=0), nan=1.0)).eval()


def test_a_blended_step_holds_silent_hours_and_exports_with_its_memory_found(boosters, cohort, tmp_path):
    models, _ = boosters
    blend = SepsisEnsemble([_cfc(0, cohort), _cfc(1, cohort), TreeModel(TreeEnsemble([models[0].model_to_string()])),
                            TreeModel(TreeEnsemble([models[1].model_to_string()]))], weights=[0.3, 0.3, 0.25, 0.25])
    blend.calibration.copy_(torch.tensor([1.0, -1.5]))
    assert blend.kinds == "cfc ensemble of 2 + trees"
    path = tmp_path / "model.onnx"
    export_onnx(blend, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def step(obs, elapsed, state):
        return session.run(None, {"observation": obs, "elapsed_hours": elapsed, "state": state})

    # every member's memory is found where the explanations look for it
    memory = find_memory(step, blend.state_size)
    assert memory is not None and memory.last.shape[0] == 4

    tensors = CohortTensors.from_cohort(cohort, "cpu")
    stays = np.arange(20)
    obs, elapsed, _, mask = tensors.batch(stays)
    with torch.no_grad():
        sequence = blend.risk(blend(obs, elapsed, mask)).numpy()
    state = np.zeros((len(stays), blend.state_size), np.float32)
    for t in range(obs.shape[1]):
        risk, state = step(obs[:, t].numpy(), elapsed[:, t: t + 1].numpy(), state)
        live = mask[:, t].numpy()
        np.testing.assert_allclose(risk[live, 0], sequence[live, t], atol=1e-5)
    # an hour that measures nothing keeps the risk, boosters included
    quiet = np.full((len(stays), len(FEATURES)), np.nan, np.float32)
    quiet[:, FEATURES.index("ICULOS")] = 500.0
    held, _ = step(quiet, np.ones((len(stays), 1), np.float32), state)
    last = mask.numpy().sum(axis=1) - 1
    np.testing.assert_allclose(held[:, 0], sequence[np.arange(len(stays)), last], atol=1e-5)

    # the checkpoint round-trips, weights and boosters included
    again = load_model(blend.to_checkpoint())
    with torch.no_grad():
        np.testing.assert_allclose(again.risk(again(obs, elapsed, mask)).numpy(), sequence, atol=1e-6)


def test_an_ensemble_checkpoint_from_before_weights_is_a_mean(cohort):
    members = [_cfc(0, cohort), _cfc(1, cohort)]
    ckpt = SepsisEnsemble(members).to_checkpoint()
    del ckpt["weights"]
    model = load_model(ckpt)
    assert model.weights.tolist() == pytest.approx([0.5, 0.5])


def test_blend_chooses_on_out_of_fold_logits_and_its_operating_points_read_them_back(archive, cohort, tmp_path):
    root, path = archive
    runs = []
    for k in range(K):
        assert cli(["sepsis", "train", "--data", str(path), "--hidden", "8", "--backbone-units", "8",
                    "--encoder-units", "16", "--epochs", "1", "--batch-size", "32", "--folds", str(K), "--fold", str(k),
                    "--start-at-first", "--out", str(root / "results"), "--checkpoints", str(root / "runs"),
                    "--cache-dir", str(root / "cache"), "--run", f"f{k}", "--no-progress", "--device", "cpu"]) == 0
        runs.append(root / "results" / f"f{k}" / "metrics.json")
    cf = root / "cf"
    assert cli(["sepsis", "crossfit", "--runs", *map(str, runs), "--data", str(path), "--out", str(cf), "--name", "cf",
                "--cache-dir", str(root / "cache"), "--device", "cpu", "--dropout-rates"]) == 0
    out = root / "blend"
    assert cli(["sepsis", "blend", "--networks", str(cf / "ensemble.pt"), "--networks-record", str(cf / "metrics.json"),
                "--data", str(path), "--out", str(out), "--name", "bl", "--max-rounds", "15", "--threads", "1",
                "--cache-dir", str(root / "cache"), "--device", "cpu", "--dropout-rates", "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    c = m["calibration"]
    assert c["kinds"] == ["cfc", "trees"] and len(c["coefficients"]) == 2
    ckpt = torch.load(out / "ensemble.pt", map_location="cpu", weights_only=False)
    model = load_model(ckpt)
    assert model.kinds == f"cfc ensemble of {K} + trees" and len(model.members) == 2 * K
    # each kind's weight is its coefficient shared among its members; the intercept calibrates
    assert model.weights.tolist() == pytest.approx([c["coefficients"][0] / K] * K + [c["coefficients"][1] / K] * K)
    assert model.calibration.tolist() == pytest.approx([1.0, c["b"]])

    # the threshold is the utility optimum of the blended out-of-fold risks: network k and booster k on fold k
    tensors = CohortTensors.from_cohort(cohort, "cpu")
    labels, probs = [], []
    for k in range(K):
        fold = crossfit_split(cohort, k, K).val
        labels += stay_labels(tensors, fold)
        net = predict_stays(model.members[k], tensors, fold)
        tree = predict_stays(model.members[K + k], tensors, fold)
        probs += [1 / (1 + np.exp(-(c["coefficients"][0] * logit(a) + c["coefficients"][1] * logit(b) + c["b"])))
                  for a, b in zip(net, tree)]
    assert M.choose_threshold(labels, probs)[0] == pytest.approx(m["threshold"], rel=1e-5)
    assert M.hourly_auroc(labels, probs) == pytest.approx(m["oof"]["auroc"], abs=1e-6)

    exported = tmp_path / "sepsis-cfc" / "7"
    assert cli(["sepsis", "export", "--checkpoint", str(out / "ensemble.pt"), "--metrics", str(out / "metrics.json"),
                "--out", str(exported), "--version", "7"]) == 0
    card = json.loads((exported / "model_card.json").read_text())
    assert card["core"] == f"cfc ensemble of {K} + trees" and card["state_size"] == model.state_size
    assert "calibrated by the blend's logistic regression" in card["threshold_selection"]
    assert "members of each kind (cfc and trees)" in card["training_data"]["name"]
    assert cli(["sepsis", "operating-points", "--model", str(exported), "--data", str(path), "--crossfit", str(out),
                "--out", str(tmp_path / "points"), "--cache-dir", str(root / "cache"), "--no-progress"]) == 0
    optimum = next(p for p in json.loads((exported / "operating_points.json").read_text())["points"]
                   if p["id"] == "utility_optimum")
    assert optimum["threshold"] == pytest.approx(m["threshold"], rel=1e-4)
    assert optimum["test"]["utility"] == pytest.approx(m["test"]["utility"], abs=1e-3)


def _v4_member(seed: int, cohort) -> SepsisModel:
    from training.sepsis.features import quantile_edges

    torch.manual_seed(seed)
    config = ModelConfig(hidden_size=8, backbone_units=8, encoder_units=16, bins=4, skip=True, hold_silent=True,
                         start_at_first=True)
    v = cohort.values[seed * 50:]  # members differ in their normalisation and bins, as fold members do
    member = SepsisModel(config, np.nan_to_num(np.nanmean(v, axis=0)),
                         np.nan_to_num(np.nanstd(v, axis=0), nan=1.0) + 0.01 * seed, quantile_edges(v, 4))
    return member.eval()


def test_a_shipped_ensemble_reads_back_from_its_onnx_step_exactly(cohort, tmp_path):
    from training.sepsis.from_onnx import ensemble_from_onnx

    ensemble = SepsisEnsemble([_v4_member(s, cohort) for s in range(3)])
    ensemble.calibration.copy_(torch.tensor([1.3, -2.0]))
    export_onnx(ensemble, tmp_path / "model.onnx")
    back = ensemble_from_onnx(tmp_path)
    assert len(back.members) == 3 and back.members[0].config.start_at_first
    assert back.calibration.tolist() == pytest.approx([1.3, -2.0])
    for mine, theirs in zip(ensemble.members, back.members):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            torch.testing.assert_close(a, b, msg=name)
    # a graph that is not such an ensemble is refused by name
    other = TreeModel(TreeEnsemble([_booster(*_xy(cohort), rounds=2).model_to_string()]))
    export_onnx(SepsisEnsemble([other, other]), tmp_path / "trees.onnx")
    with pytest.raises(ValueError, match="trees.onnx"):
        ensemble_from_onnx(tmp_path / "trees.onnx")
    # an ensemble whose members keep no hold state (before v3) is refused with the reason
    torch.manual_seed(0)
    plain = ModelConfig(hidden_size=8, backbone_units=8, encoder_units=16, bins=4, skip=True)
    v = cohort.values
    from training.sepsis.features import quantile_edges

    old = [SepsisModel(plain, np.nan_to_num(np.nanmean(v, axis=0)) + s, np.nan_to_num(np.nanstd(v, axis=0), nan=1.0),
                       quantile_edges(v[s * 50:], 4)).eval() for s in range(2)]
    export_onnx(SepsisEnsemble(old), tmp_path / "old.onnx")
    with pytest.raises(ValueError, match="without the hold state"):
        ensemble_from_onnx(tmp_path / "old.onnx")


def _xy(cohort):
    x, _ = step_inputs(cohort.values, cohort.offsets)
    return x, cohort.labels.astype(np.int8)


@pytest.mark.parametrize("version, starts_at_first", [("4", True), ("3", False)])
def test_the_shipped_cfc_ensembles_read_back_from_their_onnx(version, starts_at_first):
    """The network members of the blend in sepsis-cfc/5 are sepsis-cfc/4's, read back this way; /3's
    members share their normalisation (one copy in the graph) and read back too."""
    from pathlib import Path

    from training.sepsis.from_onnx import ensemble_from_onnx

    shipped = Path(__file__).resolve().parents[2] / "models" / "sepsis-cfc" / version
    back = ensemble_from_onnx(shipped)  # refuses a rebuild more than 1e-5 off the graph
    assert len(back.members) == 5 and back.state_size == 1455
    assert back.members[0].config.start_at_first is starts_at_first
