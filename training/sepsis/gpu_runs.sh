#!/usr/bin/env bash
# The sepsis runs behind results/sepsis: every configuration as a parallel process on one GPU.
# Small recurrent models leave a GPU idle (kernel-launch bound), so with CUDA MPS many processes
# share it at full single-process speed (measured: 8 processes, each as fast as one alone).
#   bash training/sepsis/gpu_runs.sh DATA_ARCHIVE MINUTES RESULTS_DIR [extra train options]
set -euo pipefail
DATA=${1:?archive}; MINUTES=${2:-6}; RESULTS=${3:-results/sepsis}; shift 3 || true; EXTRA=("$@")
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d 2>/dev/null || true
mkdir -p logs/sepsis
# parse once; every run then reads the cache
python3 -c "from training.sepsis.data import load_cohort; load_cohort('$DATA', progress=False)"
run() { local name=$1; shift
  python3 -m training sepsis train --data "$DATA" --max-minutes "$MINUTES" --no-progress --out "$RESULTS" \
      --checkpoints "runs/$RESULTS" "${EXTRA[@]}" "$@" > "logs/sepsis/$name.log" 2>&1 &
}
for seed in 0 1 2; do
  run cfc128-s$seed  --core cfc  --hidden 128 --seed $seed
  run cfc256-s$seed  --core cfc  --hidden 256 --seed $seed
  run lstm128-s$seed --core lstm --hidden 128 --seed $seed
done
for cfg in "cfc 128" "cfc 256" "lstm 128"; do set -- $cfg
  run "$1$2-patient" --core "$1" --hidden "$2" --objective patient --seed 0
done
for split in cross-A cross-B; do
  run "cfc128-$split"  --core cfc  --hidden 128 --split $split --seed 0
  run "lstm128-$split" --core lstm --hidden 128 --split $split --seed 0
done
# ablations of the v2 changes, one seed each
run cfc128-nocounts --core cfc --hidden 128 --seed 0 --no-counts --run cfc128-nocounts-s0
run cfc128-noema    --core cfc --hidden 128 --seed 0 --ema 0 --run cfc128-noema-s0
wait
python3 -m training sepsis summarize --results "$RESULTS"
echo quit | nvidia-cuda-mps-control 2>/dev/null || true
