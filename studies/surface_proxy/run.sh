#!/usr/bin/env bash
# Every setting of settings.txt on every category: two streams of one thread each (bottle + metal_nut |
# magnetic_tile), side by side.   [SETTINGS=settings2.txt] [BASE_SETTINGS=...] [PROXY_DEFECT_SEED=0]
# bash studies/surface_proxy/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# The settings are over the default preset as it was when the study ran (neighbourhood 1, Euclidean distance, no
# mirror padding): pinned here, so that the study runs the same after the default took its winners. Stage 3 ran over
# the default of its time: BASE_SETTINGS="patchcore.pad=0".
read -r -a BASE <<< "${BASE_SETTINGS-patchcore.neighbourhood=1 patchcore.metric=euclidean patchcore.pad=0}"
run() {  # $1 = categories
  while IFS=: read -r name settings; do
    [ -z "$name" ] && continue
    read -r -a extra <<< "$settings"
    "$PY" studies/surface_proxy/proxy.py --name "$name" --categories "$1" --threads 1 ${BASE[@]+"${BASE[@]}"} \
      ${extra[@]+"${extra[@]}"}
  done < "studies/surface_proxy/${SETTINGS:-settings.txt}"
}
run bottle,metal_nut > "studies/surface_proxy/log_${SETTINGS:-settings.txt}_a.log" 2>&1 &
run magnetic_tile > "studies/surface_proxy/log_${SETTINGS:-settings.txt}_b.log" 2>&1 &
wait
