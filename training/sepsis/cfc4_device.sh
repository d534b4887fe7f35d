#!/usr/bin/env bash
# Cross-fitted sepsis recipes on the device (issue #25: sepsis-cfc/4's candidates, the ladder): train
# every fold of every recipe (training/sepsis/crossfit_gpu.sh) and combine each recipe whose folds are
# all done into its cross-fitted model, as soon as they are, inside one 10-minute call. A run cut off
# by the call's limit resumes from its last.pt in the next call on the warm machine (runs/cf is kept
# there): call again with the same RECIPES until every recipe is combined.
#   DEADLINE  seconds this call may use (default 575)       MINUTES  budget per member (a recipe's --max-minutes wins)
#   RECIPES   the recipe file                                  COMBINE_FLAGS  e.g. "--dropout-rates" (none: skip dropout)
#   PHASE=combine: only combine (no training)      COMBINE=0: train only (with WEIGHTS=1, combine elsewhere,
#   e.g. several recipes' members as one model)
# The device image lacks pydantic (models.card) and ncps (the CfC cell): they travel as cp312 wheels in .whl/
# (carry [".carry/cfc4", ".whl"]; pip download --no-deps --python-version 3.12). The carried tree must stay
# under 64 MiB: leave results/ and the model.onnx files out of the working tree for the call.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 3
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
T0=$(date +%s); left() { echo $(( ${DEADLINE:-575} - ($(date +%s) - T0) )); }
W=runs/cf; D=.carry/cfc4/physionet2019_dev.tar.xz; R=${RECIPES:-.carry/cfc4/recipes_cfc4.txt}
mapfile -t NAMES < <(grep -v '^\s*#' $R | awk 'NF{print $1}')
mkdir -p $W/logs
nvidia-smi -L; nproc; date -u

ready() { ls $W/folds/$1-f{0,1,2,3,4}/metrics.json >/dev/null 2>&1; }
combine() {  # in the background; its log says when it ends
  local n=$1 runs=()
  for f in 0 1 2 3 4; do runs+=("$W/folds/$n-f$f/metrics.json"); done
  # shellcheck disable=SC2086  # COMBINE_FLAGS are words
  timeout $(( $(left) - 25 )) python3 -m training sepsis crossfit --runs "${runs[@]}" --data $D --out $W/$n --name $n \
      ${COMBINE_FLAGS:-} > $W/logs/$n-crossfit.log 2>&1 &
}
combine_ready() {  # every recipe whose folds are all done and that has not been combined or started
  [ "${COMBINE:-1}" = 0 ] && return
  for n in "${NAMES[@]}"; do
    if [ ! -e $W/$n.started ] && [ ! -f $W/$n/metrics.json ] && ready $n && [ "$(left)" -gt 90 ]; then
      touch $W/$n.started; combine $n; echo "combining $n at $(( $(date +%s) - T0 )) s"
    fi
  done
}
pack_folds() {  # what results/ keeps of the fold runs, packed as soon as training ends should the call be cut
  tar czf $OUT/folds.tgz $W/logs $(find $W/folds -name metrics.json -o -name learning_curves.png) 2>/dev/null
}
rm -f $W/*.started  # a combine cut off by an earlier call starts again
# an MPS daemon left by an earlier call on this warm machine may be shutting down and refuse new clients
# (the processes then find no GPU): stop it, so crossfit_gpu.sh starts a fresh one
if command -v nvidia-cuda-mps-control >/dev/null; then
  echo quit | timeout 10 nvidia-cuda-mps-control 2>/dev/null; pkill -9 -f nvidia-cuda-mps 2>/dev/null; sleep 1
fi

if [ "${PHASE:-all}" = all ]; then
  KEEP_MPS=1 BOOSTING=0 timeout $(( ${DEADLINE:-575} - 40 )) bash training/sepsis/crossfit_gpu.sh train $D $W 5 $R ${MINUTES:-6} > $OUT/train.log 2>&1 &
  trainer=$!
  while kill -0 $trainer 2>/dev/null; do combine_ready; sleep 10; done
  wait $trainer; echo "train rc=$? at $(( $(date +%s) - T0 )) s"
  # timeout stops the script, not its runs: stop them here (each resumes from its last epoch's last.pt)
  pkill -TERM -f "training sepsis train" && sleep 5
  for f in $W/logs/*-f?.log; do echo "$f: $(tail -n 1 $f | cut -c1-160)"; done
  pack_folds
  # WEIGHTS=1: the members' weights too, one file per recipe (under 16 MiB each), to combine elsewhere
  if [ -n "${WEIGHTS:-}" ]; then for n in "${NAMES[@]}"; do
    ls $W/runs/$n-f?/best.pt >/dev/null 2>&1 && tar czf $OUT/best-$n.tgz $W/runs/$n-f?/best.pt; done; fi
fi
combine_ready
wait
echo "combine done at $(( $(date +%s) - T0 )) s"
command -v nvidia-cuda-mps-control >/dev/null && { echo quit | timeout 10 nvidia-cuda-mps-control 2>/dev/null; }
pack_folds  # again, with the combines' logs
for n in "${NAMES[@]}"; do [ -f $W/$n/metrics.json ] && echo "$n: $(tail -n 1 $W/logs/$n-crossfit.log | cut -c1-400)"; done
tar czf $OUT/cf.tgz --exclude=ensemble.pt $(for n in "${NAMES[@]}"; do [ -d $W/$n ] && echo $W/$n; done) 2>/dev/null
ls -la $OUT; date -u
