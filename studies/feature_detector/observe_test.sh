#!/usr/bin/env bash
# An observation made after the choice, never used for it: the test-set outcome on the shared magnetic tiles of
# each stage's winner along the search (README.md), and of the first throw-away probe (Lite0, blocks 4 and 10,
# 256 px, 3 x 3 neighbourhood, a 1% bank from every patch). One thread, seed 0, `scgan train` then `scgan test`
# as a user runs them, on each category of CATEGORIES (default: magnetic_tile).
#     CATEGORIES="magnetic_tile bottle metal_nut" bash studies/feature_detector/observe_test.sh [OUT]
# (OUT defaults to runs/observe_test)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/observe_test}
DATA=${DATA:-../shared/data}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
scgan() { .venv/bin/python -c 'import torch, sys; torch.set_num_threads(1); from scgan.cli import main; sys.exit(main())' "$@"; }
data() {  # the category's --dataset/--root/--category options
  case $1 in
    magnetic_tile) echo "--dataset folder --root $DATA/magnetic_tile" ;;
    *) echo "--dataset mvtec --root $DATA/mvtec_ad --category $1" ;;
  esac
}
run() {  # $1 = name, the rest = settings over the default preset
  local name=$cat/$1; shift
  mkdir -p "$OUT/$cat"
  # shellcheck disable=SC2046
  scgan train --preset default $(data "$cat") --output "$OUT/$name/train" \
    --overwrite --no-progress seed=0 "$@" > "$OUT/$name.train.log" 2>&1
  scgan test --checkpoint "$OUT/$name/train/model.pt" --output "$OUT/$name/test" --no-progress \
    > "$OUT/$name.test.log" 2>&1
  echo "$name ($*): $(grep 'image AUROC' "$OUT/$name.test.log")"
}
probe_bank() {  # the probe's bank: 1% of the category's patches, as the first probe took it
  case $1 in magnetic_tile) echo 7802 ;; bottle) echo 2140 ;; metal_nut) echo 2252 ;; esac
}
for cat in ${CATEGORIES:-magnetic_tile}; do
run probe patchcore.backbone=lite0 patchcore.layers=4,10 patchcore.resolution=256 patchcore.neighbourhood=3 \
  patchcore.bank_size="$(probe_bank "$cat")" patchcore.max_patches=1000000
run l4_10 patchcore.backbone=lite0 patchcore.layers=4,10 patchcore.resolution=256 patchcore.neighbourhood=3
run lite1_l6_14 patchcore.resolution=256 patchcore.neighbourhood=3
run lite1_r320 patchcore.neighbourhood=3
run lite1_r320_p1
done
