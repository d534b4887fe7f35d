from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from training.cores.base import RecurrentCore


class LSTMCore(RecurrentCore):
    """An LSTM cell behind the core interface; state is [h, c].

    An LSTM has no notion of elapsed time, so callers that care (sepsis) pass the time span as an
    input feature, as the reference study did; `dt` is ignored here.

    `forward` over sequences (with `packed`, the default) runs torch's whole-sequence LSTM (cuDNN on
    a GPU, oneDNN on a CPU) with the cell's own weights over each sample's masked steps only: a held
    step changes nothing in an LSTM, so the state after step t is the LSTM over the steps kept up to
    t. The same outputs as stepping the cell (`step`, what is exported) through every step, without
    one kernel launch per step and without stepping padding or the hours a hold-silent model holds
    through. `packed = False` steps the cell (the reference, kept to compare).
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.state_size = 2 * hidden_size
        self.cell = nn.LSTMCell(input_size, hidden_size)
        self.packed = True
        # the whole-sequence kernel's frame, always run with the cell's parameters (functional_call): kept
        # out of the module's registry, so checkpoints, parameter counts and optimisers see the cell only,
        # and built on the meta device, so it draws no random numbers (the weights seeded after it are
        # what they were before the frame existed) and holds no memory
        self.__dict__["_sequence"] = nn.LSTM(input_size, hidden_size, batch_first=True, device="meta")

    def step(self, x: torch.Tensor, state: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        h, c = state.split(self.hidden_size, dim=1)
        h, c = self.cell(x, (h, c))
        return torch.cat([h, c], dim=1)

    def forward(self, x, dt=None, mask=None, state=None):
        if not self.packed:
            return super().forward(x, dt, mask, state)
        b, t, _ = x.shape
        if state is None:
            state = self.initial_state(b, x.device, x.dtype)
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=x.device)
        kept = mask.sum(dim=1)
        outputs = state[:, None, : self.hidden_size].expand(b, t, self.hidden_size)
        rows = torch.nonzero(kept > 0).squeeze(1)
        if len(rows) == 0:
            return outputs.contiguous(), state
        # each row's kept steps moved to the front, in order
        order = torch.argsort((~mask[rows]).to(torch.int8), dim=1, stable=True)
        front = torch.gather(x[rows], 1, order[:, :, None].expand(-1, -1, x.shape[2]))
        packed = pack_padded_sequence(front, kept[rows].cpu(), batch_first=True, enforce_sorted=False)
        h0, c0 = state[rows].split(self.hidden_size, dim=1)
        weights = {"weight_ih_l0": self.cell.weight_ih, "weight_hh_l0": self.cell.weight_hh,
                   "bias_ih_l0": self.cell.bias_ih, "bias_hh_l0": self.cell.bias_hh}
        if x.is_cuda:  # cuDNN re-lays the weights it is given into one buffer in place: give it copies, not the cell's
            weights = {k: w.clone() for k, w in weights.items()}
        with warnings.catch_warnings(), float32_rnn(x.is_cuda):
            # cuDNN would rather have one flat weight buffer; the cell's are four
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            out, (h_n, c_n) = functional_call(self._sequence, weights, (packed, (h0[None], c0[None])))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)
        # the output at step t is the one after the last kept step up to t (the initial one before any)
        last = torch.cumsum(mask[rows].to(torch.int64), dim=1) - 1
        held = torch.gather(out, 1, last.clamp_min(0)[:, :, None].expand(-1, -1, self.hidden_size))
        held = torch.where((last >= 0)[:, :, None], held, outputs[rows])
        outputs = outputs.index_put((rows,), held)
        final = state.index_put((rows,), torch.cat([h_n[0], c_n[0]], dim=1))
        return outputs, final


@contextlib.contextmanager
def float32_rnn(cuda: bool):
    """cuDNN runs RNNs in TF32 by default on Ampere and later GPUs; the cell, the other matmuls of
    training and the exported step run in float32, so the sequence does too (a no-op off CUDA)."""
    if not cuda:
        yield
        return
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if rnn is not None and hasattr(rnn, "fp32_precision"):  # torch 2.9 and later
        before, rnn.fp32_precision = rnn.fp32_precision, "ieee"
        try:
            yield
        finally:
            rnn.fp32_precision = before
        return
    before, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before
