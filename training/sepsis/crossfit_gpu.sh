#!/usr/bin/env bash
# Cross-fitted sepsis runs on one GPU (training/sepsis/crossfit.py), in two phases:
#   bash training/sepsis/crossfit_gpu.sh train   DATA WORK FOLDS RECIPES MINUTES
#   bash training/sepsis/crossfit_gpu.sh combine DATA WORK FOLDS RECIPES
# RECIPES: one recipe a line, "name train-flags..." (# comments). `train` runs every fold of every
# recipe as a parallel process (CUDA MPS: small recurrent models leave a GPU kernel-launch bound,
# so many processes share it at full speed) and the boosting peer under the same folds on the CPU
# beside them (left running when the networks are done: its log says when it ends); each run asks for
# CUDA (DEVICE=cuda), so a process that finds no GPU stops at once instead of training on the CPU for
# the whole call (what an MPS daemon left shutting down by an earlier call caused); `combine` turns
# each recipe's fold runs into one cross-fitted model.
set -euo pipefail
PHASE=$1; DATA=$2; WORK=$3; K=$4; RECIPES=$5; MINUTES=${6:-5}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$WORK/logs"
recipes() { grep -v '^\s*#' "$RECIPES" | grep -v '^\s*$'; }
if [ "$PHASE" = train ]; then
  command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d 2>/dev/null || true
  python3 -c "from training.sepsis.data import load_cohort; load_cohort('$DATA', progress=False)"  # parse once
  if [ "${BOOSTING:-1}" = 1 ]; then  # BOOSTING=0: the peer runs elsewhere (e.g. where lightgbm is installed)
    python3 -m training sepsis baseline --data "$DATA" --folds "$K" --threads 4 --out "$WORK" --run "lgbm-cf$K" \
        --no-progress > "$WORK/logs/lgbm-cf$K.log" 2>&1 &
  fi
  pids=()
  while read -r name flags; do
    # "--seed-base N": a further seed-set, member seeds N + fold (default 0: seed = fold)
    base=0
    if [[ " $flags " =~ \ --seed-base\ ([0-9]+) ]]; then base=${BASH_REMATCH[1]}; flags=${flags/--seed-base $base/}; fi
    for ((f = 0; f < K; f++)); do
      [ -f "$WORK/folds/$name-f$f/metrics.json" ] && continue  # finished in an earlier call
      more=(); [ -f "$WORK/runs/$name-f$f/last.pt" ] && more=(--resume)  # cut off by an earlier call's limit
      # shellcheck disable=SC2086  # the recipe's flags are words (a recipe's --max-minutes wins over MINUTES)
      python3 -m training sepsis train --data "$DATA" --folds "$K" --fold $f --seed $((base + f)) --max-minutes "$MINUTES" \
          --dropout-rates 0.0 --device "${DEVICE:-cuda}" --no-progress --out "$WORK/folds" --checkpoints "$WORK/runs" --run "$name-f$f" \
          $flags "${more[@]}" >> "$WORK/logs/$name-f$f.log" 2>&1 &
      pids+=($!)
    done
  done < <(recipes)
  [ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
  # KEEP_MPS=1 (cfc4_device.sh): the caller's combines may still be MPS clients, and a quit waits for them
  # and refuses new clients meanwhile; the caller quits it when they are done
  if [ -z "${KEEP_MPS:-}" ]; then echo quit | timeout 30 nvidia-cuda-mps-control 2>/dev/null || true; fi
elif [ "$PHASE" = combine ]; then
  while read -r name _; do
    runs=()
    for ((f = 0; f < K; f++)); do runs+=("$WORK/folds/$name-f$f/metrics.json"); done
    python3 -m training sepsis crossfit --runs "${runs[@]}" --data "$DATA" --out "$WORK/$name" --name "$name" \
        > "$WORK/logs/$name-crossfit.log" 2>&1 &
  done < <(recipes)
  wait
else
  echo "phase must be train or combine, got $PHASE" >&2; exit 2
fi
