from __future__ import annotations

import torch
from torch import nn


class RecurrentCore(nn.Module):
    """Base class: subclasses implement `step`; `forward` unrolls it over a padded batch."""

    input_size: int
    hidden_size: int
    state_size: int

    def initial_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch, self.state_size, device=device, dtype=dtype)

    def output(self, state: torch.Tensor) -> torch.Tensor:
        """The features a head reads from a state."""
        return state[:, : self.hidden_size]

    def step(self, x: torch.Tensor, state: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        dt: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, F]; dt [B, T] or [B, T, 1] time spans (1 when None); mask [B, T] true on real steps.

        Returns (outputs [B, T, hidden], final state [B, S]); the final state is the state after
        each sample's last real step.
        """
        b, t, _ = x.shape
        if state is None:
            state = self.initial_state(b, x.device, x.dtype)
        if dt is None:
            dt = torch.ones(b, t, 1, device=x.device, dtype=x.dtype)
        elif dt.dim() == 2:
            dt = dt.unsqueeze(-1)
        outputs = []
        for i in range(t):
            new_state = self.step(x[:, i], state, dt[:, i])
            if mask is not None:
                state = torch.where(mask[:, i, None], new_state, state)
            else:
                state = new_state
            outputs.append(self.output(state))
        return torch.stack(outputs, dim=1), state
