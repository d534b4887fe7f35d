"""Temporal-dropout stress test: seeded masks, the zero and remove variants."""
import torch

from training.nmnist.model import NMNISTNet
from training.stress import keep_masks, remove_variant, run_stress, stress_transform, zero_variant


def test_keep_masks_are_seeded_and_only_drop_real_steps():
    valid = torch.ones(64, 20, dtype=torch.bool)
    valid[:, 15:] = False
    a, b = keep_masks(valid, 0.5, seed=7), keep_masks(valid, 0.5, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, keep_masks(valid, 0.5, seed=8))
    assert not (a & ~valid).any()  # padding is never "kept"
    assert a.any(dim=1).all()  # every sample keeps at least one step
    assert torch.equal(keep_masks(valid, 0.0, seed=7), valid)
    frac = 1 - a[valid].float().mean().item()
    assert 0.4 < frac < 0.6


def test_keep_mask_never_empties_a_sample():
    valid = torch.ones(500, 3, dtype=torch.bool)
    keep = keep_masks(valid, 0.9, seed=0)
    assert keep.any(dim=1).all()


def test_zero_variant_zeroes_dropped_inputs_and_keeps_time():
    x = torch.ones(1, 4, 2, 3, 3)  # N-MNIST-shaped input
    dt = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    keep = torch.tensor([[True, False, True, False]])
    x2, dt2, m2 = zero_variant(x, dt, mask, keep)
    assert x2[0, 1].abs().sum() == 0 and x2[0, 3].abs().sum() == 0
    assert torch.equal(x2[0, 0], x[0, 0])
    assert torch.equal(dt2, dt) and torch.equal(m2, mask)


def test_remove_variant_accumulates_time_of_dropped_steps():
    x = torch.arange(1.0, 7.0).reshape(1, 6, 1)
    dt = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    mask = torch.tensor([[True] * 5 + [False]])  # last step is padding
    keep = torch.tensor([[True, False, False, True, True, True]])
    x2, dt2, m2 = remove_variant(x, dt, mask, keep)
    assert m2.tolist() == [[True, True, True, False, False, False]]
    assert x2[0, :3, 0].tolist() == [1.0, 4.0, 5.0]
    assert dt2[0, :3].tolist() == [1.0, 2.0 + 3.0 + 4.0, 5.0]  # spans 2 and 3 roll into step 4
    assert x2[0, 3:].abs().sum() == 0


def test_remove_variant_sums_delta_features_and_loses_trailing_time():
    # features: [dx, absolute x]; dropping the middle step must keep dx consistent with x
    x = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 3.0], [4.0, 7.0]]])
    dt = torch.ones(1, 4)
    mask = torch.ones(1, 4, dtype=torch.bool)
    keep = torch.tensor([[True, False, True, False]])
    x2, dt2, m2 = remove_variant(x, dt, mask, keep, accumulate=[0])
    assert x2[0, :2].tolist() == [[0.0, 0.0], [3.0, 3.0]]
    assert dt2[0, :2].tolist() == [1.0, 2.0]  # the dropped last step's span is gone
    assert m2[0].tolist() == [True, True, False, False]


def test_remove_with_nothing_dropped_is_identity():
    x = torch.randn(3, 5, 4)
    dt = torch.rand(3, 5)
    mask = torch.ones(3, 5, dtype=torch.bool)
    x2, dt2, m2 = remove_variant(x, dt, mask, mask.clone())
    assert torch.allclose(x2, x) and torch.allclose(dt2, dt) and torch.equal(m2, mask)


def test_both_models_get_the_same_dropped_inputs():
    torch.manual_seed(0)
    data = {"x": torch.rand(6, 10, 2, 34, 34), "dt": torch.ones(6, 10),
            "mask": torch.ones(6, 10, dtype=torch.bool), "y": torch.zeros(6, dtype=torch.long),
            "index": torch.arange(6)}
    seen = {}
    for core in ("cfc", "lstm"):
        model = NMNISTNet(core=core, hidden=8, feature_size=8).eval()
        inputs = []

        def accuracy_under(transform, model=model, inputs=inputs):
            batch = transform(dict(data))
            inputs.append((batch["x"].clone(), batch["dt"].clone(), batch["mask"].clone()))
            with torch.no_grad():
                return float((model(batch["x"], batch["dt"], batch["mask"]).argmax(-1) == 0).float().mean())

        pts = run_stress(accuracy_under, data["mask"], seed=3, rates=(0.0, 0.5))
        assert [(p.variant, p.rate) for p in pts] == [("zero", 0.0), ("zero", 0.5),
                                                      ("remove", 0.0), ("remove", 0.5)]
        seen[core] = inputs
    for (xa, da, ma), (xb, db, mb) in zip(seen["cfc"], seen["lstm"]):
        assert torch.equal(xa, xb) and torch.equal(da, db) and torch.equal(ma, mb)


def test_stress_transform_uses_each_samples_own_mask():
    valid = torch.ones(4, 6, dtype=torch.bool)
    keep = keep_masks(valid, 0.5, seed=1)
    t = stress_transform("zero", keep)
    batch = {"x": torch.ones(2, 6, 1), "dt": torch.ones(2, 6), "mask": torch.ones(2, 6, dtype=torch.bool),
             "index": torch.tensor([3, 1])}
    out = t(batch)
    assert torch.equal(out["x"][..., 0].bool(), keep[[3, 1]])
