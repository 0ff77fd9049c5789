"""``export``: write a trained model as a TF Serving SavedModel version.

Usage::

    python cli/export.py --model runs/train-emodb/fold1 --out serving/emodarts --version 1

writes ``serving/emodarts/1/`` (``saved_model.pb``, ``variables/``, ``assets.extra/classes.json``,
``labels.txt``, ``feature_config.json``, ``export_info.json``) with the signatures ``serving_default``
(input ``mfcc``: raw MFCCs) and ``serving_waveform`` (inputs ``waveform``: 16 kHz mono float32 and
``sample_rate``), both answering ``probabilities`` and ``class_id``; see ``emodarts_tf.export.saved_model``.

After writing, the export is reloaded with ``tf.saved_model.load`` and its probabilities are compared
with the Keras model's on MFCC maps drawn around the training statistics (``--no-verify`` skips it).
Exit status 0 on success, 2 on a bad model directory or version, 1 if the verification fails.
"""
from __future__ import annotations

import argparse
import logging

import numpy as np

from emodarts_tf.utils.logs import setup_logging

log = logging.getLogger("emodarts_tf.export")

TOLERANCE = 1e-5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export", description="Export a trained model for TF Serving.")
    parser.add_argument("--model", required=True, help="a trained model directory (a fold<k>/ of cli/train.py)")
    parser.add_argument("--out", required=True, help="the model base path TF Serving is given, e.g. serving/emodarts")
    parser.add_argument("--version", type=int, default=1, help="numeric version directory (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version directory")
    parser.add_argument("--no-verify", action="store_true", help="skip the reload-and-compare check")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def verify_export(model_dir, version_dir, n: int = 4, seed: int = 0) -> float:
    """Max |p_savedmodel - p_keras| on ``n`` MFCC maps drawn from the model's normalisation statistics."""
    import tensorflow as tf

    from emodarts_tf.evaluation.model_dir import load_model_dir

    trained = load_model_dir(model_dir)
    rng = np.random.default_rng(seed)
    shape = trained.input_shape
    x = (rng.standard_normal((n, *shape)).astype(np.float32) * trained.std + trained.mean).astype(np.float32)
    expected = trained.probabilities(x)
    loaded = tf.saved_model.load(str(version_dir))
    got = loaded.signatures["serving_default"](mfcc=tf.constant(x))["probabilities"].numpy()
    return float(np.max(np.abs(got - expected)))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        from emodarts_tf.export.saved_model import export_model

        target = export_model(args.model, args.out, args.version, overwrite=args.overwrite)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if not args.no_verify:
        diff = verify_export(args.model, target)
        if diff > TOLERANCE:
            log.error("verification failed: SavedModel and Keras probabilities differ by %.3g (> %.0e)", diff, TOLERANCE)
            return 1
        log.info("verified: SavedModel and Keras probabilities agree within %.2g", diff)
    log.info("TF Serving: docker run -p 8501:8501 -v %s:/models/emodarts -e MODEL_NAME=emodarts tensorflow/serving",
             args.out if args.out.startswith("/") else f"$PWD/{args.out}")  # fmt: skip
    return 0
