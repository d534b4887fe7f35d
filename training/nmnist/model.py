"""Per-bin 2-layer conv front end -> recurrent core (CfC or LSTM, 128) -> masked mean -> 10 classes."""
from __future__ import annotations

import torch
from torch import nn

from training.cores import make_core
from training.loop import masked_mean


class NMNISTNet(nn.Module):
    def __init__(self, core: str = "cfc", hidden: int = 128, feature_size: int = 128,
                 time_feature: bool = False, n_classes: int = 10):
        super().__init__()
        # 34x34 -> 17x17 -> 9x9
        self.front = nn.Sequential(
            nn.Conv2d(2, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 9 * 9, feature_size), nn.ReLU(),
        )
        self.core_kind = core
        # the LSTM cannot take time spans, so where time is real it gets them as an input feature
        self.time_feature = time_feature
        self.core = make_core(core, feature_size + int(time_feature), hidden)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor, dt: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t = x.shape[:2]
        feats = self.front(x.flatten(0, 1)).view(b, t, -1)
        if dt is None:
            dt = torch.ones(b, t, device=x.device, dtype=feats.dtype)
        if self.time_feature:
            feats = torch.cat([feats, dt.unsqueeze(-1).to(feats.dtype)], dim=-1)
        out, _ = self.core(feats, dt if self.core_kind == "cfc" else None, mask)
        return self.head(masked_mean(out, mask))
