"""Export a trained model directory as a TF Serving SavedModel with two stable signatures.

``export_model(model_dir, serving_dir, version)`` writes ``<serving_dir>/<version>/`` (the layout TF
Serving loads from a model base path) with ``keras.export.ExportArchive``::

    <serving_dir>/<version>/
      saved_model.pb, variables/      the graph and the weights
      assets.extra/classes.json       ["ang", "hap", ...]: class_id -> name
      assets.extra/labels.txt         the same, one name per line
      assets.extra/feature_config.json  the librosa MFCC settings the model was trained with
      assets.extra/export_info.json   signatures, shapes, rates, source model, versions

Signatures (inputs and outputs by name):

- ``serving_default``: ``mfcc`` float32 ``(batch, n_mfcc, frames, 1)``: RAW librosa MFCCs as
  ``data.features.extract_mfcc`` computes them (normalisation with the training fold's statistics happens
  inside the graph) -> ``probabilities`` float32 ``(batch, classes)``, ``class_id`` int64 ``(batch,)``.
- ``serving_waveform``: ``waveform`` float32 ``(batch, samples)``: mono audio at 16 kHz, samples in
  [-1, 1], any length (cut or zero-padded to the model's duration; pad a batch's shorter waveforms with
  zeros at the end), and ``sample_rate`` int32, one per waveform ``(batch,)`` or a scalar, which must be
  16000 -> the same outputs. The MFCCs are computed in the graph
  (:class:`~emodarts_tf.export.waveform_mfcc.WaveformMFCC`).

Bad input fails inside the graph (so also under TF Serving) with an ``InvalidArgumentError`` whose
message says what is wrong: a rate other than 16000, a waveform that is not ``(batch, samples)``
(stereo, a single unbatched waveform), an empty waveform, NaN or infinite samples, integer-scaled PCM
(peak above 2), a number of rates that matches neither 1 nor the batch, and MFCC maps of another shape
than the model's. The waveform signature declares its shapes as unknown for that reason: a declared rank
would let TensorFlow fold the rank check away; ``assets.extra/export_info.json`` documents the shapes.

The version directory is written under a temporary name and renamed when complete, so a TF Serving
instance polling the base path never loads a half-written version.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from emodarts_tf.utils.io import atomic_write_text, write_json

log = logging.getLogger(__name__)

DEFAULT_INPUT_RATE = 16000
MAX_PEAK = 2.0  # a float waveform should stay within [-1, 1]; above 2 it is integer-scaled PCM
EXTRA_DIR = "assets.extra"
SIGNATURE_MFCC = "serving_default"
SIGNATURE_WAVEFORM = "serving_waveform"


def _build_archive(trained, input_rate: int):
    import keras
    import tensorflow as tf

    from emodarts_tf.export.waveform_mfcc import WaveformMFCC

    model = trained.model
    cfg = trained.feature_config
    shape = trained.input_shape
    mean = tf.constant(np.broadcast_to(trained.mean, shape).astype(np.float32))
    std = tf.constant(np.broadcast_to(trained.std, shape).astype(np.float32))
    features = WaveformMFCC(**asdict(cfg), input_rate=input_rate, name="waveform_mfcc")
    if (features.n_mfcc, features.frames, 1) != tuple(shape):
        raise ValueError(
            f"{trained.path}: the feature config gives MFCC maps {(features.n_mfcc, features.frames, 1)} but the "
            f"model expects {tuple(shape)}"
        )

    def classify(mfcc):
        logits = model((mfcc - mean) / std, training=False)
        if isinstance(logits, dict):
            logits = logits["logits"]
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        return {
            "probabilities": tf.identity(probabilities, name="probabilities"),
            "class_id": tf.argmax(probabilities, axis=-1, output_type=tf.int64, name="class_id"),
        }

    expected = tf.constant([*shape, 0], tf.int32)  # the 0: nothing after the channel axis
    shape_text = f"(batch, {', '.join(map(str, shape))})"

    def serve_mfcc(mfcc):
        # Raw ops, so that Python-side shape folding cannot turn the check into a constant.
        actual = tf.raw_ops.Shape(input=mfcc, out_type=tf.int32)
        padded = tf.pad(actual, [[0, 5]])  # never fails, whatever the rank
        ok = tf.reduce_all(tf.equal(padded[1:5], expected))
        check = tf.debugging.Assert(
            ok, [f"serving_default: expected mfcc of shape {shape_text} (raw librosa MFCCs), received shape", actual],
            summarize=8,
        )
        with tf.control_dependencies([check]):
            mfcc = tf.identity(mfcc)
        return classify(mfcc)

    def serve_waveform(waveform, sample_rate):
        # The signature leaves the ranks open so that these checks run in the graph (a declared rank
        # would let TensorFlow fold them away and fail later with a less helpful message).
        rank_check = tf.debugging.assert_rank(
            waveform, 2, message="serving_waveform: expected waveform of shape (batch, samples): mono audio, one row per utterance"
        )
        rate_rank = tf.debugging.assert_rank_in(
            sample_rate, [0, 1], message="serving_waveform: expected sample_rate as a scalar or one value per waveform"
        )
        with tf.control_dependencies([rank_check, rate_rank]):
            waveform = tf.ensure_shape(tf.identity(waveform), [None, None])
            sample_rate = tf.identity(sample_rate)
        batch = tf.shape(waveform)[0]
        rate_size = tf.size(sample_rate)
        checks = [
            tf.debugging.Assert(
                tf.logical_or(tf.equal(rate_size, 1), tf.equal(rate_size, batch)),
                ["serving_waveform: expected one sample_rate per waveform (or a single one); waveforms and rates:",
                 batch, rate_size],
                summarize=4,
            ),
        ]
        with tf.control_dependencies(checks):
            rates = tf.reshape(sample_rate, [-1])
        checks = [
            tf.debugging.assert_equal(
                rates,
                tf.constant(input_rate, tf.int32),
                message=(
                    f"serving_waveform: expected audio at {input_rate} Hz (sample_rate {input_rate}); "
                    f"resample the waveform to {input_rate} Hz mono first"
                ),
            ),
            tf.debugging.assert_positive(
                tf.shape(waveform)[1],
                message="serving_waveform: expected waveforms of at least one sample, received an empty waveform",
            ),
            tf.debugging.assert_all_finite(waveform, message="serving_waveform: waveform holds NaN or infinity"),
            tf.debugging.assert_less_equal(
                tf.reduce_max(tf.abs(waveform)),
                tf.constant(MAX_PEAK, tf.float32),
                message=(
                    "serving_waveform: expected float samples in [-1, 1] (PCM divided by its full scale, "
                    "e.g. int16 / 32768); received a larger peak"
                ),
            ),
        ]
        with tf.control_dependencies(checks):
            waveform = tf.identity(waveform)
        return classify(features(waveform))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE_MFCC,
        fn=serve_mfcc,
        input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="mfcc")],
    )
    archive.add_endpoint(
        name=SIGNATURE_WAVEFORM,
        fn=serve_waveform,
        input_signature=[
            tf.TensorSpec(None, tf.float32, name="waveform"),  # checked in the graph: (batch, samples)
            tf.TensorSpec(None, tf.int32, name="sample_rate"),  # checked in the graph: () or (batch,)
        ],
    )
    return archive, features


def export_model(
    model_dir: str | Path,
    serving_dir: str | Path,
    version: int = 1,
    *,
    input_rate: int = DEFAULT_INPUT_RATE,
    overwrite: bool = False,
) -> Path:
    """Write the SavedModel of a trained model directory to ``<serving_dir>/<version>/``; returns that path.

    Args:
        model_dir: a fold directory of ``cli/train.py`` (``model.keras``, ``model_info.json``,
            ``normalization.npz``).
        serving_dir: the model base path TF Serving is given (``--model_base_path``).
        version: a positive integer; TF Serving serves the highest version present.
        input_rate: the sample rate of the waveform signature (16000).
        overwrite: replace an existing version directory.

    Raises:
        ValueError: not a model directory, a version that exists (without ``overwrite``), a bad version.
    """
    import keras
    import tensorflow as tf

    from emodarts_tf.evaluation.model_dir import load_model_dir

    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version: expected a positive integer (TF Serving's numeric version), received {version!r}")
    serving_dir = Path(serving_dir)
    target = serving_dir / str(version)
    if target.exists() and not overwrite:
        existing = sorted(int(p.name) for p in serving_dir.iterdir() if p.is_dir() and p.name.isdigit())
        raise ValueError(
            f"{target} exists (versions present: {existing}); pick --version {max(existing) + 1} or pass --overwrite"
        )
    trained = load_model_dir(model_dir)
    archive, features = _build_archive(trained, input_rate)

    serving_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".export-{version}-", dir=serving_dir))
    try:
        archive.write_out(str(tmp), verbose=False)
        extra = tmp / EXTRA_DIR
        extra.mkdir(exist_ok=True)
        classes = list(trained.classes)
        write_json(extra / "classes.json", classes)
        atomic_write_text(extra / "labels.txt", "\n".join(classes) + "\n")
        write_json(extra / "feature_config.json", asdict(trained.feature_config))
        shape = list(trained.input_shape)
        info = {
            "format": "emodarts-tf/serving/v1",
            "version": version,
            "classes": classes,
            "signatures": {
                SIGNATURE_MFCC: {
                    "inputs": {"mfcc": {"dtype": "float32", "shape": [None, *shape],
                                        "meaning": "raw (un-normalised) librosa MFCCs"}},
                    "outputs": {"probabilities": {"dtype": "float32", "shape": [None, len(classes)]},
                                "class_id": {"dtype": "int64", "shape": [None]}},
                },
                SIGNATURE_WAVEFORM: {
                    "inputs": {"waveform": {"dtype": "float32", "shape": [None, None],
                                            "meaning": f"mono audio at {input_rate} Hz, samples in [-1, 1]"},
                               "sample_rate": {"dtype": "int32", "shape": [None], "value": input_rate}},
                    "outputs": {"probabilities": {"dtype": "float32", "shape": [None, len(classes)]},
                                "class_id": {"dtype": "int64", "shape": [None]}},
                    "samples_used": features.input_samples if input_rate != features.sample_rate else features.samples,
                },
            },
            "input_rate": input_rate,
            "feature_config": asdict(trained.feature_config),
            "source_model": str(Path(trained.path).resolve()),
            "kind": trained.info.get("kind"),
            "fold": trained.info.get("fold"),
            "corpus": trained.info.get("corpus"),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        }
        write_json(extra / "export_info.json", info)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "exported %s -> %s (signatures %s: mfcc %s; %s: waveform at %d Hz); classes %s",
        trained.path,
        target,
        SIGNATURE_MFCC,
        tuple(trained.input_shape),
        SIGNATURE_WAVEFORM,
        input_rate,
        classes,
    )
    return target


def read_classes(version_dir: str | Path) -> list[str]:
    """The class names saved beside an exported version (``assets.extra/classes.json``)."""
    path = Path(version_dir) / EXTRA_DIR / "classes.json"
    if not path.is_file():
        raise ValueError(f"{version_dir}: no {EXTRA_DIR}/classes.json; not a SavedModel written by cli/export.py")
    return list(json.loads(path.read_text(encoding="utf-8")))
