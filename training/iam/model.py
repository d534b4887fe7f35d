"""ResNet-style front end -> column sequence + positional encoding -> core -> per-column labels.

Cores: "cfc" (CfC 256, unidirectional), "lstm" (LSTM 256, unidirectional) and "bilstm" (two LSTM
256 cores, one over the reversed columns, concatenated to 512 features).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from training.cores import make_core
from training.iam.data import DOWNSAMPLE

CORES = ("cfc", "lstm", "bilstm")


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride=(1, 1)):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if c_in == c_out and stride == (1, 1) else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(c_out)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def positional_encoding(t: int, d: int, device=None) -> torch.Tensor:
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(t, d, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first `length` steps of [B, T, F]; padding stays at the end."""
    t = x.shape[1]
    ar = torch.arange(t, device=x.device)[None, :]
    idx = torch.where(ar < lengths[:, None], lengths[:, None] - 1 - ar, ar)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand_as(x))


class LineRecognizer(nn.Module):
    def __init__(self, n_labels: int, core: str = "cfc", hidden: int = 256, features: int = 128):
        super().__init__()
        if core not in CORES:
            raise ValueError(f"unknown core {core!r}: expected one of {CORES}")
        self.front = nn.Sequential(  # height 32 -> 4, width / 4
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            ResBlock(32, 64, (2, 2)), ResBlock(64, 128, (2, 2)), ResBlock(128, 128, (2, 1)),
        )
        self.proj = nn.Linear(128, features)
        self.core_kind = core
        self.cores = nn.ModuleList([make_core("lstm" if core == "bilstm" else core, features, hidden)
                                    for _ in range(2 if core == "bilstm" else 1)])
        self.head = nn.Linear(hidden * len(self.cores), n_labels)

    def forward(self, image: torch.Tensor, widths: torch.Tensor, column_transform=None):
        """image [B, 1, H, W] -> (log_probs [T, B, C], lengths [B]).

        column_transform(features, dt, mask) -> (features, dt, mask) alters the column sequence
        before the core (the temporal-dropout stress test)."""
        f = self.front(image).mean(dim=2).transpose(1, 2)  # [B, T, 128]
        b, t, _ = f.shape
        lengths = torch.clamp((widths.to(f.device) + DOWNSAMPLE - 1) // DOWNSAMPLE, 1, t)
        f = self.proj(f) + positional_encoding(t, self.proj.out_features, f.device)
        mask = torch.arange(t, device=f.device)[None, :] < lengths[:, None]
        dt = torch.ones(b, t, device=f.device, dtype=f.dtype)
        if column_transform is not None:
            f, dt, mask = column_transform(f, dt, mask)
            lengths = mask.sum(dim=1).clamp_min(1)
        out, _ = self.cores[0](f, dt if self.core_kind == "cfc" else None, mask)
        if len(self.cores) == 2:
            back, _ = self.cores[1](reverse_padded(f, lengths), None, mask)
            out = torch.cat([out, reverse_padded(back, lengths)], dim=-1)
        return self.head(out).log_softmax(-1).transpose(0, 1), lengths

    def core_parameters(self) -> int:
        return sum(p.numel() for c in self.cores for p in c.parameters())
