#!/usr/bin/env bash
# Reproduce the built-in `lite` model from nothing: fetch the photos, train, evaluate, export.
# Usage: scripts/train_lite.sh DATA_DIR RUN_DIR [STAGE...]   stages: data train eval export (default: all)
# Runs on one CPU core (OMP_NUM_THREADS=1 was 4× faster than 2 threads on the shared 2-core machine).
# The model card (src/resshift_cli/builtin/lite/MODEL_CARD.md) records what this produced.
set -euo pipefail
data=${1:?usage: scripts/train_lite.sh DATA_DIR RUN_DIR [STAGE...]}
run=${2:?usage: scripts/train_lite.sh DATA_DIR RUN_DIR [STAGE...]}
shift 2
stages=${*:-data train eval export}
here=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
iterations=${LITE_ITERATIONS:-3000}
common=(--degradation realesrgan --crop 256 --batch-size 8 --lr-schedule cosine --lr-floor 2e-5
  --val "$data/val" --save-every 200 --workers 1 --seed 0 --precision auto)

for stage in $stages; do
  case $stage in
    data)
      "$here/fetch_photos.sh" "$data"
      resshift degrade "$data/test-hr" -o "$data/test-lr" --degradation realesrgan --seed 0 --scale 4
      ;;
    train)
      resume=()
      [[ -f "$run/last/state.pt" ]] && resume=(--resume)
      resshift train "$data/train" -o "$run" --arch lite "${common[@]}" --iterations "$iterations" \
        --learning-rate 1e-3 --warmup 100 --ema-rate 0.995 --val-every 200 "${resume[@]}"
      ;;
    eval)
      resshift eval --lr "$data/test-lr" --gt "$data/test-hr" --model "$run/final" --seed 0 -q \
        --csv "$run/eval.csv"
      ;;
    export)
      python "$here/export_lite.py" "$run/final" "$here/../src/resshift_cli/builtin/lite"
      ;;
    *)
      echo "unknown stage $stage (data, train, eval, export)" >&2
      exit 2
      ;;
  esac
done
