"""``compare``: one side-by-side table of emoDARTS and baseline runs, as Markdown and a bar chart.

Usage::

    python cli/compare.py runs/train-emodb runs/bl-emodb-cnn runs/bl-emodb-cnn_lstm
    python cli/compare.py runs/train-emodb runs/bl-emodb --names emoDARTS,CNN-LSTM --out runs/compare-emodb

Each argument is the ``--out`` folder of ``cli/train.py`` or ``cli/baseline.py`` (its ``summary.json``), or
of ``cli/train.py --genotype random:N`` (its ``random_summary.json``): the random genotypes are shown as a
distribution (median, min, max) and every other run's mean UA is ranked among theirs.
The table (UA, WA, macro F1 as mean ± std over folds, parameters, FLOPs, and compute: search + retraining
or tuning + retraining) is printed on stdout; ``<out>/comparison.md``, ``comparison.png`` (grouped bars with
the std over folds as error bars) and ``comparison.json`` are written. Exit status 2 on a folder without
a summary, or a full disk.
"""
from __future__ import annotations

import argparse
import logging
import sys

from emodarts_tf.commands.common import exits_on_full_disk
from emodarts_tf.utils.logs import setup_logging

log = logging.getLogger("emodarts_tf.compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare", description="Compare emoDARTS and baseline runs side by side.")
    parser.add_argument("runs", nargs="+",
                        help="run folders (the --out of cli/train.py, of cli/train.py --genotype random:N, "
                        "or of cli/baseline.py)")
    parser.add_argument("--out", default="comparison", help="folder for comparison.md/.png/.json (default: ./comparison)")
    parser.add_argument("--names", help="comma-separated display names, one per run (default: the folder names)")
    parser.add_argument("--title", help="title of the table and the chart")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


@exits_on_full_disk("compare", "free some space, then rerun")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from emodarts_tf.baselines.compare import compare_runs

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    try:
        markdown, written = compare_runs(args.runs, out_dir=args.out, names=names, title=args.title)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    sys.stdout.write(markdown)
    sys.stdout.flush()
    log.info("wrote %s", ", ".join(str(p) for p in written.values()))
    return 0
