"""A shipped ensemble step read back into PyTorch, from its ONNX file alone.

Cross-fitted checkpoints are not committed (`runs/` is not kept), but a shipped step's ONNX graph
holds every weight under the PyTorch parameter's name (`model.members.<i>.<parameter>`), and the few
constants the exporter folded (each member's quantile-bin lower edges and widths, the calibration)
in member order. So the ensemble can be rebuilt exactly and checked against the graph it came from:
`ensemble_from_onnx` refuses a rebuild whose risk or state differs from the ONNX step's by more than
`TOLERANCE` on a probe of new and continuing patients. What it cannot read off the weights (whether a
stay starts at its first measured hour) it finds the same way: the one setting that matches.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.contract import N_CLINICAL, N_FEATURES
from training.sepsis.ensemble import SepsisEnsemble
from training.sepsis.model import ModelConfig, SepsisModel

TOLERANCE = 1e-5
PREFIX = "model.members."


def _probe(hours: int = 24, seed: int = 0):
    """Rows of new patients: the first hours carry only demographics (where a stay's start matters),
    then sparse vitals and labs."""
    rng = np.random.default_rng(seed)
    b = 16
    for t in range(hours):
        obs = (rng.normal(size=(b, N_FEATURES)) * 10 + 50).astype(np.float32)
        obs[rng.random((b, N_FEATURES)) < 0.7] = np.nan
        if t < 3:
            obs[: b // 2, :N_CLINICAL] = np.nan
        yield obs, np.full((b, 1), 1.0 if t else 0.0, np.float32)


def _worst_difference(ensemble: SepsisEnsemble, session) -> float:
    state = np.zeros((16, ensemble.state_size), np.float32)
    mine = torch.zeros(16, ensemble.state_size)
    worst = 0.0
    with torch.no_grad():
        for obs, elapsed in _probe():
            risk, state = session.run(None, {"observation": obs, "elapsed_hours": elapsed, "state": state})
            r, mine = ensemble.step(torch.from_numpy(obs), torch.from_numpy(elapsed), mine)
            worst = max(worst, float(np.abs(risk - r.numpy()).max()), float(np.abs(state - mine.numpy()).max()))
    return worst


def _members(weights: dict[str, torch.Tensor], folded: dict[str, torch.Tensor], start_at_first: bool) -> list:
    def number(name: str) -> int:
        return int(name.rsplit("_", 1)[1])

    lower = [folded[n] for n in sorted((n for n in folded if n.startswith("onnx::Sub_")), key=number)]
    width = [folded[n] for n in sorted((n for n in folded if n.startswith("onnx::Clip_")), key=number)]
    count = 1 + max(int(n[len(PREFIX):].split(".", 1)[0]) for n in weights)
    if len(lower) == 1 and len(width) == 1:  # the exporter keeps one copy of edges all members share
        lower, width = lower * count, width * count
    owned = [{n[len(PREFIX) + len(f"{i}."):]: t for n, t in weights.items() if n.startswith(f"{PREFIX}{i}.")}
             for i in range(count)]
    members = []
    for i in range(count):
        # the exporter keeps one copy of a tensor several members hold (members trained on the same split
        # share their normalisation): take it from whichever member kept it; the parity check vouches
        own = {key: next(o[key] for o in owned if key in o) for key in dict.fromkeys(k for o in owned for k in o)}
        own.update(owned[i])
        bins = lower[i].shape[1] if len(lower) == count else 0
        edges = None
        if bins:
            # bin k spans [edge k, edge k + 1]: the folded lower edges, and the last upper edge from its width
            # (a zero-width bin is stored with width 1e-6 and becomes a step: its upper edge is its lower one)
            last = lower[i][:, -1] + torch.where(width[i][:, -1] > 1e-6, width[i][:, -1], torch.zeros(()))
            edges = torch.cat([lower[i], last[:, None]], dim=1)
        enc = own.get("encoder.0.weight")
        ff1 = own["core.cell.ff1.weight"]
        config = ModelConfig(core="cfc", hidden_size=ff1.shape[0], backbone_units=own["core.cell.backbone.0.weight"].shape[0],
                             backbone_layers=1, counts=True, bins=bins,
                             encoder_units=0 if enc is None else enc.shape[0],
                             skip=own["head.weight"].shape[1] > ff1.shape[0], hold_silent=True,
                             start_at_first=start_at_first)
        member = SepsisModel(config, own["featurizer.mean"], own["featurizer.std"], edges)
        state = {**own, "calibration": torch.tensor([1.0, 0.0])}
        if edges is not None:
            state["featurizer.edges"] = edges
        member.load_state_dict(state, strict=True)
        members.append(member.eval())
    return members


def ensemble_from_onnx(path: Path) -> SepsisEnsemble:
    """The CfC ensemble (v3 layout and later: hold state, quantile bins, hour-wise encoder) in
    `path`'s model.onnx, checked equal to it; ValueError when no rebuild matches."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    file = Path(path) / "model.onnx" if Path(path).is_dir() else Path(path)
    graph = onnx.load(str(file)).graph
    tensors = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    weights = {n: t for n, t in tensors.items() if n.startswith(PREFIX)}
    folded = {n: t for n, t in tensors.items() if not n.startswith(PREFIX)}
    scale = [t for n, t in folded.items() if n.startswith("onnx::Mul_") and t.dim() == 0]
    shift = [t for n, t in folded.items() if n.startswith("onnx::Add_") and t.dim() == 0]
    if not weights or len(scale) != 1 or len(shift) != 1:
        raise ValueError(f"{file}: not an exported CfC ensemble step (members' weights and one calibration)")
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    width = next(i.shape[1] for i in session.get_inputs() if i.name == "state")
    tried = []
    for start_at_first in (True, False):
        try:
            members = _members(weights, folded, start_at_first)
        except (KeyError, RuntimeError, ValueError) as e:
            raise ValueError(f"{file}: its weights do not fit a CfC member ({e})") from e
        ensemble = SepsisEnsemble(members).eval()
        ensemble.calibration.copy_(torch.tensor([float(scale[0]), float(shift[0])]))
        if ensemble.state_size != width:
            raise ValueError(f"{file}: its state holds {width} numbers, a rebuild with the hold state "
                             f"{ensemble.state_size}: members without the hold state are not supported")
        worst = _worst_difference(ensemble, session)
        if worst <= TOLERANCE:
            return ensemble
        tried.append(f"start_at_first={start_at_first}: {worst:.2g}")
    raise ValueError(f"{file}: no rebuild equals the ONNX step to {TOLERANCE} ({'; '.join(tried)})")
