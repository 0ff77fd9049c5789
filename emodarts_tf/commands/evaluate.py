"""``evaluate``: score a trained model directory on any corpus split.

Usage::

    # the test fold the model was trained for (its fold index is in model_info.json)
    python cli/evaluate.py --model runs/train-emodb/fold1 --data emodb --root ../shared/data/emodb
    # another split or fold, or the whole corpus
    python cli/evaluate.py --model runs/train-emodb/fold1 --data emodb --root ../shared/data/emodb --split all
    # a corpus the model never saw, from a CSV manifest (path,label,speaker): labels mapped by name
    python cli/evaluate.py --model runs/train-emodb/fold1 --data csv --root my_corpus.csv --split all --ignore-unknown

The corpus is read with the MODEL's feature config and normalised with the model's statistics; labels
are matched to the model's classes by name. A label the model does not know is an error naming it,
unless ``--ignore-unknown`` leaves those utterances out (reported). Scoring utterances of speakers the
model trained on is allowed but flagged (the scores are then not speaker-independent).

``--split`` defaults to ``test`` of the model's own fold when the corpus and protocol are the ones it was
trained on, and to ``all`` otherwise. Writes ``metrics.json``, ``metrics.md``, ``confusion_matrix.png``
and ``predictions.csv`` to ``--out`` (default ``<model>/eval-<corpus>-<split>[-fold<k>]``). Exit status 0 on
success, 2 on a bad model, corpus or class, or a full disk.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
from pathlib import Path

from emodarts_tf.commands.common import add_common_args, config_from_args, exits_on_full_disk
from emodarts_tf.utils.logs import progress_bars

log = logging.getLogger("emodarts_tf.evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate", description="Score a trained model on a corpus split.")
    parser.add_argument("--model", required=True, help="a trained model directory (a fold<k>/ of cli/train.py)")
    add_common_args(parser)
    parser.add_argument("--split", choices=("test", "train", "all"),
                        help="test or train part of --fold, or all utterances (default: test, the model's own "
                        "test fold, when --data, --protocol and --root are the ones it was trained on; all "
                        "otherwise)")  # fmt: skip
    parser.add_argument("--fold", type=int, help="fold of the corpus's protocol for --split test/train "
                        "(default: the model's own fold on its own corpus)")  # fmt: skip
    parser.add_argument("--ignore-unknown", action="store_true",
                        help="leave out utterances whose class the model does not know (reported)")
    parser.add_argument("--out", help="report directory (default: <model>/eval-<corpus>-<split>[-fold<k>])")
    parser.add_argument("--batch-size", type=int, default=64)
    return parser


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Only errors from ``logger_name`` (and its children) inside the block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_labels(config, split: str, fold: int | None, classes: list, ignore_unknown: bool = False) -> None:
    """Refuse, before any feature extraction, labels of ``split`` (of fold ``fold``) that the model's ``classes``
    do not hold (``scoring.map_labels``'s error, a ValueError); nothing to check with ``ignore_unknown``.

    Reads only the corpus's labels (quietly: the extraction that follows reports the corpus's problems). When
    the folds cannot be built here, the check is left to the scoring step, which sees the same labels.
    """
    if ignore_unknown:
        return
    from emodarts_tf.data.corpora import load_corpus
    from emodarts_tf.data.protocols import make_folds
    from emodarts_tf.evaluation.scoring import map_labels

    with _quiet("emodarts_tf.data"):
        corpus = load_corpus(config.data)
        records = corpus.records
        if split != "all":
            try:
                part = next(f for f in make_folds(records, corpus.protocol, corpus.name) if f.index == fold)
            except (ValueError, StopIteration):
                return
            paths = set(part.test if split == "test" else part.train)
            records = [r for r in records if r.path in paths]
    map_labels([r.label for r in records], list(classes), ignore_unknown=False)


@exits_on_full_disk("evaluate", "free some space, then rerun")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from emodarts_tf.evaluation.model_dir import load_model_dir

        config = config_from_args(args)
        trained = load_model_dir(args.model)
        # Features exactly as the model was trained on them.
        config = dataclasses.replace(config, features=trained.feature_config)
        if trained.two_stream:  # and the frame-level stream (EmotionNAS) as it was trained on
            config = dataclasses.replace(config, frames=trained.frames_config)
        from emodarts_tf.data.corpora import resolve_protocol
        from emodarts_tf.evaluation.scoring import load_split, score, trained_speakers, write_report

        protocol = resolve_protocol(config.data.corpus, config.data.protocol)
        root = str(Path(config.data.root).expanduser().resolve()) if config.data.root else None
        same_corpus = (
            trained.info.get("corpus") == config.data.corpus
            and trained.info.get("protocol") == protocol
            and trained.info.get("corpus_root", root) == root
        )
        model_fold = (trained.info.get("fold") or {}).get("index")
        split = args.split or ("test" if same_corpus and model_fold is not None else "all")
        fold = args.fold
        if fold is None and split != "all":
            if not same_corpus:
                raise ValueError(
                    f"--split {split} needs --fold: the model was trained on {trained.info.get('corpus')}/"
                    f"{trained.info.get('protocol')}, not {config.data.corpus}/{protocol}"
                )
            fold = model_fold
        # Labels first: an unknown class is refused before any feature is extracted.
        check_labels(config, split, fold, trained.classes, ignore_unknown=args.ignore_unknown)
        data = load_split(config, split, fold, progress=progress_bars(), two_stream=trained.two_stream)
        scored = score(trained, data, ignore_unknown=args.ignore_unknown, batch_size=args.batch_size)
        notes = []
        seen = trained_speakers(trained)
        if same_corpus and seen:
            overlap = sorted(seen & set(scored.speakers))
            if overlap:
                n = sum(1 for s in scored.speakers if s in seen)
                note = (
                    f"{n} of {len(scored.speakers)} utterances are from speakers the model trained or was selected on "
                    f"({', '.join(overlap)}): these scores are not speaker-independent"
                )
                log.warning(note)
                notes.append(note)
        scored.metrics.update(
            {
                "model": str(trained.path),
                "corpus": data.corpus,
                "protocol": data.protocol,
                "split": split,
                "fold": fold,
                "synthetic": bool(data.synthetic),
                "notes": notes,
            }
        )
        name = f"eval-{data.corpus}-{split}" + (f"-fold{fold}" if split != "all" else "")
        out = Path(args.out) if args.out else trained.path / name
        title = f"{trained.path.name} on {data.corpus}{' (SYNTHETIC)' if data.synthetic else ''}, " + (
            f"{split} part of fold {fold}" if split != "all" else "all utterances"
        )
        write_report(out, scored, title)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    m = scored.metrics
    log.info("%s: UA %.4f  WA %.4f  macro F1 %.4f  (n=%d)%s", title, m["ua"], m["wa"], m["f1"], m["n"],
             f"; left out {m['ignored']}" if m["ignored"] else "")  # fmt: skip
    log.info("wrote %s", out)
    return 0
