#!/usr/bin/env bash
# The sepsis ladder on one GPU machine: every run a separate process in parallel (small recurrent
# models leave the GPU idle), then results and checkpoints packed into one archive.
#   bash bench/gpu_sepsis_ladder.sh DATA_ARCHIVE OUT_DIR RUNS_FILE
# RUNS_FILE: one run per line, "<run name> <train flags...>" (lines starting with # are skipped).
set -uo pipefail
DATA=${1:?archive}; OUT=${2:?out dir}; RUNS=${3:?runs file}
mkdir -p "$OUT" logs
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"
# parse the archive once into the shared cache before the runs start reading it
python3 -c "from pathlib import Path; from training.sepsis.data import load_cohort; load_cohort('$DATA', cache_dir=Path('.cache/sepsis'), progress=False)"
while read -r name flags; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  python3 -m training sepsis train --data "$DATA" --run "$name" $flags --no-progress > "logs/$name.log" 2>&1 &
done < "$RUNS"
wait
for f in logs/*.log; do echo "== $f"; grep -E 'Error|error|Traceback' "$f" | head -5; tail -n 1 "$f" | cut -c1-400; done
# results (RESULTS, a folder) and logs in one file; the checkpoints named by CKPT (a glob of run names) in another
tar czf "$OUT/results.tar.gz" ${RESULTS:-results/sepsis} logs
tar czf "$OUT/checkpoints.tar.gz" runs/sepsis/${CKPT:-*}/best.pt
