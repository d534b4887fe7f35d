#!/usr/bin/env bash
# The issue-18 measurements on a lent GPU machine (no network there), in stages that each fit one
# device call. The packages the image lacks (onnxruntime-gpu, the service's dependencies, pgserver,
# py-spy, ncps) and the data travel as one payload, sent in parts that `part` appends to
# /tmp/payload; `setup` checks and unpacks it into /tmp/site.
#   bash bench/gpu_session.sh part                 # append .carry/p* to /tmp/payload
#   bash bench/gpu_session.sh compute OUT_DIR      # fast-CfC CUDA suite, cfc_speed, ward rescoring
#   bash bench/gpu_session.sh service OUT_DIR      # bench/service_gpu.py, CUDA and CPU provider
#   bash bench/gpu_session.sh parallel OUT_DIR     # IAM 3 seeds x 3 cores + sepsis runs at once: per-process GPU memory
#   bash bench/gpu_session.sh parsers OUT_DIR      # issue 18 item 2: h11 vs httptools (1 worker), CUDA vs CPU at 8 workers
#   bash bench/gpu_session.sh workers OUT_DIR      # issue 18 item 2: 1 / 4 / 8 workers, SQLite and PostgreSQL
#   bash bench/gpu_session.sh iam OUT_DIR          # IAM: CfC, LSTM, BiLSTM x seeds 0-2 on one generated set (DejaVu fonts carried)
# Payload (built on the development machine): prov.xz (onnxruntime-gpu's CUDA provider library,
# xz), ort-rest.zip (the rest of the onnxruntime-gpu 1.31.1 wheel), deps/*.whl, and the PhysioNet archive
# (compute, parallel) or the DejaVu fonts (fonts/*.ttf, for iam).
set -uo pipefail
STAGE=${1:?stage}; OUT=${2:-/tmp/out}
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
DATA=/tmp/pay/physionet2019_dev.tar.xz

setup() {
  [[ -f /tmp/site/.ok ]] && return 0
  echo "payload $(stat -c %s /tmp/payload) bytes, sha256 $(sha256sum /tmp/payload | cut -c1-16) (want ${PAYLOAD_SHA:-?})"
  mkdir -p /tmp/pay /tmp/site && tar xf /tmp/payload -C /tmp/pay || return 1
  python3 -c "import zipfile; zipfile.ZipFile('/tmp/pay/ort-rest.zip').extractall('/tmp/site')" || return 1
  xz -dc /tmp/pay/prov.xz > /tmp/site/onnxruntime/capi/libonnxruntime_providers_cuda.so || return 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/pay/deps/*.whl || return 1
  chmod +x /tmp/site/bin/* 2>/dev/null
  python3 -c "import torch, onnxruntime as ort, fastapi, sqlalchemy, ncps; print('torch', torch.__version__, torch.cuda.get_device_name(), '| onnxruntime', ort.__version__, ort.get_available_providers())" || return 1
  python3 -c "from models.runtime import StepRuntime; r = StepRuntime.open('models/sepsis-cfc/3', device='cuda'); print('sepsis-cfc/3 on', r.provider)" || return 1
  touch /tmp/site/.ok
}

case $STAGE in
  part)
    cat .carry/p* >> /tmp/payload && ls -l /tmp/payload ;;
  compute)
    mkdir -p "$OUT"; setup || exit 1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
    python3 -c "import triton; print('triton', triton.__version__)"
    timeout 240 python3 -m pytest -q -p no:cacheprovider tests/training/test_fast_cfc.py > "$OUT/cfc_tests.log" 2>&1
    tail -n 6 "$OUT/cfc_tests.log"
    timeout 150 python3 bench/cfc_speed.py --out "$OUT/cfc_speed.json" 2>&1 | grep -v '%|' | tail -n 25
    timeout 200 python3 bench/ward_rescoring.py --data "$DATA" --models models/sepsis-cfc/3 models/sepsis-cfc/2 \
      --devices cuda cpu --out "$OUT/ward_rescoring.json" 2>&1 | grep -v '%|' ;;
  service)
    mkdir -p "$OUT"; setup || exit 1
    timeout 560 python3 bench/service_gpu.py --providers cuda cpu --dbs sqlite postgres --pgserver \
      --microbatch on off --patients 64 1024 10000 --concurrency 256 --seconds 8 --warmup 2 --profile \
      --budget-s 500 --out /tmp/service_gpu 2>&1 | grep -v '%|'
    tar czf "$OUT/service_gpu.tar.gz" -C /tmp service_gpu ;;
  parsers)
    mkdir -p "$OUT"; setup || exit 1
    common="--dbs sqlite postgres --pgserver --concurrency 256 --seconds 8 --warmup 2 --profile --load-procs 4"
    timeout 250 python3 bench/service_gpu.py --providers cpu $common --microbatch off --patients 1024 --http h11 httptools \
      --workers 1 --budget-s 200 --out /tmp/sg_parsers 2>&1 | grep -v '%|' | tail -n 6
    timeout 250 python3 bench/service_gpu.py --providers cuda cpu --dbs postgres --pgserver --concurrency 256 --seconds 8 \
      --warmup 2 --profile --load-procs 4 --microbatch on off --patients 10000 --http httptools --workers 8 --budget-s 200 \
      --out /tmp/sg_cuda 2>&1 | grep -v '%|' | tail -n 6
    tar czf "$OUT/service_parsers_cuda.tar.gz" -C /tmp sg_parsers sg_cuda ;;
  workers)
    mkdir -p "$OUT"; setup || exit 1
    timeout 570 python3 bench/service_gpu.py --providers cpu --dbs postgres sqlite --pgserver --concurrency 256 --seconds 8 \
      --warmup 2 --profile --load-procs 4 --microbatch off --patients 1024 10000 --http httptools --workers 1 4 8 \
      --budget-s 520 --out /tmp/sg_workers 2>&1 | grep -v '%|' | tail -n 16
    tar czf "$OUT/service_workers.tar.gz" -C /tmp sg_workers ;;
  iam)
    mkdir -p "$OUT" /tmp/par/iam; setup || exit 1
    mkdir -p /usr/share/fonts/truetype/dejavu && cp /tmp/pay/fonts/*.ttf /usr/share/fonts/truetype/dejavu/
    [[ -f /tmp/iam/lines.txt ]] || python3 -m training iam generate --out /tmp/iam --lines 2000 --seed 0 --workers 16 > /tmp/par/iam_generate.log 2>&1 \
      || { tail -n 5 /tmp/par/iam_generate.log; exit 1; }
    grep -m1 '# fonts' /tmp/iam/lines.txt | cut -c1-200
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms 1000 > /tmp/par/gpu_memory.csv &
    smi=$!; pids=(); names=()
    for s in 0 1 2; do for core in cfc lstm bilstm; do
      n=iam_${core}_s$s; names+=($n)
      python3 -m training iam train --data /tmp/iam --core $core --seed $s --epochs 40 --max-minutes ${MINUTES:-8} \
        --out /tmp/par/iam/${core}_s$s --no-progress > /tmp/par/$n.log 2>&1 &
      pids+=($!)
    done; done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" && echo "ok   ${names[$i]}" || echo "FAIL ${names[$i]}: $(tail -n 2 /tmp/par/${names[$i]}.log | tr '\n' ' ' | cut -c1-300)"; done
    kill $smi
    cp /tmp/iam/lines.txt /tmp/par/iam/generated_lines.txt 2>/dev/null
    tar czf "$OUT/iam.tar.gz" -C /tmp/par iam iam_generate.log gpu_memory.csv $(cd /tmp/par && ls iam_*.log) ;;
  parallel)
    mkdir -p "$OUT" /tmp/par; setup || exit 1
    python3 -c "from training.sepsis.data import load_cohort; from pathlib import Path; load_cohort('$DATA', cache_dir=Path('/tmp/cache'))" 2>&1 | tail -n 1
    python3 -m training iam generate --out /tmp/iam --lines 2000 --seed 0 --workers 8 > /tmp/par/iam_generate.log 2>&1 || { tail -n 5 /tmp/par/iam_generate.log; exit 1; }
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms 500 > /tmp/par/gpu_memory.csv &
    smi=$!; pids=(); names=()
    for s in 0 1 2; do for core in cfc lstm bilstm; do
      n=iam_${core}_s$s; names+=($n)
      python3 -m training iam train --data /tmp/iam --core $core --seed $s --epochs 40 --max-minutes ${MINUTES:-4} --out /tmp/par/iam/${core}_s$s --no-progress > /tmp/par/$n.log 2>&1 &
      pids+=($!); echo "$! $n" >> /tmp/par/pids.txt
    done; done
    for s in 0 1 2 3 4 5 6 7 8; do
      core=cfc; [[ $s -ge 6 ]] && core=lstm; n=sepsis_${core}_s$s; names+=($n)
      python3 -m training sepsis train --data "$DATA" --cache-dir /tmp/cache --core $core --seed $s --epochs 3 --max-minutes ${MINUTES:-4} \
        --max-eval-stays 1000 --out /tmp/par/sepsis --checkpoints /tmp/par/ckpt --run $n --no-progress > /tmp/par/$n.log 2>&1 &
      pids+=($!); echo "$! $n" >> /tmp/par/pids.txt
    done
    failed=0
    for i in "${!pids[@]}"; do
      if wait "${pids[$i]}"; then echo "ok   ${names[$i]}"; else echo "FAIL ${names[$i]}: $(tail -n 2 /tmp/par/${names[$i]}.log | tr '\n' ' ' | cut -c1-300)"; failed=$((failed+1)); fi
    done
    kill $smi; echo "failed: $failed of ${#pids[@]}"
    python3 - <<'EOF'
import collections
names = dict(line.split() for line in open("/tmp/par/pids.txt"))
peak = collections.defaultdict(int)
for line in open("/tmp/par/gpu_memory.csv"):
    parts = [p.strip() for p in line.split(",")]
    if len(parts) == 2 and parts[1].isdigit():
        peak[parts[0]] = max(peak[parts[0]], int(parts[1]))
for pid, name in sorted(names.items(), key=lambda kv: kv[1]):
    print(f"{name:<18} peak {peak.get(pid, 0):>6} MiB")
EOF
    tar czf "$OUT/parallel.tar.gz" --exclude=ckpt --exclude="*.pt" -C /tmp par ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
