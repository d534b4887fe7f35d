from __future__ import annotations

import torch
from ncps.torch import CfCCell

from training.cores.base import RecurrentCore


class CfCCore(RecurrentCore):
    """The ncps `CfCCell`, driven one step at a time with a time span per sample and per step.

    `ncps.torch.CfC` broadcasts a [B] time-span vector against [B, H] activations the wrong way
    (ncps issues #81 and #83), so the wrapper is not used: the span goes to the cell as [B, 1].
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        mode: str = "default",
        backbone_units: int = 128,
        backbone_layers: int = 1,
        backbone_dropout: float = 0.0,
        activation: str = "lecun_tanh",
    ):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.state_size = hidden_size
        self.cell = CfCCell(
            input_size,
            hidden_size,
            mode=mode,
            backbone_activation=activation,
            backbone_units=backbone_units,
            backbone_layers=backbone_layers,
            backbone_dropout=backbone_dropout,
        )

    def step(self, x: torch.Tensor, state: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        new_hidden, _ = self.cell(x, state, dt.reshape(-1, 1))
        return new_hidden
