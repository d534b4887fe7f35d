"""Recurrent cores with one interface: a single `step` and a masked `forward` over sequences.

Every core maps (x [B, F], h [B, S], dt [B, 1]) -> h' [B, S] in `step`, where S is `state_size`
and the first `hidden_size` entries of the state are the output features. `forward` runs `step`
over a padded batch, holding each sample's state still on padded steps, so a batch gives the
same outputs as each sequence alone.
"""
from training.cores.base import RecurrentCore
from training.cores.cfc import CfCCore
from training.cores.lstm import LSTMCore


def make_core(kind: str, input_size: int, hidden_size: int, **kwargs) -> RecurrentCore:
    """Build a core by name: 'cfc' or 'lstm'."""
    if kind == "cfc":
        return CfCCore(input_size, hidden_size, **kwargs)
    if kind == "lstm":
        return LSTMCore(input_size, hidden_size, **kwargs)
    raise ValueError(f"unknown core {kind!r}: expected 'cfc' or 'lstm'")


__all__ = ["RecurrentCore", "CfCCore", "LSTMCore", "make_core"]
