"""The LSTM core's whole-sequence path (torch's LSTM over each sample's kept steps) computes what
stepping its cell through every step computes: outputs, final state and gradients."""
import torch

from training.cores.lstm import LSTMCore


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 9, 7, generator=g)
    mask = torch.rand(5, 9, generator=g) > 0.4  # held steps anywhere, as a hold-silent model holds them
    mask[2] = False         # a sample with no kept step keeps its initial state
    mask[3, :4] = False     # kept steps only late
    mask[4] = True
    state = torch.randn(5, 10, generator=g)
    return x, mask, state


def run(packed, x, mask, state):
    torch.manual_seed(0)
    core = LSTMCore(7, 5)
    core.packed = packed
    x = x.clone().requires_grad_(True)
    out, final = core(x, None, mask, state)
    (out.pow(2).sum() + final.sum()).backward()
    grads = [p.grad for p in core.parameters()] + [x.grad]
    return out.detach(), final.detach(), grads


def test_the_whole_sequence_path_equals_stepping_the_cell():
    x, mask, state = batch()
    out, final, grads = run(True, x, mask, state)
    ref_out, ref_final, ref_grads = run(False, x, mask, state)
    assert torch.allclose(out, ref_out, atol=1e-6)
    assert torch.allclose(final, ref_final, atol=1e-6)
    assert torch.equal(out[2], state[2, :5].expand(9, 5))  # nothing kept: the initial output throughout
    for g, ref in zip(grads, ref_grads):
        assert torch.allclose(g, ref, atol=1e-5)


def test_without_a_mask_or_state_every_step_counts_from_a_new_state():
    x, _, _ = batch(1)
    torch.manual_seed(0)
    core = LSTMCore(7, 5)
    out, final = core(x)
    core.packed = False
    ref_out, ref_final = core(x)
    assert torch.allclose(out, ref_out, atol=1e-6) and torch.allclose(final, ref_final, atol=1e-6)


def test_the_cell_holds_the_only_weights():
    """Checkpoints, parameter counts and optimisers see the cell alone, as before the sequence path."""
    core = LSTMCore(7, 5)
    assert list(core.state_dict()) == ["cell.weight_ih", "cell.weight_hh", "cell.bias_ih", "cell.bias_hh"]
    assert sum(p.numel() for p in core.parameters()) == 4 * 5 * (7 + 5) + 2 * 4 * 5


def test_on_a_gpu_the_sequence_runs_in_float32_and_the_setting_comes_back():
    """cuDNN's RNNs default to TF32; the cell and the exported step run in float32."""
    from training.cores.lstm import float32_rnn

    rnn = torch.backends.cudnn.rnn
    before = rnn.fp32_precision
    with float32_rnn(True):
        assert rnn.fp32_precision == "ieee"
    assert rnn.fp32_precision == before
    with float32_rnn(False):
        assert rnn.fp32_precision == before
