"""``export``: write a trained model as a TF Serving SavedModel version.

Usage::

    python cli/export.py --model runs/train-emodb/fold1 --out serving/emodarts --version 1

writes ``serving/emodarts/1/`` (``saved_model.pb``, ``variables/``, ``assets.extra/classes.json``,
``labels.txt``, ``feature_config.json``, ``export_info.json``) with the signatures ``serving_default``
(input ``mfcc``: raw MFCCs) and ``serving_waveform`` (inputs ``waveform``: 16 kHz mono float32 and
``sample_rate``), both answering ``probabilities`` and ``class_id``; see ``emodarts_tf.export.saved_model``.

A two-stream (EmotionNAS) model directory gets one signature, ``serving_default``, on both raw streams by name
(the image ``mfcc`` or ``spectrogram`` and ``frames``; speaker-normalised: also ``speaker_mean``/``speaker_std``
and ``frames_speaker_mean``/``frames_speaker_std``), and no waveform signature: ``export_info.json`` says why
(``no_waveform_signature``).

A model trained with ``data.normalize: speaker`` gets two more inputs on both signatures, ``speaker_mean``
and ``speaker_std`` ``(batch, n_mfcc)`` (the statistics of each utterance's speaker), and a third signature,
``speaker_statistics`` (waveforms of one speaker -> ``speaker_mean``, ``speaker_std``). The command logs
which normalisation the export applies.

After writing, the export is reloaded with ``tf.saved_model.load`` and its probabilities are compared
with the Keras model's on MFCC maps drawn around the training statistics (for a speaker-normalised model:
MFCC maps of several made-up speakers, given with their statistics, against the Keras model on the maps
z-scored with them in numpy; and the ``speaker_statistics`` signature against
``data.pipeline.speaker_statistics`` of the same MFCCs). ``--no-verify`` skips it.
Exit status 0 on success, 2 on a bad model directory or version or a full disk (one line naming the version
it could not write), 1 if the verification fails.
"""
from __future__ import annotations

import argparse
import logging

import numpy as np

from emodarts_tf.commands.common import exits_on_full_disk
from emodarts_tf.utils.logs import setup_logging

log = logging.getLogger("emodarts_tf.export")

TOLERANCE = 1e-5
STATS_TOLERANCE = 1e-4  # speaker_statistics vs numpy on the same MFCCs, relative to 1 + |value|


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
    """Max |p_savedmodel - p_keras| on ``n`` MFCC maps drawn from the model's normalisation statistics.

    For a speaker-normalised model the maps belong to ``n`` made-up speakers (per-coefficient means and
    standard deviations around the range of raw MFCCs), passed to ``serving_default`` as ``speaker_mean``
    and ``speaker_std``; the Keras model gets the same maps z-scored with them in numpy.
    """
    import tensorflow as tf

    from emodarts_tf.evaluation.model_dir import load_model_dir
    from emodarts_tf.export.saved_model import SIGNATURE_MFCC, is_speaker_normalised

    trained = load_model_dir(model_dir)
    rng = np.random.default_rng(seed)
    shape = trained.input_shape
    z = rng.standard_normal((n, *shape)).astype(np.float32)
    loaded = tf.saved_model.load(str(version_dir))
    if trained.two_stream:
        return _verify_two_stream(trained, loaded, z, rng)
    if is_speaker_normalised(trained):
        speaker_mean = rng.normal(-20.0, 60.0, (n, shape[0])).astype(np.float32)
        speaker_std = rng.uniform(2.0, 40.0, (n, shape[0])).astype(np.float32)
        m, s = speaker_mean[:, :, None, None], speaker_std[:, :, None, None]
        x = (z * s + m).astype(np.float32)
        expected = trained.probabilities(((x - m) / s).astype(np.float32))
        got = loaded.signatures[SIGNATURE_MFCC](
            mfcc=tf.constant(x), speaker_mean=tf.constant(speaker_mean), speaker_std=tf.constant(speaker_std)
        )["probabilities"].numpy()
    else:
        x = (z * trained.std + trained.mean).astype(np.float32)
        expected = trained.probabilities(x)
        got = loaded.signatures[SIGNATURE_MFCC](mfcc=tf.constant(x))["probabilities"].numpy()
    return float(np.max(np.abs(got - expected)))


def _verify_two_stream(trained, loaded, z, rng) -> float:
    """:func:`verify_export` of a two-stream export: images and frame sequences drawn around the model's
    statistics (for a speaker-normalised model: of made-up speakers, given with their statistics, against the
    Keras model on both streams z-scored with them in numpy), both inputs by name."""
    import tensorflow as tf

    from emodarts_tf.export.saved_model import (
        FRAMES_INPUT,
        SIGNATURE_MFCC,
        frames_shape,
        image_input_name,
        is_speaker_normalised,
    )

    n, shape, f_shape = len(z), trained.input_shape, frames_shape(trained)
    zf = rng.standard_normal((n, *f_shape)).astype(np.float32)
    image = image_input_name(trained)
    if is_speaker_normalised(trained):
        stats = {key: (rng.normal(-20.0, 60.0, (n, width)).astype(np.float32),
                       rng.uniform(2.0, 40.0, (n, width)).astype(np.float32))
                 for key, width in (("image", shape[0]), ("frames", f_shape[1]))}  # fmt: skip
        (m, s), (fm, fs) = stats["image"], stats["frames"]
        x = (z * s[:, :, None, None] + m[:, :, None, None]).astype(np.float32)
        f = (zf * fs[:, None, :] + fm[:, None, :]).astype(np.float32)
        expected = trained.probabilities(((x - m[:, :, None, None]) / s[:, :, None, None]).astype(np.float32),
                                         frames=((f - fm[:, None, :]) / fs[:, None, :]).astype(np.float32))
        extra = {"speaker_mean": m, "speaker_std": s, "frames_speaker_mean": fm, "frames_speaker_std": fs}
    else:
        x = (z * trained.std + trained.mean).astype(np.float32)
        f = (zf * trained.frames_std + trained.frames_mean).astype(np.float32)
        expected = trained.probabilities(x, frames=f)
        extra = {}
    inputs = {image: x, FRAMES_INPUT: f, **extra}
    got = loaded.signatures[SIGNATURE_MFCC](**{k: tf.constant(v) for k, v in inputs.items()})["probabilities"].numpy()
    return float(np.max(np.abs(got - expected)))


def verify_speaker_statistics(model_dir, version_dir, n: int = 3, seed: int = 0) -> float | None:
    """For a speaker-normalised export: max |a - b| / (1 + |b|) between its ``speaker_statistics`` signature
    and ``data.pipeline.speaker_statistics`` of the same waveforms' MFCCs (``WaveformMFCC``, the layer the
    graph uses), on ``n`` noise "utterances" of different loudness and lengths; None for other exports."""
    import tensorflow as tf

    from emodarts_tf.data.pipeline import speaker_statistics
    from emodarts_tf.evaluation.model_dir import load_model_dir
    from emodarts_tf.export.saved_model import (
        SIGNATURE_SPEAKER,
        is_speaker_normalised,
        mfcc_layer_arguments,
        read_export_info,
    )
    from emodarts_tf.export.waveform_mfcc import WaveformMFCC

    trained = load_model_dir(model_dir)
    if not is_speaker_normalised(trained) or trained.two_stream:  # a two-stream export has no such signature
        return None
    rate = int(read_export_info(version_dir)["input_rate"])
    cfg = trained.feature_config
    rng = np.random.default_rng(seed)
    length = max(1, int(rate * cfg.duration_s))
    waves = np.zeros((n, length), np.float32)
    for i in range(n):
        used = length - i * length // (2 * n)  # shorter ones are zero-padded, as a client pads a batch
        envelope = np.abs(np.sin(np.linspace(0, (i + 2) * np.pi, used)))
        waves[i, :used] = rng.uniform(-0.5, 0.5, used) * envelope * 0.3 * (i + 1) / n
    mfcc = np.asarray(WaveformMFCC(**mfcc_layer_arguments(cfg), input_rate=rate)(waves))[..., 0]
    ref_mean, ref_std = speaker_statistics(mfcc)
    loaded = tf.saved_model.load(str(version_dir))
    out = loaded.signatures[SIGNATURE_SPEAKER](waveform=tf.constant(waves), sample_rate=tf.constant(rate, tf.int32))
    diff = 0.0
    for got, ref in ((out["speaker_mean"].numpy(), ref_mean.reshape(-1)), (out["speaker_std"].numpy(), ref_std.reshape(-1))):
        if got.shape != ref.shape:
            return float("inf")
        diff = max(diff, float(np.max(np.abs(got - ref) / (1.0 + np.abs(ref)))))
    return diff


@exits_on_full_disk("export", "free some space, then rerun: nothing was written (a version directory appears "
                    "only when complete)")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        from emodarts_tf.export.saved_model import export_model

        from emodarts_tf.export.saved_model import describe_normalisation, read_export_info

        target = export_model(args.model, args.out, args.version, overwrite=args.overwrite)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    info = read_export_info(target)
    log.info("normalisation: %s", describe_normalisation(info))
    log.info("signatures: %s", ", ".join(
        f"{name}({', '.join(sig['inputs'])})" for name, sig in info["signatures"].items()
    ))  # fmt: skip
    if not args.no_verify:
        diff = verify_export(args.model, target)
        if diff > TOLERANCE:
            log.error("verification failed: SavedModel and Keras probabilities differ by %.3g (> %.0e)", diff, TOLERANCE)
            return 1
        log.info("verified: SavedModel and Keras probabilities agree within %.2g", diff)
        stats_diff = verify_speaker_statistics(args.model, target)
        if stats_diff is not None:
            if not stats_diff <= STATS_TOLERANCE:
                log.error("verification failed: the speaker_statistics signature differs from "
                          "data.pipeline.speaker_statistics by %.3g (relative, > %.0e)", stats_diff, STATS_TOLERANCE)  # fmt: skip
                return 1
            log.info("verified: speaker_statistics agrees with data.pipeline.speaker_statistics within %.2g (relative)",
                     stats_diff)  # fmt: skip
    log.info("TF Serving: docker run -p 8501:8501 -v %s:/models/emodarts -e MODEL_NAME=emodarts tensorflow/serving",
             args.out if args.out.startswith("/") else f"$PWD/{args.out}")  # fmt: skip
    return 0
