"""Step latency of the exported sepsis step: ONNX Runtime (the serving path) against the PyTorch
step, by batch size, on the CPU and, where present, on CUDA. Prints a table; --out writes JSON.

    python bench/onnx_step.py --model models/sepsis-cfc/1 [--out bench/results/onnx_step_cpu.json]

Latency is the median wall time of one `step` call (inputs already in host memory for ONNX
Runtime, as the service has them; on the device for PyTorch), after warm-up. "ORT resident" keeps
the patients' states on the execution device between steps (IO binding), as `evaluate-onnx` does.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.runtime import StepRuntime  # noqa: E402
from training.sepsis.model import ModelConfig, SepsisModel  # noqa: E402

BATCHES = (1, 64, 1024, 16384)


def realistic_inputs(batch: int, state_size: int, seed: int = 0):
    """Hour-like observations: most variables missing, as in the data (about 80% NaN)."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(50, 20, size=(batch, 40)).astype(np.float32)
    obs[rng.random((batch, 40)) < 0.8] = np.nan
    return obs, np.ones((batch, 1), np.float32), np.zeros((batch, state_size), np.float32)


def median_seconds(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def repeats_for(batch: int) -> int:
    return 2000 if batch <= 64 else 200 if batch <= 1024 else 30


def torch_model_like(card, checkpoint: Path | None = None):
    """Latency does not depend on the weights: a model of the card's architecture, or the trained
    checkpoint itself (v3 models and ensembles cannot be rebuilt from the card alone); None when
    neither is at hand, and the PyTorch columns read n/a."""
    if checkpoint is not None:
        from training.sepsis.ensemble import load_model

        return load_model(torch.load(checkpoint, map_location="cpu"))
    if " " in card.core:
        return None
    for counts in (True, False):  # v1 models carry no measurement counts in their state
        cfg = ModelConfig(core=card.core, hidden_size=card.hidden_size, counts=counts)
        model = SepsisModel(cfg, torch.zeros(40), torch.ones(40)).eval()
        if model.state_size == card.state_size:
            return model
    return None


def bench(model_dir: Path, devices: list[str], checkpoint: Path | None = None) -> list[dict]:
    rows = []
    for device in devices:
        runtime = StepRuntime.open(model_dir, device=device)
        tmodel = torch_model_like(runtime.card, checkpoint)
        if tmodel is not None:
            tmodel = tmodel.to("cuda" if device == "cuda" else "cpu")
        for batch in BATCHES:
            obs, dt, state = realistic_inputs(batch, runtime.state_size)
            ort_s = median_seconds(lambda: runtime.step(obs, dt, state), repeats_for(batch))
            # the state kept on the execution device between steps: only observations in, risks out
            resident = runtime.resident_states(batch)
            resident_s = median_seconds(lambda: resident.step(obs, dt), repeats_for(batch))
            tdev = "cuda" if device == "cuda" else "cpu"
            t_obs, t_dt, t_state = (torch.from_numpy(a).to(tdev) for a in (obs, dt, state))

            def torch_step():
                with torch.no_grad():
                    tmodel.step(t_obs, t_dt, t_state)
                if tdev == "cuda":
                    torch.cuda.synchronize()

            torch_s = median_seconds(torch_step, repeats_for(batch)) if tmodel is not None else float("nan")
            rows.append({"device": device, "provider": runtime.provider, "batch": batch,
                         "onnxruntime_us": ort_s * 1e6, "onnxruntime_resident_state_us": resident_s * 1e6,
                         "torch_us": torch_s * 1e6,
                         "onnxruntime_us_per_patient": ort_s * 1e6 / batch, "speedup_vs_torch": torch_s / ort_s})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="models/<name>/<version>")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the trained checkpoint behind --model, for the PyTorch comparison of v3 models")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    import onnxruntime as ort

    devices = ["cpu"] if a.device == "cpu" else ["cuda"] if a.device == "cuda" else (
        ["cpu", "cuda"] if "CUDAExecutionProvider" in ort.get_available_providers() else ["cpu"])
    rows = bench(Path(a.model), devices, a.checkpoint)
    print(f"{'device':6} {'provider':24} {'batch':>6} {'ORT us':>10} {'ORT resident':>12} {'torch us':>10} "
          f"{'us/patient':>11} {'ORT speedup':>11}")
    for r in rows:
        print(f"{r['device']:6} {r['provider']:24} {r['batch']:>6} {r['onnxruntime_us']:>10.1f} "
              f"{r['onnxruntime_resident_state_us']:>12.1f} {r['torch_us']:>10.1f} "
              f"{r['onnxruntime_us_per_patient']:>11.3f} {r['speedup_vs_torch']:>10.2f}x")
    if a.out:
        meta = {"machine": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                "onnxruntime": ort.__version__, "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
