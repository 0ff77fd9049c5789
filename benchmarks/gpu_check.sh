#!/usr/bin/env bash
# GPU figures of the paper configuration, in one go (under 8 minutes on one GPU):
#   - search step time and peak GPU memory at batch 64, first and second order, for each of
#     {float32, mixed float16} x {XLA off, XLA on}   (benchmarks/bench_search.py --paper --set batch=64)
#   - retraining throughput (utterances/s of fit on the paper network, batch 64), float32 and mixed float16
#     (benchmarks/bench_train.py)
#
# Usage:  bash benchmarks/gpu_check.sh            (from anywhere; results in benchmarks/results/gpu_check/)
# Environment: PYTHON (default: python), GPU_CHECK_BUDGET_S (default 420: every run is stopped by then),
#              GPU_CHECK_STEPS (timed steps per order, default 3), GPU_CHECK_OUT (results folder),
#              GPU_CHECK_DRY_RUN=1 (print the commands, run nothing).
#
# Without a GPU (nvidia-smi finds none, or CUDA_VISIBLE_DEVICES is "" or -1) it prints "no GPU visible:
# nothing measured" and exits 0. A GPU that TensorFlow cannot use (no CUDA wheels: pip install -e ".[gpu]")
# is reported and exits 2.
#
# Budget: tracing and compiling the paper supernet takes minutes of CPU per configuration, so the six runs
# start side by side (the GPU machine has the cores and the GPU memory for it) and each is stopped at the
# budget; each run holds a lock file while it times its steps (--step-lock), so no two runs' timed steps
# overlap. A run still compiling at the budget is reported as not measured (its row names the timeout).
set -u
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
BUDGET_S=${GPU_CHECK_BUDGET_S:-420}
STEPS=${GPU_CHECK_STEPS:-3}
OUT=${GPU_CHECK_OUT:-benchmarks/results/gpu_check}
DRY=${GPU_CHECK_DRY_RUN:-0}

if [ "$DRY" != "1" ]; then
  case "${CUDA_VISIBLE_DEVICES-unset}" in
    "" | "-1")
      echo "gpu_check: no GPU visible (CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES}'): nothing measured"
      exit 0 ;;
  esac
  gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
  if [ -z "$gpu" ]; then
    echo "gpu_check: no GPU visible (nvidia-smi finds none): nothing measured"
    exit 0
  fi
  tf_gpus=$(TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null | tail -n 1)
  if [ "${tf_gpus:-0}" = "0" ]; then
    echo "gpu_check: nvidia-smi sees '$gpu' but TensorFlow sees no GPU (pip install -e \".[gpu]\"?): nothing measured"
    exit 2
  fi
fi

# The commands (one per line: name, then the command line).
LOCK="$OUT/steps.lock"
common_search="benchmarks/bench_search.py --paper --set batch=64 --steps $STEPS --timeout $BUDGET_S --max-rss-gb 32 --step-lock $LOCK"
# The FLOP count and GEMM calibration of bench_search.py cost time and are not asked for here.
extra=" --no-flops --gemm-n 0"
commands=(
  "search_fp32_noxla|$PY $common_search$extra --out $OUT/search_b64_fp32_noxla.md"
  "search_mixed_noxla|$PY $common_search$extra --mixed-precision --out $OUT/search_b64_mixed_noxla.md"
  "search_fp32_xla|$PY $common_search$extra --jit --out $OUT/search_b64_fp32_xla.md"
  "search_mixed_xla|$PY $common_search$extra --jit --mixed-precision --out $OUT/search_b64_mixed_xla.md"
  "train_fp32|timeout $BUDGET_S $PY benchmarks/bench_train.py --batch 64 --steps 20 --step-lock $LOCK --out $OUT/train_b64_fp32.json"
  "train_mixed|timeout $BUDGET_S $PY benchmarks/bench_train.py --batch 64 --steps 20 --mixed-precision --step-lock $LOCK --out $OUT/train_b64_mixed.json"
)

if [ "$DRY" = "1" ]; then
  for entry in "${commands[@]}"; do echo "would run: ${entry#*|}"; done
  exit 0
fi

mkdir -p "$OUT/logs"
rm -f "$OUT"/*.json "$OUT"/*.md
echo "gpu_check: $gpu; TensorFlow sees $tf_gpus GPU(s); budget ${BUDGET_S} s; results in $OUT"
start=$SECONDS
pids=()
for entry in "${commands[@]}"; do
  name=${entry%%|*}
  cmd=${entry#*|}
  echo "  start $name: $cmd"
  TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} bash -c "$cmd" >"$OUT/logs/$name.log" 2>&1 &
  pids+=("$!")
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    status=1
    echo "  ${commands[$i]%%|*}: exit status non-zero (see $OUT/logs/${commands[$i]%%|*}.log)"
  fi
done
echo "gpu_check: all runs ended after $((SECONDS - start)) s"

GPU_NAME="$gpu" OUT="$OUT" "$PY" - <<'EOF'
import json, os
from pathlib import Path

out = Path(os.environ["OUT"])
print(f"\nGPU: {os.environ['GPU_NAME']}")
print("\nSearch, paper configuration, batch 64 (median step s after the first; first step = trace + compile):\n")
print("| order | precision | XLA | step s | first step s | peak GPU GB | params |")
print("|---|---|---|---|---|---|---|")
for name in ("fp32_noxla", "mixed_noxla", "fp32_xla", "mixed_xla"):
    path = out / f"search_b64_{name}.json"
    precision = "mixed float16" if name.startswith("mixed") else "float32"
    xla = "on" if name.endswith("_xla") else "off"
    if not path.is_file():
        print(f"| first, second | {precision} | {xla} | not measured (see logs/search_{name}.log) | | | |")
        continue
    for r in json.loads(path.read_text())["results"]:
        if "error" in r:
            print(f"| {r['order']} | {precision} | {xla} | not measured: {r['error'].splitlines()[0][:80]} | | | |")
        else:
            print(f"| {r['order']} | {r.get('precision', precision)} | {xla} | {r['step_median_s']} | "
                  f"{r['first_step_s']} | {r.get('peak_gpu_gb', '')} | {r['params']:,} |")
print("\nRetraining (fit of the paper network, a random genotype of the paper space, batch 64):\n")
print("| precision | utterances/s | step s | first epoch s | peak GPU GB |")
print("|---|---|---|---|---|")
for name in ("fp32", "mixed"):
    path = out / f"train_b64_{name}.json"
    if not path.is_file():
        print(f"| {name} | not measured (see logs/train_{name}.log) | | | |")
        continue
    r = json.loads(path.read_text())
    print(f"| {r['precision']} | {r['utterances_per_s']} | {r['step_s']} | {r['first_epoch_s']} | {r.get('peak_gpu_gb', '')} |")
EOF
exit $status
