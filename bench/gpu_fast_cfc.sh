#!/usr/bin/env bash
# The GPU measurements behind the fast CfC core (bench/NOTES.md): CUDA correctness tests, cfc_speed, the
# persistent kernels' phases and launch-settings sweep, a per-kernel profile of the step kernels at both issue
# shapes, and seconds per sepsis
# CfC-128 epoch for each way the core can run (ncps loop, graphs + torch.compile'd elementwise steps,
# graphs + Triton GEMM steps, persistent Triton kernels).
#   bash bench/gpu_fast_cfc.sh DATA_ARCHIVE OUT_DIR
set -uo pipefail
DATA=${1:?archive}; OUT=${2:?out dir}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/training/test_fast_cfc.py 2>&1 | tail -n 8
python3 bench/cfc_speed.py --out "$OUT/cfc_speed.json" 2>&1 | grep -v '%|'
python3 bench/cfc_persistent_phases.py --out "$OUT/phases.json" 2>&1 | grep -v '%|'
python3 bench/cfc_step_tiles.py --configs persist "b16 n32 k32 w4 s3 c16" --out "$OUT/persist_sweep.json" 2>&1 | grep -v '%|'
python3 bench/cfc_profile.py --shape 256x72x41x128 --out "$OUT/cfc_profile_t72.json"
python3 bench/cfc_profile.py --shape 256x336x41x256 --out "$OUT/cfc_profile_t336.json"
for impl in ${IMPLS:-reference fast-compile fast-steps fast}; do
  python3 -m training sepsis train --data "$DATA" --core cfc --hidden 128 --epochs 2 --batch-size 128 \
      --cfc-impl $impl --ema 0 --max-eval-stays 300 --run epoch-time-$impl --out /tmp/epoch_time \
      --checkpoints /tmp/epoch_time_ckpt --no-progress 2>&1 | grep -E '"epoch"|Error|error' | cut -c1-300
  cp /tmp/epoch_time/epoch-time-$impl/metrics.json "$OUT/epoch_time_$impl.json"
done
