from __future__ import annotations

import torch
from ncps.torch import CfCCell

from training.cores.base import RecurrentCore
from training.cores.cfc_route import REFERENCE
from training.cores.fast_cfc import FastOptions, Route, cfc_sequence, last_route, record_route, route_for


class CfCCore(RecurrentCore):
    """The ncps `CfCCell`, driven one step at a time with a time span per sample and per step.

    `ncps.torch.CfC` broadcasts a [B] time-span vector against [B, H] activations the wrong way
    (ncps issues #81 and #83), so the wrapper is not used: the span goes to the cell as [B, 1].

    `forward` over sequences runs `fast_cfc.cfc_sequence` (same weights, same function, hand-written
    backward) when `fast` is True, or when it is None and the input is on CUDA; otherwise the
    reference step loop (`cfc_route.choose_route` decides, `last_route` says what ran). `step` (what
    is exported to ONNX) always drives the cell itself.
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
        fast: bool | None = None,
        fast_options: FastOptions | None = None,
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
        self.fast = fast
        self.fast_options = fast_options or FastOptions()

    def route(self, x: torch.Tensor) -> Route:
        """The route `forward` takes for x."""
        return route_for(self.cell, x, self.fast_options, self.fast)

    @property
    def last_route(self) -> Route | None:
        """The route the last sequence ran (None before the first)."""
        return last_route(self.cell)

    def uses_fast_path(self, x: torch.Tensor) -> bool:
        # Backbone dropout while training draws masks per step; the reference loop keeps that exact.
        return self.route(x).kernels != REFERENCE

    def forward(self, x, dt=None, mask=None, state=None):
        route = self.route(x)
        if route.kernels != REFERENCE:
            return cfc_sequence(self.cell, x, dt, mask, state, self.fast_options)
        out = super().forward(x, dt, mask, state)
        record_route(self.cell, x, route)
        return out

    def step(self, x: torch.Tensor, state: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        new_hidden, _ = self.cell(x, state, dt.reshape(-1, 1))
        return new_hidden
