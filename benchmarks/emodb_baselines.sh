#!/usr/bin/env bash
# Keras Tuner baseline on real EmoDB (4 classes W/F/T/N -> ang/hap/sad/neu, 339 utterances), the 5 folds of
# one male and one female speaker (emodb5), with the features of configs/emodb_budget.yaml (16 kHz, 3 s,
# 40 MFCCs x 47 frames: the same input as benchmarks/emodb_emodarts.yaml's emoDARTS run) and a small
# budget for 2 CPU cores: per fold 4 random-search trials of at most 10 epochs, tuned on the validation
# speakers of the training part (never the test speakers), then the best setting retrained for at most
# 30 epochs (early stopping on validation UA, patience 8) and its test fold scored once. Then, if an
# emoDARTS run on the same folds exists, the side-by-side table and chart.
#
# Usage: benchmarks/emodb_baselines.sh [family] [emoDARTS run dir]
#   family            cnn | lstm | cnn_lstm | cnn_lstm_att (default: cnn_lstm, the paper code's CNN-BiLSTM family)
#   emoDARTS run dir  the --out of `cli/train.py --data emodb --protocol emodb5 ...` (default: runs/train-emodb, from benchmarks/emodb_emodarts.sh)
# Environment: PYTHON (default .venv/bin/python), OUT (default runs/bl-emodb-<family>).
# Rerunning resumes: finished trials and folds are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

FAMILY="${1:-cnn_lstm}"
EMODARTS_RUN="${2:-runs/train-emodb}"
PYTHON="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-runs/bl-emodb-${FAMILY}}"
EMODB_ROOT="../shared/data/emodb"

start=$(date +%s)
"$PYTHON" cli/baseline.py --data emodb --root "$EMODB_ROOT" --protocol emodb5 --config emodb_budget \
  --family "$FAMILY" --tuner random --trials 4 --epochs 30 --folds all \
  --set baseline.tuning_epochs=10 --set baseline.patience=8 --set baseline.batch_size=16 \
  --out "$OUT"
echo "baseline ${FAMILY}: $(( $(date +%s) - start )) s wall-clock; summary in ${OUT}/summary.md"

if [ -f "${EMODARTS_RUN}/summary.json" ]; then
  "$PYTHON" cli/compare.py "$EMODARTS_RUN" "$OUT" --names "emoDARTS,${FAMILY}" \
    --title "EmoDB, 4 classes, emodb5 folds" --out "${OUT}/comparison"
else
  echo "no emoDARTS run at ${EMODARTS_RUN} (summary.json); compare later with:"
  echo "  $PYTHON cli/compare.py <emoDARTS run> ${OUT} --out ${OUT}/comparison"
fi
