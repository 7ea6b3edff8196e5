#!/usr/bin/env bash
# The runs behind the scgan preset (SCGAN + learned head) on bottle, metal_nut and magnetic_tile, seeds 0-2,
# each with its AUROC-vs-CPU-minutes curve (studies/scgan_head/time_to_quality.py; checkpoints scored after training,
# never used to select: the reported model is the last epoch). Seed 0 of every category first.
#   bash studies/scgan_head/detection_quality.sh [PRESET] [SEEDS]      e.g.  bash studies/scgan_head/detection_quality.sh scgan "0 1 2"
# CATS="bottle metal_nut" and THREADS=1 split the work into two streams that run side by side on 2 cores.
# OVERRIDES="train.lr_milestones=0.8,0.9" NAME=lrsteps: a variant of the preset, in results/detection_NAME.
set -euo pipefail
cd "$(dirname "$0")/../.."
PRESET=${1:-default}
SEEDS=${2:-"0 1 2"}
DATA=${DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
if [ -n "${OVERRIDES:-}" ] && [ -z "${NAME:-}" ]; then
  echo "detection_quality.sh: OVERRIDES needs NAME (the variant's folder), or it would mix with the preset's runs" >&2
  exit 2
fi
NAME=${NAME:-$PRESET}
OUT=${OUT:-results/detection_$NAME}
read -r -a EXTRA <<< "${OVERRIDES:-}"
CATS=${CATS:-"bottle metal_nut magnetic_tile"}
THREADS=${THREADS:-2}
for seed in $SEEDS; do
  for cat in $CATS; do
    if [ "$cat" = magnetic_tile ]; then args=(--dataset folder --root "$DATA/magnetic_tile" --every 3)
    else args=(--dataset mvtec --root "$DATA/mvtec_ad" --every 10); fi
    dest="$OUT/${cat}_seed$seed"
    [ -f "$dest/curve.json" ] && { echo "done: $dest"; continue; }
    echo "== $cat seed $seed ($(date +%T))"
    "$PY" studies/scgan_head/time_to_quality.py "${args[@]}" --category "$cat" --preset "$PRESET" --seed "$seed" \
      --threads "$THREADS" --output "$dest" --work "runs/detection_$NAME/${cat}_seed$seed" ${EXTRA[@]+"${EXTRA[@]}"}
  done
done
