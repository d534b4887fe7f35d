"""Edit distance, CER and WER, and greedy CTC decoding."""
from __future__ import annotations

from typing import Sequence

import torch


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate over a corpus: total edits / total reference characters."""
    total = sum(len(r) for r in refs)
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(total, 1)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate over a corpus: total word edits / total reference words."""
    total = sum(len(r.split()) for r in refs)
    return sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps)) / max(total, 1)


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """log_probs [T, B, C]: best label per frame, repeats collapsed, blanks (0) removed."""
    best = log_probs.argmax(-1).T.cpu()
    out = []
    for row, n in zip(best, lengths.cpu().tolist()):
        seq, prev = [], 0
        for k in row[:n].tolist():
            if k != prev and k != 0:
                seq.append(k)
            prev = k
        out.append(seq)
    return out
