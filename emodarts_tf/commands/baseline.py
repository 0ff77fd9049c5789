"""``baseline``: tune a hand-designed baseline family per fold with Keras Tuner, retrain the best, test once.

Usage::

    python cli/baseline.py --data emodb --root ../shared/data/emodb --family cnn_lstm --tuner random --trials 10 --out runs/bl-emodb
    python cli/baseline.py --data demo --family cnn --tuner hyperband --trials 6 --epochs 4 --folds 1,3 --out runs/demo-bl
    python cli/baseline.py --data iemocap --root /data/IEMOCAP_full_release --protocol emodarts --family cnn_lstm_att \\
        --tuner bayesian --trials 20 --set baseline.tuning_epochs=15 --out runs/bl-iemocap

Families: ``cnn``, ``lstm``, ``cnn_lstm``, ``cnn_lstm_att``; their search spaces are in
``configs/baselines.yaml`` (another file: ``--set baseline.space_file=<path>``). Each fold is tuned on the
validation speakers of its training part (never its test speakers), its best setting retrained with the
same early stopping, checkpoints and reports as ``cli/train.py``, and its test fold scored once.

Output::

    <out>/config.yaml, baseline_run.json   the resolved config; the run's family, tuner, corpus, features
    <out>/data/                            records.csv, folds.json, prepared.json of the corpus
    <out>/fold<k>/tuner/<family>/          Keras Tuner's state and trials (resumed on a rerun)
    <out>/fold<k>/best_hp.json             the best setting, its validation UA, parameters and FLOPs
    <out>/fold<k>/                         the retrained model directory (cli/evaluate.py --model,
                                           cli/export.py --model), metrics.json, history, figures
    <out>/summary.json, summary.md         UA / WA / macro F1 per fold and mean +- std (the keys of
                                           cli/train.py's summary), params, FLOPs, compute_s

Rerunning the same command after a kill resumes: finished trials and folds are kept. A larger
``--trials`` continues the search. Distributed tuning: see the README (Keras Tuner's chief/worker mode).
Exit status 0 on success (a distributed worker included), 2 on a bad corpus, config or run folder, or a full
disk.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from emodarts_tf.commands.common import add_common_args, config_from_args, exits_on_full_disk, parse_folds
from emodarts_tf.utils.logs import progress_bars

log = logging.getLogger("emodarts_tf.baseline")


def build_parser() -> argparse.ArgumentParser:
    from emodarts_tf.baselines.names import FAMILIES, TUNERS

    parser = argparse.ArgumentParser(
        prog="baseline",
        description="Tune a hand-designed baseline (CNN, LSTM, CNN-LSTM, CNN-LSTM with attention) on each fold's "
        "validation speakers with Keras Tuner, retrain the best setting and score the test fold once.",
    )
    add_common_args(parser)
    parser.add_argument("--family", choices=FAMILIES, help="baseline family (default: baseline.family of the config)")
    parser.add_argument("--tuner", choices=TUNERS, help="Keras Tuner algorithm (default: baseline.tuner of the config)")
    parser.add_argument("--trials", type=int, help="most trials per fold (default: baseline.trials of the config)")
    parser.add_argument("--folds", default="all", help="'all' (default) or fold numbers such as 1,3")
    parser.add_argument("--epochs", type=int, help="retraining epochs, and trial epochs unless baseline.tuning_epochs is set")
    parser.add_argument("--out", required=True, help="output directory (one fold<k>/ per fold and summary.json)")
    return parser


@exits_on_full_disk("baseline", "free some space, then rerun the same command: finished trials and folds are "
                    "kept")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag in ("trials", "epochs"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            log.error("--%s: expected an integer >= 1, received %d", flag, value)
            return 2
    for flag in ("family", "tuner", "trials"):
        if getattr(args, flag) is not None:
            args.overrides = [f"baseline.{flag}={getattr(args, flag)}", *args.overrides]
    try:
        config = config_from_args(args, epochs_key="baseline.epochs")
        from emodarts_tf.baselines.runner import check_baseline_config, distributed_role, run_baseline
        from emodarts_tf.data.prepare import prepare
        from emodarts_tf.evaluation.summary import markdown_table

        check_baseline_config(config.baseline)
        role = distributed_role()
        out = Path(args.out)
        # Workers prepare from the same cache but write nothing into --out (the chief owns it).
        # A rerun resumes (tuners and finished folds are kept), so it must see the same folds.
        prepared = prepare(config, out_dir=None if role == "worker" else out / "data", progress=progress_bars(),
                           resuming=True)
        folds = parse_folds(args.folds, [f.index for f in prepared.folds])
        summary = run_baseline(config, out, folds=folds, prepared=prepared)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if summary is None:  # a distributed worker: the chief writes the results
        return 0
    log.info("summary (%s):\n%s", out / "summary.json", markdown_table(summary, f"baseline {config.baseline.family}"))
    log.info("wrote %s and %s", out / "summary.json", out / "summary.md")
    return 0
