"""A shipped step against the checkpoint it was exported from: each stay hour by hour through the ONNX
step (`models.runtime`, CPU provider) against the PyTorch sequence forward, largest difference in risk.

    python bench/onnx_parity.py --checkpoint runs/cf/cfc128-v4-phys1/ensemble.pt --model models/sepsis-cfc/4 \\
        --data ../shared/data/physionet2019/physionet2019_dev.tar.xz --stays 200
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from models.contract import elapsed_hours  # noqa: E402
from models.runtime import StepRuntime  # noqa: E402
from training.sepsis.data import load_cohort  # noqa: E402
from training.sepsis.ensemble import load_model  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the checkpoint `sepsis export` took (best.pt or ensemble.pt)")
    p.add_argument("--model", required=True, help="the exported folder, models/<name>/<version>")
    p.add_argument("--data", required=True)
    p.add_argument("--stays", type=int, default=200, help="a seeded random N of the archive's stays")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=".cache/sepsis")
    a = p.parse_args(argv)
    model = load_model(torch.load(a.checkpoint, map_location="cpu", weights_only=False)).eval()
    runtime = StepRuntime.open(Path(a.model), device="cpu")
    cohort = load_cohort(a.data, cache_dir=Path(a.cache_dir), progress=False)
    elapsed = elapsed_hours(cohort.values, cohort.offsets)
    picked = np.random.default_rng(a.seed).choice(len(cohort), min(a.stays, len(cohort)), replace=False)
    worst, hours = 0.0, 0
    for i in tqdm(picked, desc="stays", unit="stay"):
        lo, hi = cohort.offsets[i], cohort.offsets[i + 1]
        onnx_risk = runtime.run_sequence(cohort.values[lo:hi], elapsed[lo:hi])
        with torch.no_grad():
            x, e = torch.from_numpy(cohort.values[lo:hi])[None], torch.from_numpy(elapsed[lo:hi])[None]
            torch_risk = model.risk(model(x, e))[0].numpy()
        worst, hours = max(worst, float(np.abs(onnx_risk - torch_risk).max())), hours + hi - lo
    print(f"{len(picked)} stays, {hours} hours: largest |ONNX step - PyTorch sequence| in risk = {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
