"""The v3 sepsis model: piecewise-linear codes, the hour-wise encoder and skip head, held silent
observations, ensembles as one step, and the boosting peer's per-hour inputs."""
import numpy as np
import pytest
import torch

from training.sepsis.baseline import hourly_features
from training.sepsis.batching import elapsed_hours
from training.sepsis.ensemble import SepsisEnsemble, load_model
from models.contract import N_CLINICAL
from training.sepsis.features import Featurizer, quantile_edges
from training.sepsis.model import ModelConfig, SepsisModel, informative
from training.sepsis.silence import blank_runs, silence_drift, silent_continuations

from tests.training.test_sepsis_model import irregular_batch, step_loop

ICULOS = 39


def edges_for(bins=8, seed=0):
    rng = np.random.default_rng(seed)
    values = (rng.normal(50, 15, size=(400, 40))).astype(np.float32)
    values[:, 35] = rng.integers(0, 2, 400)  # a binary column: repeated quantiles
    return torch.from_numpy(quantile_edges(values, bins))


def v3_model(core="cfc", seed=0, hold=True, **kw) -> SepsisModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(core=core, hidden_size=12, backbone_units=16, bins=8, encoder_units=24, skip=True,
                      hold_silent=hold, **kw)
    return SepsisModel(cfg, torch.linspace(-1, 60, 40), torch.linspace(0.5, 20, 40), edges_for()).eval()


def silent_batch():
    """irregular stays with runs of hours that measure no vital or lab (ICULOS and demographics only)."""
    obs, dt, mask = irregular_batch(missing=0.5)
    obs[0, 2:6, :N_CLINICAL] = float("nan")
    obs[1, 0:2, :N_CLINICAL] = float("nan")    # silent before the first measured hour
    obs[3, 5:, :N_CLINICAL] = float("nan")     # silent to the end
    obs[:, :, 34:] = torch.nan_to_num(obs[:, :, 34:], nan=1.0)
    obs[~mask] = float("nan")
    return obs, dt, mask


def test_piecewise_linear_codes_read_the_position_between_quantile_edges():
    edges = torch.zeros(40, 4)
    edges[:] = torch.tensor([0.0, 10.0, 20.0, 40.0])
    f = Featurizer(torch.zeros(40), torch.ones(40), edges=edges)
    last = torch.full((1, 40), 15.0)
    seen = torch.ones(1, 40)
    seen[0, 1] = 0.0
    codes = f._encoded(last, seen).view(40, 3)
    assert codes[0].tolist() == [1.0, 0.5, 0.0]
    assert codes[1].tolist() == [0.0, 0.0, 0.0]  # never measured: no code, whatever the carried value
    assert f._encoded(torch.full((1, 40), 99.0), torch.ones(1, 40)).view(40, 3)[0].tolist() == [1.0, 1.0, 1.0]
    assert f._encoded(torch.full((1, 40), -5.0), torch.ones(1, 40)).view(40, 3)[0].tolist() == [0.0, 0.0, 0.0]


def test_quantile_edges_come_from_observed_values_only():
    values = np.full((10, 40), np.nan, np.float32)
    values[:, 0] = np.arange(10)
    e = quantile_edges(values, 2)
    assert e[0].tolist() == [0.0, 4.5, 9.0]
    assert e[1].tolist() == [0.0, 0.5, 1.0]  # never observed: placeholder edges, codes stay 0 with seen = 0


@pytest.mark.parametrize("core", ["cfc", "lstm", "none"])
@pytest.mark.parametrize("hold,start", [(False, False), (True, False), (True, True)])
def test_v3_sequence_forward_equals_the_streaming_step(core, hold, start):
    model = v3_model(core, hold=hold, start_at_first=start)
    obs, dt, mask = silent_batch()
    with torch.no_grad():
        seq = model(obs, dt, mask)
        stepped, _ = step_loop(model, obs, dt, mask)
    assert torch.allclose(seq[mask], stepped[mask], atol=1e-5)


def from_admission(stay: torch.Tensor, empty_hours: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stay as the service steps it: `empty_hours` hours before its first row that carry only the
    demographics and ICULOS, 0 elapsed hours on the first of them and 1 after."""
    pad = stay[:1].repeat(empty_hours, 1)
    pad[:, :N_CLINICAL] = float("nan")
    obs = torch.cat([pad, stay])
    obs[:, ICULOS] = torch.arange(1, len(obs) + 1, dtype=obs.dtype)
    dt = torch.ones(len(obs))
    dt[0] = 0.0
    return obs, dt


@pytest.mark.parametrize("start", [True, False])
def test_a_stay_stepped_from_admission_scores_as_its_file_starting_at_the_first_measured_hour(start):
    """One stay in five of the challenge's files starts at its first measured hour (ICULOS 3, say),
    while the service steps from ICU admission hour 1 through the empty hours before it. With
    start_at_first the model cannot tell the two apart; without it, they differ."""
    model = v3_model("cfc", start_at_first=start)
    obs, dt, mask = irregular_batch(missing=0.5)
    stay = obs[0].clone()
    stay[:, N_CLINICAL:] = torch.nan_to_num(stay[:, N_CLINICAL:], nan=1.0)
    stay[0, 0] = 88.0  # the file's first row measures something, as every late-starting file does
    file_obs, file_dt = from_admission(stay, 0)
    file_obs[:, ICULOS] += 4  # the file's rows are ICULOS 5, 6, ...
    served_obs, served_dt = from_admission(stay, 4)
    with torch.no_grad():
        file_risk = model(file_obs[None], file_dt[None])[0]
        served = model(served_obs[None], served_dt[None])[0]
        stepped, _ = step_loop(model, served_obs[None], served_dt[None, :], torch.ones(1, len(served_dt), dtype=torch.bool))
    assert torch.allclose(served, stepped[0], atol=1e-5)
    same = torch.allclose(served[4:], file_risk, atol=1e-5)
    assert same == start


def test_a_silent_observation_holds_the_risk_and_the_core_state():
    model = v3_model("cfc")
    obs, dt, mask = silent_batch()
    with torch.no_grad():
        seq = model(obs, dt, mask)
    # stay 0: hours 2-5 carry no vital or lab, so their risk is hour 1's
    assert torch.equal(seq[0, 2:6], seq[0, 1].expand(4))
    assert not torch.equal(seq[0, 6], seq[0, 1])
    # stay 3 is silent from hour 5 to its end
    n = int(mask[3].sum())
    assert torch.equal(seq[3, 5:n], seq[3, 4].expand(n - 5))
    state = torch.zeros(1, model.state_size)
    _, state = model.step_logit(obs[0, :1], dt[0, :1, None], state)
    core = slice(model.featurizer.state_size, model.featurizer.state_size + model.core_state_size)
    _, after = model.step_logit(obs[0, 2:3], torch.tensor([[3.0]]), state)
    assert torch.equal(after[:, core], state[:, core])
    assert after[0, -1].item() == pytest.approx(3.0)  # the hours kept aside for the next measured step


def test_the_next_measured_hour_gets_the_whole_gap_as_its_time_span(monkeypatch):
    """Holding loses no time: the core's span at the first measured hour after a silent run is the
    run's hours plus its own, in training (sequence) and in serving (step) alike."""
    model = v3_model("cfc")
    obs, dt, mask = silent_batch()
    spans = {}
    forward, step = model.core.forward, model.core.step

    def record_forward(x, span, keep):
        spans["sequence"] = span.clone()
        return forward(x, span, keep)

    def record_step(x, state, span):
        spans.setdefault("step", []).append(span.clone())
        return step(x, state, span)

    monkeypatch.setattr(model.core, "forward", record_forward)
    monkeypatch.setattr(model.core, "step", record_step)
    with torch.no_grad():
        model(obs[:1], dt[:1], mask[:1])
        step_loop(model, obs[:1], dt[:1], mask[:1])
    gap = dt[0, 2:7].sum()
    assert spans["sequence"][0, 6] == pytest.approx(gap.item(), rel=1e-6)
    assert spans["step"][6].item() == pytest.approx(gap.item(), rel=1e-6)
    assert spans["step"][7].item() == pytest.approx(dt[0, 7].item(), rel=1e-6)


def test_informative_ignores_demographics_and_iculos():
    obs = torch.full((2, 40), float("nan"))
    obs[:, 34:] = 1.0
    obs[1, 0] = 80.0
    assert informative(obs).tolist() == [False, True]


def test_ensemble_steps_its_members_side_by_side_and_averages_logits():
    members = [v3_model("cfc", seed=s) for s in range(3)]
    ens = SepsisEnsemble(members).eval()
    obs, dt, mask = silent_batch()
    with torch.no_grad():
        seq = ens(obs, dt, mask)
        stepped, state = step_loop(ens, obs, dt, mask)
        mean = torch.stack([m(obs, dt, mask) for m in members]).mean(0)
    assert ens.state_size == sum(m.state_size for m in members)
    assert torch.allclose(seq[mask], stepped[mask], atol=1e-5)
    assert torch.allclose(seq, mean)
    restored = load_model(ens.to_checkpoint())
    with torch.no_grad():
        assert torch.allclose(restored(obs, dt, mask), seq)
    with pytest.raises(ValueError, match="ensemble"):
        SepsisModel.from_checkpoint(ens.to_checkpoint())


@pytest.mark.parametrize("start", [False, True])
def test_ensemble_onnx_step_matches_pytorch(tmp_path, start):
    from models.card import FEATURES
    from models.runtime import StepRuntime
    from training.sepsis.export import build_card, export_onnx

    ens = SepsisEnsemble([v3_model("cfc", seed=s, start_at_first=start) for s in range(2)]).eval()
    ens.calibration.copy_(torch.tensor([0.8, -1.5]))
    out = tmp_path / "sepsis-cfc" / "9"
    out.mkdir(parents=True)
    export_onnx(ens, out / "model.onnx")
    metrics = {"test": {"auroc": 0.5, "auprc": 0.1, "utility": 0.0, "alarms_per_patient_day": 0.0,
                        "caught_in_window": 0.0, "median_lead_time_in_window_hours": None,
                        "septic_alarmed_before_onset": 0.0, "alarmed_stays_septic": 0.0,
                        "median_lead_time_hours": None}, "threshold": 0.3, "threshold_selection": "test",
               "run": "t", "n_test_stays": 1}
    data = {"name": "fixture", "sha256": "0" * 64, "stays": 1, "rows": 1}
    card = build_card(ens, "sepsis-cfc", "9", metrics, data)
    assert card["core"] == "cfc ensemble of 2" and card["features"] == list(FEATURES)
    import json
    (out / "model_card.json").write_text(json.dumps(card))
    runtime = StepRuntime.open(out, device="cpu")
    obs, dt, mask = silent_batch()
    for i in range(obs.shape[0]):
        n = int(mask[i].sum())
        onnx_risk = runtime.run_sequence(obs[i, :n].numpy(), dt[i, :n].numpy())
        with torch.no_grad():
            torch_risk = ens.risk(ens(obs[i : i + 1, :n], dt[i : i + 1, :n]))[0].numpy()
        np.testing.assert_allclose(onnx_risk, torch_risk, atol=1e-5, rtol=0)


def test_card_headline_is_the_challenge_window_and_before_onset_the_second_line():
    from models.alarm_figures import DEFINITIONS
    from models.card import ModelCard
    from training.sepsis.export import build_card

    test = {"auroc": 0.8, "auprc": 0.1, "utility": 0.4, "alarms_per_patient_day": 0.5, "caught_in_window": 0.81,
            "median_lead_time_in_window_hours": 12.0, "septic_alarmed_before_onset": 0.88,
            "median_lead_time_hours": 30.0, "alarmed_stays_septic": 0.2, "non_septic_alarmed": 0.3}
    run = {"test": test, "threshold": 0.3, "threshold_selection": "fixture", "run": "t", "n_test_stays": 1}
    data = {"name": "fixture", "sha256": "0" * 64, "stays": 1, "rows": 1}
    metrics = build_card(v3_model(), "sepsis-cfc", "9", run, data)["metrics"]
    alarm_keys = [k for k in metrics if k in test and k not in ("auroc", "auprc", "utility", "alarms_per_patient_day")]
    assert alarm_keys[:3] == ["caught_in_window", "median_lead_time_in_window_hours", "septic_alarmed_before_onset"]
    assert metrics["caught_in_window"] == 0.81 and metrics["septic_alarmed_before_onset"] == 0.88
    assert metrics["definitions"]["window"] == DEFINITIONS["window"]  # the one definition, not a copy
    assert metrics["definitions"]["septic_alarmed_before_onset"] == DEFINITIONS["sensitivity"]
    ModelCard.model_validate(build_card(v3_model(), "sepsis-cfc", "9", run, data))
    old = {k: v for k, v in test.items() if k != "caught_in_window"}  # a record from before the window figure
    with pytest.raises(ValueError, match="caught_in_window"):
        build_card(v3_model(), "sepsis-cfc", "9", {**run, "test": old}, data)


def test_hourly_features_equal_the_featurizer_memory():
    """The boosting peer's inputs are what the step keeps: last value, count, hours since."""
    rng = np.random.default_rng(3)
    lengths = [5, 1, 9]
    values = rng.normal(50, 10, size=(sum(lengths), 40)).astype(np.float32)
    values[rng.random(values.shape) < 0.6] = np.nan
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values[:, ICULOS] = np.concatenate([np.arange(1, n + 1) * (1 + (i == 2)) for i, n in enumerate(lengths)])
    x, names = hourly_features(values, offsets)
    assert x.shape == (sum(lengths), 108) and len(names) == 108
    elapsed = elapsed_hours(values, offsets)
    f = Featurizer(torch.zeros(40), torch.ones(40), counts=True)
    for s in range(len(lengths)):
        state = torch.zeros(1, f.state_size)
        for r in range(offsets[s], offsets[s + 1]):
            _, state = f.step(torch.from_numpy(values[r : r + 1]), torch.tensor([[elapsed[r]]]), state)
            last, since, seen, count = state.view(4, 40).numpy()
            expect_last = np.where(seen > 0, last, np.nan)
            np.testing.assert_allclose(x[r, :40], expect_last, equal_nan=True, rtol=1e-6)
            np.testing.assert_allclose(x[r, 40:74], count[:N_CLINICAL])
            np.testing.assert_allclose(x[r, 74:], np.where(seen > 0, since, np.nan)[:N_CLINICAL], equal_nan=True)


def test_blank_runs_withhold_vitals_and_labs_only_inside_the_stay():
    obs = torch.arange(2 * 30 * 40, dtype=torch.float32).view(2, 30, 40)
    lengths = torch.tensor([30, 10])
    out = blank_runs(obs, lengths, rate=1.0, max_hours=5, generator=torch.Generator().manual_seed(0))
    blanked = torch.isnan(out)
    assert blanked[:, :, :N_CLINICAL].any(dim=(1, 2)).all()     # every stay chosen at rate 1
    assert not blanked[:, :, N_CLINICAL:].any()                # demographics and ICULOS stay
    rows = blanked[:, :, 0]
    assert (rows.sum(1) <= 5).all() and (rows == blanked[:, :, :N_CLINICAL].all(-1)).all()
    assert not rows[1, 10:].any()
    assert torch.equal(blank_runs(obs, lengths, rate=0.0, max_hours=5), obs)


def test_silent_continuations_are_shaped_as_the_service_sends_them():
    values = np.arange(2 * 6 * 40, dtype=np.float32).reshape(12, 40)
    values[:, ICULOS] = np.tile(np.arange(1, 7), 2)
    offsets = np.array([0, 6, 12])
    v, e, o, cut = silent_continuations(values, offsets, hours=4, seed=1)
    for i in range(2):
        tail = v[o[i] + cut[i] : o[i + 1]]
        assert len(tail) == 4 and np.isnan(tail[:, :N_CLINICAL]).all()
        last = values[offsets[i] + cut[i] - 1]
        np.testing.assert_array_equal(tail[:, 34:39], np.broadcast_to(last[34:39], (4, 5)))
        np.testing.assert_array_equal(tail[:, ICULOS], last[ICULOS] + np.arange(1, 5))
        assert (e[o[i] + cut[i] : o[i + 1]] == 1).all()


def test_silence_drift_of_a_held_model_is_zero():
    model = v3_model("cfc")
    rng = np.random.default_rng(0)
    values = rng.normal(50, 10, size=(60, 40)).astype(np.float32)
    values[:, ICULOS] = np.tile(np.arange(1, 13), 5)
    offsets = np.arange(0, 61, 12)

    def predict(v, e, o):
        out = []
        with torch.no_grad():
            for i in range(len(o) - 1):
                lo, hi = o[i], o[i + 1]
                out.append(model.risk(model(torch.from_numpy(v[None, lo:hi]), torch.from_numpy(e[None, lo:hi])))[0].numpy())
        return np.concatenate(out)

    drift = silence_drift(predict, values, offsets, threshold=1.0)
    assert [r["empty_hours"] for r in drift["rows"]] == [0, 6, 12, 24]
    assert all(r["mean_change"] == pytest.approx(0.0, abs=1e-7) for r in drift["rows"])
    model.config.hold_silent = False  # the same weights stepping silent hours do drift
    moved = silence_drift(predict, values, offsets, threshold=1.0)
    assert any(abs(r["mean_change"]) > 1e-6 for r in moved["rows"])


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from tests.training.conftest import make_archive, synthetic_stays

    return make_archive(tmp_path_factory.mktemp("v3"), synthetic_stays(n=100, seed=11))


def test_baseline_cli_writes_the_same_report_as_the_network_runs(archive, tmp_path):
    import json

    from training.__main__ import main as cli

    rc = cli(["sepsis", "baseline", "--data", str(archive), "--max-rounds", "20", "--threads", "1",
              "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert rc == 0
    out = tmp_path / "lgbm-s0"
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "lightgbm" and len(m["features"]) == 108
    assert {"auroc", "utility", "alarms_per_patient_day"} <= set(m["test"])
    assert m["n_train_stays"] + m["n_val_stays"] + m["n_test_stays"] == 100
    assert 0.0 <= m["threshold"] <= 1.0
    for png in ("roc_test.png", "pr_test.png", "utility_vs_threshold_val.png"):
        assert (out / png).stat().st_size > 1000


def test_v3_recipe_trains_ensembles_calibrates_and_exports_a_held_step(archive, tmp_path):
    """The shipped recipe end to end on a fixture: two seeds, one ensemble, calibration, export,
    and the exported step holds its risk through empty observations."""
    import json

    from models.runtime import StepRuntime
    from training.__main__ import main as cli

    common = ["--data", str(archive), "--hidden", "8", "--backbone-units", "8", "--bins", "4",
              "--encoder-units", "16", "--skip", "--hold-silent", "--silence-rate", "0.5", "--batching", "random",
              "--select", "auroc", "--epochs", "2", "--batch-size", "32", "--out", str(tmp_path / "results"),
              "--checkpoints", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
              "--device", "cpu"]
    for seed in (0, 1):  # the second seed's batches run as sub-batches of similar length (model.by_length)
        chunk = ["--length-chunk", "8"] if seed else []
        assert cli(["sepsis", "train", *common, *chunk, "--seed", str(seed), "--run", f"v3-s{seed}"]) == 0
    m = json.loads((tmp_path / "results/v3-s0/metrics.json").read_text())
    assert m["config"]["model"]["hold_silent"] and m["config"]["batching"] == "random"
    assert json.loads((tmp_path / "results/v3-s1/metrics.json").read_text())["config"]["length_chunk"] == 8
    assert [r["empty_hours"] for r in m["silence_drift_test"]["rows"]] == [0, 6, 12, 24]
    ens = tmp_path / "runs/ens.pt"
    assert cli(["sepsis", "ensemble", "--checkpoints", str(tmp_path / "runs/v3-s0/best.pt"),
                str(tmp_path / "runs/v3-s1/best.pt"), "--save", str(ens)]) == 0
    assert cli(["sepsis", "calibrate", "--checkpoint", str(ens), "--data", str(archive), "--run", "ens",
                "--out", str(tmp_path / "results"), "--save", str(tmp_path / "runs/ens-cal.pt"),
                "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    out = tmp_path / "models/sepsis-cfc/4"
    assert cli(["sepsis", "export", "--checkpoint", str(tmp_path / "runs/ens-cal.pt"),
                "--metrics", str(tmp_path / "results/ens/metrics.json"), "--out", str(out), "--version", "4"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["core"] == "cfc ensemble of 2"
    assert any("leaves the risk unchanged" in line for line in card["limitations"])
    drift = tmp_path / "drift"
    assert cli(["sepsis", "silence-drift", "--model", str(out), "--data", str(archive), "--split", "all",
                "--out", str(drift), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    rows = json.loads((drift / "silence_drift_sepsis-cfc-4.json").read_text())["rows"]
    assert (drift / "silence_drift.png").stat().st_size > 1000
    assert all(abs(r["mean_change"]) < 1e-6 for r in rows)

    runtime = StepRuntime.open(out, device="cpu")
    obs = np.full((5, 40), np.nan, np.float32)
    obs[:, 34:] = [60, 1, 0, 1, -10, 1]
    obs[0, :8] = [88, 97, 37.2, 120, 80, 60, 18, np.nan]
    obs[:, 39] = np.arange(1, 6)
    risk = runtime.run_sequence(obs, np.array([0, 1, 1, 1, 1], np.float32))
    assert np.all(risk[1:] == risk[0])


def test_ensemble_cli_names_a_missing_checkpoint(tmp_path, capsys):
    from training.__main__ import main as cli

    assert cli(["sepsis", "ensemble", "--checkpoints", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
                "--save", str(tmp_path / "e.pt")]) == 2
    assert "a.pt: no such file" in capsys.readouterr().err
