"""What the model should do where physiology is known and the data leave it open.

Sepsis-3 and the SOFA score say which way thirteen vital signs and labs push the risk (a falling
blood pressure, a rising lactate, a falling platelet count ...). The hourly labels do not say it
everywhere: a lactate of 6 is rare, usually drawn when the team already suspects shock, so a model
fitted to the labels alone may score it lower than a lactate of 1. Two tools, one table:

- `direction_shares`, the measurement: each stay cut at one hour, the variable set to its normal
  reference value in one copy and to its abnormal one in the other, everything else as measured;
  the share of stays whose risk at that hour is higher in the abnormal copy;
- `PhysiologyPenalty`, for training: the same pair of copies at a random hour of each training
  stay, at two random points along the normal -> abnormal line (and a little past it), and a hinge
  on the logit falling from the less abnormal to the more abnormal copy. It acts only where the
  model is wrong, at the hour changed and every later hour, so it shapes what the labels leave open
  and leaves the rest to them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.contract import INDEX
from models.reference import REFERENCES


@dataclass(frozen=True)
class Direction:
    variable: str
    normal: float     # a normal adult value, PhysioNet units
    abnormal: float   # clearly abnormal in the septic direction
    lowest: float     # training moves no further than these (past `abnormal`, inside physiology)
    highest: float


# How far training may move each variable (past its abnormal value, inside physiology). The normal
# and abnormal values themselves are the one documented table, models/reference_values.csv, which
# the exported model's plausibility check (training/sepsis/plausibility.py) reads too.
_BOUNDS = {"HR": (30.0, 200.0), "Resp": (4.0, 50.0), "Temp": (34.0, 41.5), "SBP": (50.0, 200.0),
           "MAP": (35.0, 140.0), "O2Sat": (70.0, 100.0), "Creatinine": (0.3, 8.0), "WBC": (1.0, 40.0),
           "Lactate": (0.4, 12.0), "Platelets": (10.0, 500.0), "pH": (6.95, 7.55),
           "Bilirubin_total": (0.2, 12.0), "HCO3": (8.0, 35.0)}
DIRECTIONS: tuple[Direction, ...] = tuple(
    Direction(name, REFERENCES[name].normal, REFERENCES[name].abnormal, *bounds) for name, bounds in _BOUNDS.items())


def _tables(device) -> tuple[torch.Tensor, ...]:
    d = DIRECTIONS
    return (torch.tensor([INDEX[x.variable] for x in d], device=device),
            torch.tensor([x.normal for x in d], device=device),
            torch.tensor([x.abnormal for x in d], device=device),
            torch.tensor([x.lowest for x in d], device=device),
            torch.tensor([x.highest for x in d], device=device))


def set_at(obs: torch.Tensor, hour: torch.Tensor, column: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A copy of obs [B, T, 40] with obs[b, hour[b], column[b]] = value[b]."""
    out = obs.clone()
    out[torch.arange(len(hour), device=obs.device), hour, column] = value.to(obs.dtype)
    return out


@torch.no_grad()
def direction_shares(model, tensors, stays: np.ndarray, hour: int = 12, batch_size: int = 512) -> dict:
    """Per variable, over the stays at least `hour` hours long, cut at that hour: the share whose
    risk there is higher with the variable at its abnormal value than at its normal one, and the
    median risk ratio. (The same as the plausibility check, on the model's sequence form.)"""
    model.eval()
    long_enough = stays[tensors.lengths[stays] >= hour]
    index, normal, abnormal, _, _ = _tables(tensors.values.device)
    higher = np.zeros(len(DIRECTIONS))
    ratios: list[list[np.ndarray]] = [[] for _ in DIRECTIONS]
    for start in range(0, len(long_enough), batch_size):
        chunk = long_enough[start:start + batch_size]
        obs, dt, _, _ = tensors.batch(chunk)
        obs, dt = obs[:, :hour], dt[:, :hour]
        at = torch.full((len(chunk),), hour - 1, device=obs.device)
        for k in range(len(DIRECTIONS)):
            col = index[k].expand(len(chunk))
            pair = torch.cat([set_at(obs, at, col, normal[k].expand(len(chunk))),
                              set_at(obs, at, col, abnormal[k].expand(len(chunk)))])
            risk = model.risk(model(pair, torch.cat([dt, dt]))[:, -1]).double().cpu().numpy()
            low, high = risk[: len(chunk)], risk[len(chunk):]
            higher[k] += (high > low).sum()
            ratios[k].append(high / np.maximum(low, 1e-12))
    n = len(long_enough)
    return {"hour": hour, "stays": int(n),
            "variables": {d.variable: {"normal": d.normal, "abnormal": d.abnormal,
                                       "share_higher": float(higher[k] / n) if n else None,
                                       "median_risk_ratio": float(np.median(np.concatenate(ratios[k]))) if n else None}
                          for k, d in enumerate(DIRECTIONS)}}


def carried_hours(obs: torch.Tensor, hour: torch.Tensor, column: torch.Tensor, dt: torch.Tensor,
                  lengths: torch.Tensor, carry_hours: float) -> torch.Tensor:
    """[n, T] bool: the hours after `hour[b]` at which the value set there in column[b] is still that
    variable's latest (not measured again since) and at most `carry_hours` old (clock from dt [n, T])."""
    n, t = obs.shape[:2]
    steps = torch.arange(t, device=obs.device)[None, :]
    later = steps > hour[:, None]
    measured = ~torch.isnan(obs[torch.arange(n, device=obs.device), :, column])
    remeasured = torch.cumsum((measured & later).to(torch.int32), dim=1) > 0
    clock = torch.cumsum(dt, dim=1)
    age = clock - clock.gather(1, hour[:, None])
    return later & ~remeasured & (age <= carry_hours) & (steps < lengths[:, None])


class PhysiologyPenalty:
    """hinge(logit at the less abnormal value - logit at the more abnormal value), averaged over the
    hours from the changed one to the stay's end, for `stays` stays of a batch.

    Each chosen stay gets one of the thirteen variables and one hour at random; the two values lie
    at u_lo < u_hi along normal -> abnormal (u in [0, reach]; 1 is the abnormal reference), clipped
    to the variable's physiological range. At the changed hour itself `margin` asks for at least that
    much logit per whole normal -> abnormal span, so a flat response is not taken as right; later
    hours only must not fall (a value long since re-measured may stop counting).

    `carry_hours` > 0 asks for the margin also at the later hours where the changed value is carried:
    not measured again since and at most that many hours old (`carried_hours`). Why: the ward reads
    reasons at the latest hour, where a lactate drawn hours before is the value that counts, and with
    the margin at the changed hour alone sepsis-cfc/4 still scored some such carried lactates lower
    than a normal one (results/sepsis/plausibility/sepsis-cfc-4). 0 (the default, and sepsis-cfc/4's
    recipe) keeps the margin at the changed hour only."""

    def __init__(self, weight: float, stays: int = 64, margin: float = 0.1, reach: float = 1.5, seed: int = 0,
                 carry_hours: float = 0.0):
        if weight < 0 or stays < 1 or margin < 0 or reach <= 0 or carry_hours < 0:
            raise ValueError(f"physiology penalty: weight {weight}, stays {stays}, margin {margin}, reach {reach}, "
                             f"carry_hours {carry_hours}: need weight >= 0, stays >= 1, margin >= 0, reach > 0, "
                             "carry_hours >= 0")
        self.weight, self.stays, self.margin, self.reach = weight, stays, margin, reach
        self.carry_hours = carry_hours
        self.generator = torch.Generator().manual_seed(seed + 104729)

    def __call__(self, model, obs: torch.Tensor, dt: torch.Tensor, lengths) -> torch.Tensor:
        dev = obs.device
        n = min(self.stays, obs.shape[0])
        lengths = torch.as_tensor(lengths[:n], device=dev)
        obs, dt = obs[:n], dt[:n]
        u = torch.rand(n, 4, generator=self.generator).to(dev)
        index, normal, abnormal, lowest, highest = _tables(dev)
        k = (u[:, 0] * len(DIRECTIONS)).long().clamp_max(len(DIRECTIONS) - 1)
        hour = (u[:, 1] * lengths.float()).long().clamp_max(lengths - 1)
        a, b = u[:, 2] * self.reach, u[:, 3] * self.reach
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        span = abnormal[k] - normal[k]

        def value(t):
            return torch.minimum(torch.maximum(normal[k] + t * span, lowest[k]), highest[k])

        pair = torch.cat([set_at(obs, hour, index[k], value(lo)), set_at(obs, hour, index[k], value(hi))])
        steps = torch.arange(obs.shape[1], device=dev)[None, :]
        valid = steps < lengths[:, None]
        after = (steps >= hour[:, None]) & valid
        logits = model(pair, torch.cat([dt, dt]), torch.cat([valid, valid]))
        # the margin only at the hour changed: later hours must not fall, but may forget
        asked = steps == hour[:, None]
        if self.carry_hours:
            asked = asked | carried_hours(obs, hour, index[k], dt, lengths, self.carry_hours)
        margin = self.margin * (hi - lo)[:, None] * asked
        hinge = torch.relu(logits[:n] - logits[n:] + margin) * after
        return self.weight * (hinge.sum(1) / after.sum(1).clamp_min(1)).mean()
