"""``search``: the emoDARTS architecture search on the training part of one fold, or of every fold.

Usage::

    python cli/search.py --data demo                                      # the small demo, a few minutes on 2 cores
    python cli/search.py --data iemocap --root /data/IEMOCAP_full_release # the paper's protocol and settings
    python cli/search.py --data emodb --root ../shared/data/emodb --fold all --epochs 20 --out runs/search-emodb
    python cli/search.py --data demo --resume                             # continue a killed run
    python cli/search.py --data demo --order second --set search.warmup_epochs=2
    python cli/search.py --method emotionnas --data emodb --root ../shared/data/emodb --protocol emodb5

The search of fold ``k`` sees only fold ``k``'s training speakers (weights part, alphas part and the
validation speakers that pick the best epoch); its outputs record which speakers it saw, so that
``cli/train.py`` refuses to train a fold whose test speakers the search saw.

Output (``--out``, default ``runs/search-<data>``)::

    <out>/data/                 records.csv, folds.json, prepared.json of the corpus
    <out>/fold<k>/              genotype.json (final), genotype_best.json (best validation UA),
                                genotypes/, alpha_history.json, search.json, config.yaml, cells/*.png,
                                checkpoints/, tensorboard/; with search.select=perturbation also
                                genotype_pt.json and perturbation.json (DARTS-PT selection)
    <out>/genotypes.json        {"<k>": genotype} for every finished fold searched into <out>, rebuilt from the
                                fold folders (several hosts may search different --fold into one shared <out>)

``cli/train.py --genotype <out>`` then retrains each fold's genotype. Exit status 0 on success, 2 on a bad
corpus, config or checkpoint, or a full disk (one line naming the file it could not write), 3 when another
worker of a ``search.strategy=multi_worker`` run was lost (one line naming it; README, Several machines).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from emodarts_tf.commands.common import (
    add_common_args,
    config_from_args,
    exits_on_full_disk,
    exits_on_lost_worker,
    parse_folds,
)
from emodarts_tf.utils.logs import progress_bars

log = logging.getLogger("emodarts_tf.search")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="search",
        description="DARTS search of CNN + SeqNN cells for speech emotion recognition on the training part of "
        "each selected fold; writes genotypes, alpha history, cell diagrams, checkpoints and TensorBoard logs.",
    )
    add_common_args(parser)
    parser.add_argument("--fold", default="1", help="fold to search: a number (default 1), 'all', or a list such as 1,3")
    parser.add_argument("--epochs", type=int, help="search epochs (default: search.epochs of the config)")
    parser.add_argument("--out", help="output directory (default: runs/search-<data>)")
    parser.add_argument("--resume", action="store_true", help="continue each fold from its latest checkpoint")
    parser.add_argument("--method", choices=("emodarts", "emotionnas"),
                        help="emodarts (default: MFCC image -> CNN cells -> SeqNN cells) or emotionnas (two streams: "
                        "the image through CNN cells, frame-level features through SeqNN cells, fused; default "
                        "config emotionnas.yaml, demo.yaml for --data demo)")
    parser.add_argument("--order", choices=("first", "second"),
                        help="first-order or second-order (unrolled) alpha gradient (default: search.order)")
    return parser


@exits_on_full_disk("search", "free some space, then rerun with --resume: each fold continues from its last "
                    "checkpoint")
@exits_on_lost_worker("search", "Restart every worker with the same TF_CONFIG and --resume to continue from the "
                      "last checkpoint")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.order:
        args.overrides = [f"search.order={args.order}", *args.overrides]
    if args.method:
        args.overrides = [f"search.method={args.method}", *args.overrides]
        if args.method == "emotionnas" and not args.config and args.data != "demo":
            args.config = "emotionnas.yaml"
    try:
        config = config_from_args(args, epochs_key="search.epochs")
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    logging.getLogger("absl").setLevel(logging.WARNING)  # tf.train.CheckpointManager's chatter
    out = Path(args.out or f"runs/search-{config.data.corpus}")

    from emodarts_tf.search.runner import check_search_config, check_search_partial_channels
    from emodarts_tf.utils.cluster import start_strategies, sync_workers, worker_output_dir

    try:
        check_search_config(config.search)
        check_search_partial_channels(config)
        # search.strategy=multi_worker: the strategy must exist before TensorFlow runs anything.
        start_strategies(config.search.strategy)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    # The chief writes under --out; another worker of a multi-worker cluster into a temporary copy of it.
    with worker_output_dir(out) as written:
        status = _search(args, config, out, written)
        if status == 0:
            sync_workers()  # no worker leaves while another still writes
        return status


def _search(args, config, out: Path, written: Path) -> int:
    from emodarts_tf.data.prepare import prepare
    from emodarts_tf.search.runner import run_search_folds

    shown = out
    out = written
    try:
        # A search folder holds one corpus: a fold searched there (with or without --resume) must see the same
        # folds as the others, so an existing run's tables are always checked, never overwritten by another's.
        prepared = prepare(config, out_dir=out / "data", progress=progress_bars(),
                           two_stream=config.search.two_stream, resuming=True)
        folds = parse_folds(args.fold, [f.index for f in prepared.folds], flag="--fold")
        log.info("searching fold(s) %s of %s (%s) into %s", folds, prepared.corpus, prepared.protocol, out)
        results = run_search_folds(config, out, folds, resume=args.resume, prepared=prepared)
    except ValueError as exc:
        log.error("%s", exc)
        return 2

    # "search s": search.json's "seconds", the recorded epoch times (alpha_history.json) summed over every
    # run of the fold, resumed runs included; the same number as the fold's "done" line.
    log.info("%-6s %-10s %-8s %-8s %-9s %s", "fold", "best UA", "epoch", "epochs", "search s", "genotype")
    for k, r in results.items():
        ua = r["best"]["val_ua"]
        log.info(
            "%-6d %-10s %-8s %-8s %-9.0f %s", k, "n/a" if ua is None else f"{ua:.4f}", r["best"]["epoch"],
            r["epochs_done"], r["seconds"], shown / f"fold{k}" / r["genotype_file"],
        )  # fmt: skip
    if getattr(prepared, "synthetic", False):
        log.info("the demo corpus is SYNTHETIC: these genotypes only show that the machinery works")
    log.info("next: python cli/train.py --data %s --genotype %s --folds %s --out <dir>", config.data.corpus, shown,
             ",".join(str(k) for k in results))  # fmt: skip
    return 0
