#!/usr/bin/env bash
# sepsis-cfc/4 on the device (issue #25): train every fold of every candidate, then combine each
# candidate's folds into its cross-fitted model (OOF choices, test once), inside one 10-minute call.
# PHASE=all (default) or combine (a second call on the warm machine, runs/cf kept).
# The device image lacks pydantic (models.card) and ncps (the CfC cell): they travel as cp312 wheels in .whl/
# (carry [".carry/cfc4", ".whl"]): pydantic 2.12.5, pydantic_core 2.41.5, annotated_types 0.7.0,
# typing_inspection 0.4.2, typing_extensions 4.15.0, ncps 1.0.1 (pip download --no-deps --python-version 3.12).
# With them the carried tree is over 64 MiB by about 0.3 MB: leave models/sepsis-cfc/3/model.onnx out of the
# working tree for the call (nothing here reads it).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 3
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
T0=$(date +%s); left() { echo $(( ${DEADLINE:-575} - ($(date +%s) - T0) )); }
W=runs/cf; D=.carry/cfc4/physionet2019_dev.tar.xz; R=${RECIPES:-.carry/cfc4/recipes_cfc4.txt}
mapfile -t NAMES < <(grep -v '^\s*#' $R | awk 'NF{print $1}')
nvidia-smi -L; nproc; date -u
if [ "${PHASE:-all}" = all ]; then
  BOOSTING=0 timeout $(( ${DEADLINE:-575} - 75 )) bash training/sepsis/crossfit_gpu.sh train $D $W 5 $R ${MINUTES:-6} > $OUT/train.log 2>&1
  echo "train rc=$? at $(( $(date +%s) - T0 )) s"
  for n in "${NAMES[@]}"; do tar czf $OUT/folds-$n.tgz $W/folds/$n-f* $W/runs/$n-f*/best.pt $W/logs/$n-f?.log; done
  for f in $W/logs/*-f?.log; do echo "$f: $(tail -n 1 $f | cut -c1-160)"; done
fi
echo "combine with $(left) s left"
ok=()
for n in "${NAMES[@]}"; do
  if ls $W/folds/$n-f{0,1,2,3,4}/metrics.json >/dev/null 2>&1; then ok+=("$n"); else echo "$n: fold runs incomplete, not combined"; fi
done
for n in "${ok[@]}"; do
  runs=(); for f in 0 1 2 3 4; do runs+=("$W/folds/$n-f$f/metrics.json"); done
  timeout $(( $(left) - 25 )) python3 -m training sepsis crossfit --runs "${runs[@]}" --data $D --out $W/$n --name $n \
      > $W/logs/$n-crossfit.log 2>&1 &
done
wait
echo "combine done at $(( $(date +%s) - T0 )) s"
for n in "${NAMES[@]}"; do tar czf $OUT/cf-$n.tgz $W/$n $W/logs/$n-crossfit.log 2>/dev/null; done
for n in "${NAMES[@]}"; do echo "$n: $(tail -n 1 $W/logs/$n-crossfit.log 2>/dev/null | cut -c1-400)"; done
ls -la $OUT; date -u
