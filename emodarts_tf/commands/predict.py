"""``predict``: the emotion of audio files, with a trained fold directory or an exported SavedModel.

Usage::

    python cli/predict.py --model runs/train-emodb/fold1 a.wav b.flac recordings/
    python cli/predict.py --model serving/emodarts/1 recordings/ --out predictions.csv   # or .json

Prints one line per file, ``path<TAB>predicted class<TAB>class=probability ...``, in the order given
(folders walked recursively for .wav, .flac, .ogg and .mp3 files, sorted). ``--out`` also writes the
predictions as CSV (``path,predicted,p_<class>...``) or JSON (with the files skipped), by its extension.

The MFCCs are computed with the MODEL's feature config (``model_info.json``, or an export's
``assets.extra/feature_config.json``) by the same function as the feature cache, so the probabilities
equal what ``cli/evaluate.py`` reports for the same files. Bad files (missing, unreadable, empty, silent,
truncated, not audio) are named, skipped and counted at the end; very short files (under max(0.25 s, 10 % of
the model's duration)) are predicted but named in a warning.

A model trained with ``data.normalize: speaker`` z-scores each speaker's features with that speaker's own
statistics: predict takes ALL the files given as ONE speaker's utterances (their joint statistics); to
predict several speakers, run it once per speaker. Exit status 0 when at least one file was predicted,
2 otherwise (or for a bad model or ``--out``, or a full disk).
"""
from __future__ import annotations

import argparse
import logging
import sys

from emodarts_tf.commands.common import exits_on_full_disk
from emodarts_tf.utils.logs import setup_logging

log = logging.getLogger("emodarts_tf.predict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict",
        description="Predict the emotion of audio files (wav, flac, ogg, mp3; folders are walked) with a trained "
        "model. For a model trained with data.normalize: speaker, ALL the files given are taken as ONE speaker's "
        "utterances (normalised with their joint statistics): run predict once per speaker.",
    )
    parser.add_argument("--model", required=True,
                        help="a trained fold directory (fold<k>/ of cli/train.py) or an export of cli/export.py "
                        "(<serving_dir>/<version>/; a serving directory uses its highest version)")  # fmt: skip
    parser.add_argument("inputs", nargs="+", metavar="AUDIO", help="audio files and folders")
    parser.add_argument("--out", help="also write the predictions to this .csv or .json file")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


@exits_on_full_disk("predict", "free some space, then rerun")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)  # before anything imports TensorFlow
    from emodarts_tf.data.features import feature_extractor_label, feature_shape
    from emodarts_tf.evaluation.predict import OUTPUT_FORMATS, collect_audio_files, load_predictor, predict_files

    if args.out and not args.out.lower().endswith(OUTPUT_FORMATS):
        log.error("--out %s: expected a .csv or .json file name (the extension picks the format)", args.out)
        return 2
    if args.batch_size < 1:
        log.error("--batch-size: expected an integer >= 1, received %d", args.batch_size)
        return 2
    try:
        predictor = load_predictor(args.model)
        fcfg = predictor.feature_config
        rows, frames = feature_shape(fcfg)  # also checks the saved feature config
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    files, problems = collect_audio_files(args.inputs)
    log.info("predicting %d file(s) with %s (%s; classes %s; features: %s of %d x %d, %g s at %d Hz)",
             len(files), predictor.path, "exported SavedModel" if predictor.kind == "saved_model" else "trained model",
             predictor.classes, feature_extractor_label(fcfg), rows, frames, fcfg.duration_s,
             fcfg.sample_rate)  # fmt: skip
    result = predict_files(predictor, files, batch_size=args.batch_size, problems=problems)
    for line in result.lines():
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if result.skipped:
        log.warning("skipped %d (named above): %s", len(result.skipped), ", ".join(p for p, _ in result.skipped))
    if not result.paths:
        log.error("no file could be predicted (%d given, %d skipped)", len(files), len(result.skipped))
        return 2
    if args.out:
        try:
            written = result.write(args.out)
        except (ValueError, OSError) as exc:
            log.error("%s", exc)
            return 2
        log.info("wrote %s", written)
    log.info("predicted %d file(s), skipped %d", len(result.paths), len(result.skipped))
    return 0
