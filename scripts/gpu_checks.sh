#!/usr/bin/env bash
# Every GPU check of trajemb in one run, for a lent GPU machine (README "GPU"): the CUDA tests, encode
# and exact-search speed with bf16's effect on neighbours, training throughput against the original's
# approach (compact and the paper's base model), CUDA training from the CLI with resume, and the
# 1M-window bundle built on the GPU. Sections run in order of importance, each under its own time
# limit and all under one deadline, so a slow one cannot take the rest down; the log goes to
# ${OUT:-.cache/gpu_checks}/gpu_checks.log.
#
# Usage: bash scripts/gpu_checks.sh [SECONDS]    (deadline for the whole run; default 540)
#   GPU_CHECKS_DRY=1 bash scripts/gpu_checks.sh   runs the same sections on the CPU at small sizes,
#   to check the script itself before spending GPU time.
# Needs: python3 with torch and the runtime requirements importable (the repo on PYTHONPATH is
# enough); TRAJEMB_AV2_FIXTURES pointing at the real fixtures, where present, adds the real-data tests.
set -u -o pipefail
cd "$(dirname "$0")/.."
deadline=$(( $(date +%s) + ${1:-540} ))
out=${OUT:-.cache/gpu_checks}
mkdir -p "$out"
log="$out/gpu_checks.log"
work=$(mktemp -d /tmp/trajemb-gpu.XXXXXX)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}

if [ "${GPU_CHECKS_DRY:-0}" = 1 ]; then
  device=cpu; scale_windows=20000; encode=(--windows 20000 --queries 500 --sizes 20000,50000)
  base=(--hidden 128 --layers 2 --heads 8 --batch-size 512 --steps 2); epochs=3; scenarios=30
else
  device=cuda; scale_windows=1000000; encode=()
  base=(--hidden 1024 --layers 4 --heads 8 --batch-size 4096 --steps 5); epochs=8; scenarios=200
fi

summary=()
section() {  # section NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt 20 ]; then summary+=("$name: not run (deadline)"); return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit} s) ===" | tee -a "$log"
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  summary+=("$name: rc $rc, $(( SECONDS - t0 )) s")
}

section environment 30 bash -c "nvidia-smi -L 2>/dev/null; $py -c 'import torch, numpy, faiss, av2, umap; \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else \"\"); print(\"numpy\", numpy.__version__, \
\"faiss\", faiss.__version__, \"GPUs seen by faiss\", faiss.get_num_gpus())'; nproc"
# One process: six xdist workers, each with a thread per core, ran past 120 s on 16 cores where one took 75 s.
section tests 150 "$py" -m pytest -q -p no:cacheprovider -p no:benchmark tests/test_index.py tests/test_model.py \
  tests/test_train.py tests/test_losses.py tests/test_mining.py tests/test_similarity.py tests/test_checkpoint.py \
  tests/test_soft_neighbor_loss.py tests/test_evaluate.py tests/test_bundle.py tests/test_av2_motion.py \
  tests/test_projection.py
section "encode and exact search" 120 "$py" scripts/bench_gpu.py --device "$device" ${encode[@]+"${encode[@]}"}
section "small table" 60 bash -c "$py -m trajemb -q synth --out $work/s --scenarios $scenarios --seed 5 && \
  $py -m trajemb -q prepare --av2 $work/s --out $work/t.parquet"
section "train step, compact" 60 "$py" scripts/bench_train.py --table "$work/t.parquet" --device "$device"
section "train step, paper base" 90 "$py" scripts/bench_train.py --table "$work/t.parquet" --device "$device" \
  "${base[@]}"
section "1M-window bundle on the GPU" 240 "$py" scripts/bench_scale.py --sizes "$scale_windows" \
  --work "$work/scale" --device "$device"
soft=(--loss soft_neighbors --no-normalize --batches neighborhoods --neighbors-per-seed 4 --hard-share 0.3
      --augment-prob 0.3 --augment-noise 1.0 --batch-size 1024 --seed 0)
train_killed_then_resumed() {  # the first epoch's checkpoint lands, the run is stopped (SIGTERM), --resume ends it
  "$py" -m trajemb train --data "$work/t.parquet" --out "$work/run" --device "$device" --epochs "$epochs" "${soft[@]}" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null && [ ! -f "$work/run/last/train_state.pt" ]; do sleep 0.2; done
  kill -TERM "$pid" 2>/dev/null; wait "$pid"; echo "stopped after the first checkpoint: rc $?"
  "$py" -m trajemb train --data "$work/t.parquet" --out "$work/run" --device "$device" --epochs "$epochs" \
    "${soft[@]}" --resume && cat "$work/run/metrics.csv"
}
section "trajemb train (soft recipe), stopped, then --resume" 120 bash -c "$(declare -p py work device epochs soft)
$(declare -f train_killed_then_resumed); train_killed_then_resumed"

{ echo "=== summary ==="; printf '%s\n' "${summary[@]}"; } | tee -a "$log"
rm -rf "$work"
