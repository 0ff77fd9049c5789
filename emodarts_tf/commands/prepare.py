"""``prepare``: load a corpus, extract (or reuse) its cached MFCCs, and write records.csv and folds.json.

Usage::

    python cli/prepare.py --data emodb --root ../shared/data/emodb --out runs/emodb
    python cli/prepare.py --data iemocap --root /data/IEMOCAP_full_release --protocol emodarts --out runs/iemocap
    python cli/prepare.py --data msp-improv --root /data/MSP-IMPROV --set data.msp_improv_labels=target --out runs/improv
    python cli/prepare.py --data msp-podcast --root /data/MSP-Podcast --out runs/podcast
    python cli/prepare.py --data csv --root my_corpus.csv --out runs/mine
    python cli/prepare.py --data demo --out runs/demo

The output folder holds ``records.csv`` (path,label,speaker,session,split,gender), ``folds.json`` and
``prepared.json`` (corpus, protocol, classes, feature config and cache, counts per class and speaker, folds,
and every file reported and skipped with its reason). Very short utterances (under max(0.25 s, 10 % of
``features.duration_s``)) are kept, zero-padded like the others, and named with their count in the summary
as a warning. With a two-stream config (``--config emotionnas``: ``search.method: emotionnas``) the frame-level
stream is extracted too, into its own cache folder. ``--prune`` then deletes the shards of this config's cache
folders that no file reads any more (``FeatureCache.prune``). Exit status 0 on success, 2 on a bad corpus or
config, a cache that could not be pruned, or a full disk.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from emodarts_tf.commands.common import add_common_args, config_from_args, exits_on_full_disk
from emodarts_tf.utils.logs import progress_bars

log = logging.getLogger("emodarts_tf.prepare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare",
        description="Load a corpus, build speaker-independent folds and extract (or reuse) the cached MFCCs.",
    )
    add_common_args(parser)
    parser.add_argument("--out", help="output folder for records.csv, folds.json, prepared.json "
                        "(default: runs/data/<corpus>-<protocol>)")  # fmt: skip
    parser.add_argument("--workers", type=int, help="extraction processes (default: data.workers; 0 = all cores)")
    parser.add_argument("--prune", action="store_true",
                        help="then delete the cache shards of this config's features (both streams for "
                        "--config emotionnas) that no file reads any more (their files were extracted again, e.g. "
                        "after the corpus was copied anew); run it when no other command reads the cache")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none anyway when stderr is not a terminal)")
    return parser


@exits_on_full_disk("prepare", "free some space, then rerun: the features cached so far are kept")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args, threads=False)  # MFCCs: no TensorFlow
        if args.workers is not None:
            config.data.workers = args.workers
        from emodarts_tf.data.corpora import resolve_protocol
        from emodarts_tf.data.prepare import prepare

        protocol = resolve_protocol(config.data.corpus, config.data.protocol)
        out = Path(args.out) if args.out else Path("runs") / "data" / f"{config.data.corpus}-{protocol}"
        prepared = prepare(config, out_dir=out, progress=not args.no_progress and progress_bars(),
                           two_stream=config.search.two_stream)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    report_short_audio(prepared)
    if args.prune:
        try:
            for cache in prepared.caches():
                cache.prune(config.data.lock_timeout_s)
        except (ValueError, OSError) as exc:  # the cache stayed locked, an unreadable journal, a file not deletable
            log.error("%s", exc)
            return 2
    log.info(
        "wrote %s, %s and %s (features cached in %s)%s",
        out / "records.csv", out / "folds.json", out / "prepared.json", prepared.cache_dir,
        "; SYNTHETIC corpus" if prepared.synthetic else "",
    )  # fmt: skip
    return 0


def report_short_audio(prepared) -> dict:
    """Warn about the kept utterances that are very short (``data.features.find_short_audio``: under
    max(0.25 s, 10 % of features.duration_s)), naming them and counting them; they are not dropped.
    Returns ``{path: seconds}``."""
    from emodarts_tf.data.features import find_short_audio, short_audio_message

    short = find_short_audio([r.path for r in prepared.records], prepared.feature_config)
    for line in short_audio_message(short, prepared.feature_config):
        log.warning("%s", line)
    return short
