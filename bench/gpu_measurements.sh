#!/usr/bin/env bash
# The GPU measurements behind bench/NOTES.md and results/: fast-CfC correctness on CUDA, CfC vs LSTM
# speed, ONNX step latency on the CUDA provider, the shipped model evaluated through the CUDA
# provider, and seconds per sepsis epoch with the reference and the fast CfC.
#   bash bench/gpu_measurements.sh DATA_ARCHIVE OUT_DIR
set -uo pipefail
DATA=${1:?archive}; OUT=${2:?out dir}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -c "import torch, onnxruntime as ort; print('torch', torch.__version__, torch.cuda.get_device_name(), '| onnxruntime', ort.__version__, ort.get_available_providers())"
python3 -m pytest -q -p no:cacheprovider tests/training/test_fast_cfc.py tests/training/test_sepsis_model.py 2>&1 | tail -n 5
python3 bench/cfc_speed.py --out "$OUT/cfc_speed.json"
python3 bench/cfc_speed.py --tf32 --out "$OUT/cfc_speed_tf32.json"
python3 bench/onnx_step.py --model models/sepsis-cfc/1 --out "$OUT/onnx_step.json"
python3 -m training sepsis evaluate-onnx --model models/sepsis-cfc/1 --data "$DATA" --split test \
    --out /tmp/evaluate_onnx_cuda --device cuda && cp /tmp/evaluate_onnx_cuda/metrics.json "$OUT/evaluate_onnx_cuda.json"
for impl in reference fast; do
  python3 -m training sepsis train --data "$DATA" --core cfc --hidden 128 --epochs 2 --batch-size 128 \
      --cfc-impl $impl --ema 0 --max-eval-stays 300 --run epoch-time-$impl --out /tmp/epoch_time \
      --checkpoints /tmp/epoch_time_ckpt --no-progress 2>&1 | grep -E '"epoch"|Error|error' | cut -c1-300
  cp /tmp/epoch_time/epoch-time-$impl/metrics.json "$OUT/epoch_time_$impl.json"
done
