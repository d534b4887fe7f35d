"""Gradient-boosted trees as a member of the streaming step.

The boosting peer (`baseline.py`) reads nothing the step does not already keep: per variable the
last value, how often it was measured and the hours since. So its boosters can run *inside* the
step, on the step's own per-variable memory, beside the CfC members: one ONNX graph, one state,
one hold rule for hours that measure nothing (`SepsisModel._held_step_logit`). Nothing is computed
outside the step, so serving and evaluation still cannot drift apart.

`TreeEnsemble` runs the boosters with LightGBM's own rules both ways: LightGBM itself in PyTorch,
and ONNX-ML's TreeEnsembleRegressor (ONNX Runtime's tree kernel) in the exported graph, written
from the boosters' dump with two rules made explicit:
- a value goes left when `value <= threshold`; LightGBM compares in double precision, the graph in
  float32, so each threshold is rounded *down* to the largest float32 not above it: for a float32
  value both comparisons then agree exactly;
- a missing value (NaN) follows the node's default direction when the node learned one
  (`missing_type` "NaN"); otherwise it counts as 0 (`missing_type` "None"). Boosters that treat 0
  as missing (`zero_as_missing`) are refused.
Held equal to `Booster.predict(raw_score=True)` in `tests/training/test_sepsis_blend.py`.

Why not a converter (onnxmltools): the trees must read the step's memory and sit under its hold rule
inside one exported graph, so they are emitted by the step's own export; and a double threshold
written into ONNX's float `nodes_values` as is rounds to nearest, which sends a value lying between
the two the other way than LightGBM does.
"""
from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn

from models.contract import FEATURES, N_CLINICAL, N_FEATURES
from training.sepsis.features import Featurizer
from training.sepsis.model import ModelConfig, SepsisModel

ZERO_AS_MISSING = "Zero"  # LightGBM's zero_as_missing=True: not supported (the peer never sets it)
ML_OPSET = 3  # ai.onnx.ml's TreeEnsembleRegressor


def _float32_at_most(threshold: float) -> float:
    """The largest float32 not above `threshold` (a float32 x satisfies x <= t iff x <= this)."""
    big = float(np.finfo(np.float32).max)
    if threshold >= big:
        return big
    t = np.float32(threshold)
    if float(t) > threshold:
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


def _flatten(node: dict, tree: int, nodes: list, leaves: list, first: int) -> int:
    """Append `node` and its subtree to `nodes` ([tree, id, input, threshold, mode, NaN goes left,
    left id, right id]) and its leaves to `leaves` ([tree, id, value]); return its id in the tree
    (ids count from the tree's first row, `first`, in `nodes`)."""
    i = len(nodes) - first
    row = [tree, i, 0, 0.0, "LEAF", 0, 0, 0]
    nodes.append(row)
    if "split_feature" not in node:
        leaves.append([tree, i, float(node.get("leaf_value", 0.0))])
        return i
    if node.get("decision_type", "<=") != "<=":
        raise ValueError(f"tree node decision {node.get('decision_type')!r}: only numerical '<=' splits are supported")
    missing = node.get("missing_type", "None")
    if missing == ZERO_AS_MISSING:
        raise ValueError("a tree treats 0 as missing (zero_as_missing): not supported")
    threshold = _float32_at_most(float(node["threshold"]))
    # "NaN": a missing value follows the learned default; "None": it counts as 0
    nan_left = bool(node.get("default_left", True)) if missing == "NaN" else (0.0 <= threshold)
    left = _flatten(node["left_child"], tree, nodes, leaves, first)
    right = _flatten(node["right_child"], tree, nodes, leaves, first)
    row[2:] = [int(node["split_feature"]), threshold, "BRANCH_LEQ", int(nan_left), left, right]
    return i


class _Exported(torch.autograd.Function):
    """Emits ai.onnx.ml's TreeEnsembleRegressor in the exported graph (ONNX Runtime's own tree
    kernel); outside an export `TreeEnsemble` never calls it."""

    @staticmethod
    def forward(ctx, x, module_id: int):
        return _LIVE[module_id]._lightgbm(x)

    @staticmethod
    def symbolic(g, x, module_id: int):
        a = _LIVE[module_id].onnx_attributes
        out = g.op("ai.onnx.ml::TreeEnsembleRegressor", x, n_targets_i=1, aggregate_function_s="SUM",
                    post_transform_s="NONE", base_values_f=[0.0],
                    nodes_treeids_i=a["nodes_treeids"], nodes_nodeids_i=a["nodes_nodeids"],
                    nodes_featureids_i=a["nodes_featureids"], nodes_values_f=a["nodes_values"],
                    nodes_modes_s=a["nodes_modes"], nodes_truenodeids_i=a["nodes_truenodeids"],
                    nodes_falsenodeids_i=a["nodes_falsenodeids"],
                    nodes_missing_value_tracks_true_i=a["nodes_missing_value_tracks_true"],
                    target_treeids_i=a["target_treeids"], target_nodeids_i=a["target_nodeids"],
                    target_ids_i=a["target_ids"], target_weights_f=a["target_weights"])
        # [rows, 1]: stated, since the exporter cannot infer an ONNX-ML operator's shape
        rows = x.type().sizes()[0] if x.type().sizes() else None
        out.setType(x.type().with_sizes([rows, 1]))
        return out


# the ensembles being exported, by id (the exporter passes only the id to `symbolic`); weak, so an
# exported ensemble is not kept alive by having been exported
_LIVE: "weakref.WeakValueDictionary[int, TreeEnsemble]" = weakref.WeakValueDictionary()


class TreeEnsemble(nn.Module):
    """inputs [..., F] -> [..., 1]: the boosters' mean raw score (a logit).

    Run by LightGBM itself in PyTorch (the boosters' model text is kept), and by ONNX Runtime's tree
    kernel in the exported step (ai.onnx.ml TreeEnsembleRegressor, opset ML_OPSET: pass
    `custom_opsets={"ai.onnx.ml": ML_OPSET}` to the exporter). The same splits both ways, leaf
    values summed in float32 there and in double here."""

    def __init__(self, model_strings: list[str]):
        super().__init__()
        import lightgbm as lgb

        if not model_strings:
            raise ValueError("a tree ensemble needs at least one booster")
        self.model_strings = list(model_strings)
        self.boosters = [lgb.Booster(model_str=m) for m in self.model_strings]
        dumps = [b.dump_model() for b in self.boosters]
        n_inputs = {d["max_feature_idx"] + 1 for d in dumps}
        if len(n_inputs) != 1:
            raise ValueError(f"boosters read different numbers of inputs: {sorted(n_inputs)}")
        self.n_inputs = n_inputs.pop()
        nodes: list = []
        leaves: list = []
        trees = [t["tree_structure"] for d in dumps for t in d["tree_info"]]
        for t, tree in enumerate(trees):
            _flatten(tree, t, nodes, leaves, len(nodes))
        scale = 1.0 / len(dumps)  # the boosters' mean
        columns = list(zip(*nodes))
        self.onnx_attributes = {
            "nodes_treeids": list(columns[0]), "nodes_nodeids": list(columns[1]),
            "nodes_featureids": list(columns[2]), "nodes_values": list(columns[3]), "nodes_modes": list(columns[4]),
            "nodes_missing_value_tracks_true": list(columns[5]), "nodes_truenodeids": list(columns[6]),
            "nodes_falsenodeids": list(columns[7]),
            "target_treeids": [leaf[0] for leaf in leaves], "target_nodeids": [leaf[1] for leaf in leaves],
            "target_ids": [0] * len(leaves), "target_weights": [leaf[2] * scale for leaf in leaves]}

    def _lightgbm(self, x: torch.Tensor) -> torch.Tensor:
        data = x.detach().cpu().numpy().astype(np.float64)
        raw = sum(b.predict(data, raw_score=True) for b in self.boosters) / len(self.boosters)
        return torch.as_tensor(np.asarray(raw, dtype=np.float32).reshape(-1, 1), device=x.device)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        lead = inputs.shape[:-1]
        x = inputs.reshape(-1, inputs.shape[-1])
        if torch.onnx.is_in_onnx_export():
            _LIVE[id(self)] = self
            out = _Exported.apply(x, id(self))
        else:
            out = self._lightgbm(x)
        return out.reshape(*lead, 1)

    def to_dict(self) -> dict:
        return {"model_strings": self.model_strings}

    @classmethod
    def from_dict(cls, d: dict) -> "TreeEnsemble":
        return cls(d["model_strings"])


def deviation_arrays(deviations: dict[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """{column name: normal} -> ([40] bool: read as distance from normal, [40] normals)."""
    mask, center = np.zeros(N_FEATURES, dtype=bool), np.zeros(N_FEATURES, dtype=np.float32)
    for name, normal in (deviations or {}).items():
        if name not in FEATURES[:N_CLINICAL]:
            raise ValueError(f"deviations: {name!r} is not a vital sign or lab")
        mask[FEATURES.index(name)] = True
        center[FEATURES.index(name)] = normal
    return mask, center


class TreeInputs(Featurizer):
    """The featurizer's memory as the boosting peer reads it (`baseline.hourly_features`): the last
    value of each of the 40 columns (NaN until measured), then, for the 34 clinical columns, how many
    times each was measured and the hours since (NaN until measured).

    `deviations` ({column: normal}): those columns' last values enter as |value - normal|, for
    variables whose both tails are septic (a monotone booster can then only rise with either). The
    memory itself keeps the value as measured."""

    def __init__(self, deviations: dict[str, float] | None = None):
        super().__init__(torch.zeros(N_FEATURES), torch.ones(N_FEATURES), counts=True)
        self.n_features = N_FEATURES + 2 * N_CLINICAL
        self.deviations = dict(deviations or {})
        mask, center = deviation_arrays(self.deviations)
        self.register_buffer("deviation_mask", torch.from_numpy(mask))
        self.register_buffer("deviation_center", torch.from_numpy(center))

    def _features(self, last, since, seen, count, elapsed):
        seen = seen > 0.5
        nan = torch.full_like(last, float("nan"))
        c = N_CLINICAL
        if self.deviations:
            last = torch.where(self.deviation_mask, (last - self.deviation_center).abs(), last)
        return torch.cat([torch.where(seen, last, nan), count[..., :c], torch.where(seen, since, nan)[..., :c]], dim=-1)


TREE_CONFIG = ModelConfig(core="trees", hidden_size=0, dropout=0.0, counts=True, skip=True, hold_silent=True,
                          start_at_first=True)


class TreeModel(SepsisModel):
    """A SepsisModel whose per-hour function is a TreeEnsemble over `TreeInputs` (no encoder, no
    recurrent core): the same memory, the same start at the first measured hour and the same hold
    for hours that measure nothing as the CfC members, so it can sit beside them in one ensemble."""

    def __init__(self, trees: TreeEnsemble, deviations: dict[str, float] | None = None):
        nn.Module.__init__(self)
        if trees.n_inputs != N_FEATURES + 2 * N_CLINICAL:
            raise ValueError(f"trees read {trees.n_inputs} inputs; the step's memory gives {N_FEATURES + 2 * N_CLINICAL}")
        self.config = TREE_CONFIG
        self.featurizer = TreeInputs(deviations)
        self.encoder = None
        self.core = None
        self.dropout = nn.Identity()
        self.head = trees
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))
        self.length_chunk = 0

    def to_checkpoint(self) -> dict:
        return {"config": {"core": "trees", "deviations": self.featurizer.deviations}, "trees": self.head.to_dict()}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "TreeModel":
        return cls(TreeEnsemble.from_dict(checkpoint["trees"]), checkpoint["config"].get("deviations")).eval()
