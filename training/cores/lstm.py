from __future__ import annotations

import torch
from torch import nn

from training.cores.base import RecurrentCore


class LSTMCore(RecurrentCore):
    """An LSTM cell behind the core interface; state is [h, c].

    An LSTM has no notion of elapsed time, so callers that care (sepsis) pass the time span as an
    input feature, as the reference study did; `dt` is ignored here.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.state_size = 2 * hidden_size
        self.cell = nn.LSTMCell(input_size, hidden_size)

    def step(self, x: torch.Tensor, state: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        h, c = state.split(self.hidden_size, dim=1)
        h, c = self.cell(x, (h, c))
        return torch.cat([h, c], dim=1)
