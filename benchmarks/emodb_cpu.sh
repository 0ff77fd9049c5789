#!/usr/bin/env bash
# The README's EmoDB results with configs/cpu.yaml, all on the same 5 emodb5 folds, features and recipe:
# emoDARTS (search + retraining of each fold's final genotype), 8 random genotypes of the same space under the
# same recipe, the four Keras Tuner baseline families, the linear reference, and the side-by-side table.
#
#   bash benchmarks/emodb_cpu.sh              # 4 classes (ang/hap/neu/sad)
#   CLASSES=all bash benchmarks/emodb_cpu.sh  # all 7 EmoDB classes
# Environment: PYTHON (default .venv/bin/python), EMODB_ROOT (default ../shared/data/emodb), OUT (default
# runs/emodb-cpu[-7]), RANDOM_N (default 8), FAMILIES (default "cnn_lstm cnn lstm cnn_lstm_att"; empty: no baselines),
# EXTRA (more --set arguments for every stage, split at whitespace, no quoting; e.g.
# EXTRA="--set features.kind=mfcc --set features.n_mels=64" for the MFCC maps of cpu.yaml before 2026-12-06, or
# EXTRA="--set recipe.ensemble=false" for the refit served alone as before 2026-12-07, each with its own OUT).
# Every stage resumes after a kill (rerun the script). Prints wall-clock seconds per stage.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
EMODB_ROOT=${EMODB_ROOT:-../shared/data/emodb}
CLASSES=${CLASSES:-}
RANDOM_N=${RANDOM_N:-8}
FAMILIES=${FAMILIES-"cnn_lstm cnn lstm cnn_lstm_att"}
SETS=()
if [ "$CLASSES" = "all" ]; then
  SETS=(--set "data.classes=[all]")
  OUT=${OUT:-runs/emodb-cpu-7}
else
  OUT=${OUT:-runs/emodb-cpu}
fi
read -r -a EXTRA_SETS <<< "${EXTRA:-}"
SETS+=("${EXTRA_SETS[@]}")
COMMON=(--data emodb --root "$EMODB_ROOT" --protocol emodb5 --config cpu "${SETS[@]}")

stage() { local name=$1; shift; local s; s=$(date +%s); "$@"; echo "$name: $(( $(date +%s) - s )) s" | tee -a "$OUT/times.txt"; }
mkdir -p "$OUT"

stage search "$PYTHON" cli/search.py "${COMMON[@]}" --fold all --out "$OUT/search" --resume
stage train "$PYTHON" cli/train.py "${COMMON[@]}" --genotype "$OUT/search" --folds all --out "$OUT/emodarts"
stage random "$PYTHON" cli/train.py "${COMMON[@]}" --genotype "random:$RANDOM_N" --seed 0 --folds all --out "$OUT/random"
names=emoDARTS,random
runs=("$OUT/emodarts" "$OUT/random")
for family in $FAMILIES; do
  stage "baseline $family" "$PYTHON" cli/baseline.py "${COMMON[@]}" --family "$family" --folds all --out "$OUT/bl-$family"
  names="$names,$family"
  runs+=("$OUT/bl-$family")
done
"$PYTHON" benchmarks/emodb_linear_reference.py --root "$EMODB_ROOT" --config cpu "${SETS[@]}"
"$PYTHON" cli/compare.py "${runs[@]}" --names "$names" --title "EmoDB, emodb5 folds, configs/cpu.yaml" --out "$OUT/compare"
cat "$OUT/times.txt"
