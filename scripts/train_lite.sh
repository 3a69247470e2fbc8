#!/usr/bin/env bash
# Reproduce the built-in `lite` model from nothing: fetch the photos, train, evaluate, export.
# Usage: scripts/train_lite.sh DATA_DIR RUN_DIR [STAGE...]
#   stages: data train finetune eval export (default: all). train: 3,000 iterations from the preset (RUN_DIR);
#   finetune: two 1,500-iteration stages at lower rates on fresh crops (RUN_DIR/ft1, RUN_DIR/ft2).
# Runs on one CPU core (OMP_NUM_THREADS=1 was 4× faster than 2 threads on the shared 2-core machine).
# The model card (src/resshift_cli/builtin/lite/MODEL_CARD.md) records what this produced.
set -euo pipefail
data=${1:?usage: scripts/train_lite.sh DATA_DIR RUN_DIR [STAGE...]}
run=${2:?usage: scripts/train_lite.sh DATA_DIR RUN_DIR [STAGE...]}
shift 2
stages=${*:-data train finetune eval export}
here=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
iterations=${LITE_ITERATIONS:-3000}
common=(--degradation realesrgan --crop 256 --batch-size 8 --lr-schedule cosine --val "$data/val"
  --workers 1 --precision auto --ema-rate 0.995)
final=$run/ft2/final

# finetune DIR FROM SEED RATE FLOOR VAL_EVERY: 1,500 iterations from FROM's weights (resumed if DIR/last exists)
finetune() {
  local resume=()
  [[ -f "$1/last/state.pt" ]] && resume=(--resume)
  resshift train "$data/train" -o "$1" --from "$2" "${common[@]}" --iterations 1500 --warmup 50 \
    --seed "$3" --learning-rate "$4" --lr-floor "$5" --val-every "$6" --save-every 250 "${resume[@]}"
}

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
        --seed 0 --learning-rate 1e-3 --lr-floor 2e-5 --warmup 100 --val-every 200 --save-every 200 \
        "${resume[@]}"
      ;;
    finetune)
      finetune "$run/ft1" "$run/final" 1 3e-4 1e-5 250
      finetune "$run/ft2" "$run/ft1/final" 2 1.5e-4 5e-6 500
      ;;
    eval)
      resshift eval --lr "$data/test-lr" --gt "$data/test-hr" --model "$final" --seed 0 -q \
        --csv "$run/eval.csv"
      ;;
    export)
      python "$here/export_lite.py" "$final" "$here/../src/resshift_cli/builtin/lite"
      ;;
    *)
      echo "unknown stage $stage (data, train, finetune, eval, export)" >&2
      exit 2
      ;;
  esac
done
