#!/usr/bin/env bash
# The paper's setting on real AV2 motion-forecasting data: one window per scenario (the focal track's
# 60-step future, agent frame), trained on train/ and evaluated on val/, Cosine vs FFT x D x compact vs
# base, with the original's optimiser (AdamW, one-cycle, 10 % warm-up, clip 0.5; batch 4096, 100 epochs).
# A GPU job for the base model (about 34M parameters).
#   scripts/paper_setting_av2.sh /data/av2 runs/paper [extra reproduce_paper_table.py flags, e.g. --threshold 0.8]
set -euo pipefail
av2_root=${1:?usage: $0 AV2_ROOT OUT_DIR [flags for scripts/reproduce_paper_table.py]}
out=${2:?usage: $0 AV2_ROOT OUT_DIR [flags for scripts/reproduce_paper_table.py]}
shift 2
mkdir -p "$out"
[ -f "$out/train-focal.parquet" ] || trajemb prepare --av2 "$av2_root/train" --preset paper --out "$out/train-focal.parquet"
[ -f "$out/val-focal.parquet" ] || trajemb prepare --av2 "$av2_root/val" --preset paper \
    --out "$out/val-focal.parquet" --maps-dir "$out/val-maps"
python "$(dirname "$0")/reproduce_paper_table.py" --out "$out" --train "$out/train-focal.parquet" \
    --test "$out/val-focal.parquet" --maps "$out/val-maps" --models compact,base --epochs 100 \
    --batch-size 4096 --device auto "$@"
