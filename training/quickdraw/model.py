"""Point sequence (dx, dy, x, y, pen) -> recurrent core (CfC or LSTM, 256) -> masked mean -> classes."""
from __future__ import annotations

import torch
from torch import nn

from training.cores import make_core
from training.loop import masked_mean

N_FEATURES = 5


class QuickDrawNet(nn.Module):
    def __init__(self, core: str = "cfc", hidden: int = 256, time_feature: bool = False,
                 n_classes: int = 10):
        super().__init__()
        self.core_kind = core
        self.time_feature = time_feature  # the LSTM gets real pen timing as an input feature
        self.core = make_core(core, N_FEATURES + int(time_feature), hidden)
        self.head = nn.Linear(hidden, n_classes)
        # per-feature scaling from the training set (dx, dy are ~100x smaller than x, y)
        self.register_buffer("feat_mean", torch.zeros(N_FEATURES))
        self.register_buffer("feat_std", torch.ones(N_FEATURES))

    def set_normalisation(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        real = x[mask.bool()]
        self.feat_mean.copy_(real.mean(dim=0))
        self.feat_std.copy_(real.std(dim=0).clamp_min(1e-3))

    def forward(self, x: torch.Tensor, dt: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if dt is None:
            dt = torch.ones(x.shape[:2], device=x.device, dtype=x.dtype)
        x = (x - self.feat_mean) / self.feat_std
        if self.time_feature:
            x = torch.cat([x, dt.unsqueeze(-1).to(x.dtype)], dim=-1)
        out, _ = self.core(x, dt if self.core_kind == "cfc" else None, mask)
        return self.head(masked_mean(out, mask))
