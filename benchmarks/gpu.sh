#!/usr/bin/env bash
# The GPU measurements in one run: realsr-v3 and realsr-v1 (random full-size weights) at 256² and 1024² LR,
# fp32 / fp16 / bf16, eager and torch.compile'd, against our fp32 untiled run, plus fp32 tile-at-a-time
# (tile 256, one tile per call: how the official script works) as the reference for the speed-up target.
#
#   bash benchmarks/gpu.sh [OUTDIR]          # JSON per run in OUTDIR (default bench-gpu), tables on stdout
#
# DEVICE (default cuda), MODELS (default "realsr-v3 realsr-v1"), LARGE (default 1024) and COMPILE (default
# both; off skips the compiled runs and their warm-up compiles) override the grid, e.g. one model per call
# where a command's time is limited, or `DEVICE=cpu MODELS=path/to/tiny-folder LARGE=128` as a dry run.
set -euo pipefail
out=${1:-bench-gpu}
device=${DEVICE:-cuda}
large=${LARGE:-1024}
mkdir -p "$out"
bench() {
    local name=$1
    shift
    echo "== $name: $*" >&2
    python benchmarks/bench.py --device "$device" --json "$@" >"$out/$name.json"
    python - "$out/$name.json" <<'PY'
import json, sys
for row in (r["row"] for r in json.load(open(sys.argv[1]))):
    print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
PY
}
for model in ${MODELS:-realsr-v3 realsr-v1}; do
    tag=$(basename "$model")
    bench "$tag-256" --model "$model" --sizes 256 --tiles 0 --precisions fp32,fp16,bf16 --compile "${COMPILE:-both}"
    bench "$tag-$large" --model "$model" --sizes "$large" --tiles 0,256 --precisions fp16,bf16
    bench "$tag-$large-tile-at-a-time" --model "$model" --sizes "$large" --tiles 256 --precisions fp32 \
        --tile-batch 1
done
