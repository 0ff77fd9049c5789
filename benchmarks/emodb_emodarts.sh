#!/usr/bin/env bash
# The real EmoDB run behind the README's emoDARTS table: a DARTS search on the training part of each of the
# five emodb5 folds (one male + one female test speaker each), retraining of each fold's best genotype
# (by validation UA during its search) from scratch, the per-fold UA / WA / F1 table, and an export.
#
#   bash benchmarks/emodb_emodarts.sh
# Environment: PYTHON (default .venv/bin/python), EMODB_ROOT (default ../shared/data/emodb), SEARCH_OUT
# (default runs/search-emodb), TRAIN_OUT (default runs/train-emodb, where benchmarks/emodb_baselines.sh
# looks for the emoDARTS run to compare with), SERVING_OUT (default runs/serving/emodarts).
#
# Config: benchmarks/emodb_emodarts.yaml (configs/emodb_budget.yaml with a smaller search): 16 kHz, 3 s,
# 40 MFCCs x 47 frames, 4 classes (ang, hap, neu, sad: 339 utterances). Measured on 2 CPU cores shared
# with other jobs: search 546 s (about 100 s per fold), retraining 219 s, under 15 minutes in all.
# Rerunning the script after a kill resumes both stages (finished folds are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
EMODB_ROOT=${EMODB_ROOT:-../shared/data/emodb}
SEARCH_OUT=${SEARCH_OUT:-runs/search-emodb}
TRAIN_OUT=${TRAIN_OUT:-runs/train-emodb}
SERVING_OUT=${SERVING_OUT:-runs/serving/emodarts}
CONFIG=benchmarks/emodb_emodarts.yaml

start=$(date +%s)
"$PYTHON" cli/search.py --data emodb --root "$EMODB_ROOT" --config "$CONFIG" --fold all --out "$SEARCH_OUT" --resume
searched=$(date +%s)
"$PYTHON" cli/train.py --data emodb --root "$EMODB_ROOT" --config "$CONFIG" --genotype "$SEARCH_OUT" --folds all \
    --out "$TRAIN_OUT"
trained=$(date +%s)
"$PYTHON" cli/export.py --model "$TRAIN_OUT/fold1" --out "$SERVING_OUT" --version 1 --overwrite

echo
cat "$TRAIN_OUT/summary.md"
echo
echo "wall clock: search $((searched - start)) s, retraining $((trained - searched)) s"
