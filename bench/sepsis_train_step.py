"""One training step of the shipped sepsis recipe on real stays: how the core runs (CfC: the ncps
loop or the fast path; LSTM: its cell stepped, or torch's whole-sequence LSTM over the kept steps)
and whether a batch runs as sub-batches of similar length (`--length-chunk`,
training/sepsis/model.py:by_length), timed as the loop runs it.

    python bench/sepsis_train_step.py [--data ../shared/data/physionet2019/physionet2019_dev.tar.xz]
        [--core cfc|lstm] [--batches 6] [--threads 2] [--out results/sepsis/train_step/cpu_<core>.json]

A step: the hourly loss of 256 training stays of cross-fitting fold 0 drawn at random (the recipe's
batching), the physiology penalty (weight 1) on 64 of them, backward, AdamW. Every configuration
sees the same batches and starts from the same weights; the loss and penalty of each step are
printed beside the seconds, so equal numbers show the configurations compute the same thing.
Compare rows of one run only: this machine is shared and its speed drifts.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "physionet2019" / "physionet2019_dev.tar.xz"
# (how the core runs, stays per sub-batch): CfC through train.set_cfc_impl, LSTM through LSTMCore.packed
CONFIGS = {"cfc": [("reference", 0), ("fast", 0), ("reference", 32), ("fast", 32)],
           "lstm": [("stepped", 0), ("packed", 0), ("stepped", 32), ("packed", 32)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--core", choices=sorted(CONFIGS), default="cfc")
    p.add_argument("--batches", type=int, default=6, help="timed steps per configuration (after one warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=str(ROOT / ".cache" / "sepsis"))
    p.add_argument("--out", default=None, help="default results/sepsis/train_step/cpu_<core>.json")
    a = p.parse_args(argv)
    a.out = a.out or str(ROOT / "results" / "sepsis" / "train_step" / f"cpu_{a.core}.json")

    import numpy as np
    import torch
    from tqdm import tqdm

    from training.sepsis.batching import CohortTensors
    from training.sepsis.config import TrainConfig
    from training.sepsis.data import load_cohort
    from training.sepsis.model import SepsisModel
    from training.sepsis.physiology import PhysiologyPenalty
    from training.sepsis.train import make_split, normalisation, set_cfc_impl, training_edges

    torch.set_num_threads(a.threads)
    cohort = load_cohort(a.data, cache_dir=Path(a.cache_dir), progress=False)
    cfg = TrainConfig(data=a.data, folds=5, fold=0)
    cfg.model.start_at_first = True  # the shipped recipe (sepsis-cfc/4), and the ladder's LSTM rung
    cfg.model.core = a.core
    train = make_split(cohort, cfg).train
    mean, std = normalisation(cohort.values, cohort.offsets, train)
    edges = training_edges(cohort.values, cohort.offsets, train, cfg.model.bins)
    tensors = CohortTensors.from_cohort(cohort, "cpu")
    rng = np.random.default_rng(0)
    batches = [rng.choice(train, cfg.batch_size, replace=False) for _ in range(a.batches + 1)]
    padding = [float(tensors.lengths[b].max() * len(b) / tensors.lengths[b].sum()) for b in batches]

    rows = []
    for impl, chunk in tqdm(CONFIGS[a.core], desc="configurations"):
        torch.manual_seed(0)
        model = SepsisModel(cfg.model, mean, std, edges)
        if a.core == "lstm":
            model.core.packed = impl == "packed"
        else:
            set_cfc_impl(model, impl)
        model.length_chunk = chunk
        model.eval()  # no dropout draws: every configuration computes the same numbers
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        penalty = PhysiologyPenalty(1.0, seed=0)
        seconds, losses = [], []
        for i, stays in enumerate(batches):
            obs, dt, y, mask = tensors.batch(stays)
            t0 = time.perf_counter()
            logits = model(obs, dt, mask)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[mask], y[mask], pos_weight=torch.tensor(cfg.pos_weight))
            loss = loss + penalty(model, obs, dt, tensors.lengths[stays])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:  # the first is the warm-up
                seconds.append(time.perf_counter() - t0)
                losses.append(round(float(loss), 6))
        rows.append({"core": a.core, "route": impl, "length_chunk": chunk, "median_s": statistics.median(seconds),
                     "seconds": seconds, "losses": losses})
    base = rows[0]["median_s"]
    print(f"{a.core + ' route':<10} {'chunk':>5} {'median s/step':>14} {'speed-up':>9}  losses")
    for r in rows:
        r["speed_up"] = base / r["median_s"]
        print(f"{r['route']:<10} {r['length_chunk']:>5} {r['median_s']:>14.2f} {r['speed_up']:>8.1f}x  "
              f"{' '.join(f'{x:.4f}' for x in r['losses'])}")
    record = {"machine": platform.node(), "threads": a.threads, "torch": torch.__version__,
              "batch_size": cfg.batch_size, "padded_over_real_hours": padding[1:], "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(record, indent=2))
    print(f"padded hours / real hours per batch: {' '.join(f'{x:.1f}' for x in padding[1:])}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
