#!/usr/bin/env bash
# The benchmark job: 3 seeds x {CfC, LSTM} on N-MNIST and QuickDraw (plus their continuous-time
# variants) and CfC / LSTM / BiLSTM on generated IAM-style lines, all as parallel processes, each
# with a wall budget; every run tests once, stress-tests, and the results are aggregated at the end.
#
# usage: bench/run_benchmarks.sh DATA_DIR [RESULTS_DIR] [options]
#   DATA_DIR     holds nmnist_small.tar.xz and quickdraw_small.tar.xz (any depth)
#   RESULTS_DIR  default: results  (runs go to RESULTS_DIR/<task>/<run>/)
# options (defaults fit one H100 + 16 cores in about 8 minutes):
#   --seeds "0 1 2"     --minutes 4 (training budget per run)   --device auto
#   --nmnist-epochs 30  --quickdraw-epochs 80  --iam-epochs 40  --iam-lines 2000
#   --no-variants (skip N-MNIST event bins and QuickDraw raw timing)  --no-iam
#   --work DIR (generated IAM data; default /tmp/bench_work)
# env: PY=<python with the train extras> (default .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 || "$1" == -* ]]; then sed -n '2,17p' "$0"; exit 2; fi
DATA=$1; shift
OUT=results
if [[ $# -gt 0 && "$1" != -* ]]; then OUT=$1; shift; fi
SEEDS="0 1 2"; MINUTES=4; DEVICE=auto; NM_EPOCHS=30; QD_EPOCHS=80; IAM_EPOCHS=40; IAM_LINES=2000
VARIANTS=1; IAM=1; WORK=/tmp/bench_work
while [[ $# -gt 0 ]]; do
  case $1 in
    --seeds) SEEDS=$2; shift 2;;
    --minutes) MINUTES=$2; shift 2;;
    --device) DEVICE=$2; shift 2;;
    --nmnist-epochs) NM_EPOCHS=$2; shift 2;;
    --quickdraw-epochs) QD_EPOCHS=$2; shift 2;;
    --iam-epochs) IAM_EPOCHS=$2; shift 2;;
    --iam-lines) IAM_LINES=$2; shift 2;;
    --no-variants) VARIANTS=0; shift;;
    --no-iam) IAM=0; shift;;
    --work) WORK=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
# the interpreter: $PY, else the Makefile's .venv, else python3
if [[ -z "${PY:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
$PY -c "import torch, ncps, PIL, scipy, matplotlib" || { echo "error: $PY lacks torch/ncps/pillow/scipy/matplotlib" >&2; exit 2; }
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # many small processes share the cores

find_archive() {
  local f; f=$(find -L "$DATA" -name "$1" -type f | head -n1)
  [[ -n "$f" ]] || { echo "error: $1 not found under $DATA" >&2; exit 2; }
  echo "$f"
}
NMNIST=$(find_archive nmnist_small.tar.xz)
QUICKDRAW=$(find_archive quickdraw_small.tar.xz)
mkdir -p "$OUT/logs"
start=$(date +%s)

if [[ $IAM == 1 && ! -f "$WORK/iam_generated/lines.txt" ]]; then
  echo "generating $IAM_LINES IAM-style lines into $WORK/iam_generated"
  $PY -m training iam generate --out "$WORK/iam_generated" --lines "$IAM_LINES" --seed 0 \
      --workers "$(nproc)" > "$OUT/logs/iam_generate.log" 2>&1
fi

pids=(); names=()
launch() {  # name, then the command
  local name=$1; shift
  "$@" --device "$DEVICE" --max-minutes "$MINUTES" --no-progress > "$OUT/logs/$name.log" 2>&1 &
  pids+=($!); names+=("$name")
}
for seed in $SEEDS; do
  for core in cfc lstm; do
    nm_variants="fixed"; qd_formats="simplified"
    if [[ $VARIANTS == 1 ]]; then nm_variants="fixed events"; qd_formats="simplified raw"; fi
    for v in $nm_variants; do
      launch "nmnist_${v}_${core}_s${seed}" $PY -m training nmnist train --data "$NMNIST" \
        --core $core --variant $v --seed $seed --epochs "$NM_EPOCHS" \
        --out "$OUT/nmnist/${v}_${core}_s${seed}"
    done
    for f in $qd_formats; do
      launch "quickdraw_${f}_${core}_s${seed}" $PY -m training quickdraw train --data "$QUICKDRAW" \
        --format $f --core $core --seed $seed --epochs "$QD_EPOCHS" --patience 25 \
        --out "$OUT/quickdraw/${f}_${core}_s${seed}"
    done
  done
done
if [[ $IAM == 1 ]]; then
  first_seed=${SEEDS%% *}
  for core in cfc lstm bilstm; do
    launch "iam_${core}_s${first_seed}" $PY -m training iam train --data "$WORK/iam_generated" \
      --core $core --seed "$first_seed" --epochs "$IAM_EPOCHS" --out "$OUT/iam/${core}_s${first_seed}"
  done
fi
echo "launched ${#pids[@]} runs; logs in $OUT/logs"
failed=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then echo "ok    ${names[$i]}"; else echo "FAIL  ${names[$i]} (see $OUT/logs/${names[$i]}.log)"; failed=$((failed+1)); fi
done
PYTHONPATH=. $PY bench/aggregate.py "$OUT"
echo "done in $(( $(date +%s) - start )) s; $failed failed run(s)"
exit $(( failed > 0 ))
