#!/usr/bin/env bash
# One stage of the search (README.md): each "name:settings" line of STAGE_FILE, two streams of one thread each
# (bottle + metal_nut | magnetic_tile), side by side.   bash studies/feature_detector/run_stage.sh stage1.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
stage=studies/feature_detector/$1
run() {  # $1 = categories
  while IFS=: read -r name settings; do
    [ -z "$name" ] && continue
    read -r -a extra <<< "$settings"
    "$PY" studies/feature_detector/settings.py --name "$name" --categories "$1" --threads 1 ${extra[@]+"${extra[@]}"}
  done < "$stage"
}
run bottle,metal_nut > "studies/feature_detector/logs_${1%.txt}_a.log" 2>&1 &
run magnetic_tile > "studies/feature_detector/logs_${1%.txt}_b.log" 2>&1 &
wait
