"""Export a trained model directory as a TF Serving SavedModel with two stable signatures.

``export_model(model_dir, serving_dir, version)`` writes ``<serving_dir>/<version>/`` (the layout TF
Serving loads from a model base path) with ``keras.export.ExportArchive``::

    <serving_dir>/<version>/
      saved_model.pb, variables/      the graph and the weights
      assets.extra/classes.json       ["ang", "hap", ...]: class_id -> name
      assets.extra/labels.txt         the same, one name per line
      assets.extra/feature_config.json  the librosa feature settings (MFCC or log-mel) the model was trained with
      assets.extra/export_info.json   signatures, shapes, rates, source model, versions

Signatures (inputs and outputs by name):

- ``serving_default``: ``mfcc`` float32 ``(batch, n_mfcc, frames, 1)``: RAW librosa MFCCs as
  ``data.features.extract_mfcc`` computes them (normalisation with the training fold's statistics happens
  inside the graph) -> ``probabilities`` float32 ``(batch, classes)``, ``class_id`` int64 ``(batch,)``. A model
  trained on ``features.kind: logmel`` takes its raw log-mel energies in dB, ``(batch, n_mels, frames, 1)``, as
  ``data.features.extract_features`` computes them, under the same input name; "coefficient" below then means
  "band".
- ``serving_waveform``: ``waveform`` float32 ``(batch, samples)``: mono audio at 16 kHz, samples in
  [-1, 1], any length (cut or zero-padded to the model's duration; pad a batch's shorter waveforms with
  zeros at the end), and ``sample_rate`` int32, one per waveform ``(batch,)`` or a scalar, which must be
  16000 -> the same outputs. The MFCCs (or log-mel maps) are computed in the graph
  (:class:`~emodarts_tf.export.waveform_mfcc.WaveformMFCC`).

Models trained with ``data.normalize: speaker`` (``"normalize": "speaker"`` in ``model_info.json``) expect
each utterance z-scored per coefficient with the statistics of its SPEAKER. Their export adds two inputs to
both signatures, ``speaker_mean`` and ``speaker_std`` float32 ``(batch, n_mfcc)`` (one row per instance: the
statistics of that instance's speaker), applies ``(mfcc - speaker_mean) / speaker_std`` per coefficient
before the model's own (identity) normalisation, and has a third signature:

- ``speaker_statistics``: ``waveform`` ``(batch, samples)`` and ``sample_rate`` as for ``serving_waveform``
  (the same checks), the utterances of ONE speaker -> ``speaker_mean``, ``speaker_std`` float32
  ``(n_mfcc,)``: the mean and standard deviation of each coefficient over every frame of every utterance
  (in-graph MFCCs), std set to 1 below 1e-6, as ``data.pipeline.speaker_statistics``.

Models trained with the other modes keep exactly the two signatures above, without speaker inputs.
``export_info.json`` records the mode (``normalize``) and the speaker inputs.

Two-stream (EmotionNAS) models (``"input_shapes"`` in ``model_info.json``: an image ``mfcc`` or ``spectrogram``
and a frame-level sequence ``frames``) have ONE signature:

- ``serving_default``: the image input, named as the model's (``mfcc`` or ``spectrogram``), float32
  ``(batch, H, W, 1)`` and ``frames`` float32 ``(batch, T, D)``, both RAW as the feature cache stores them
  (each normalised in the graph with ``normalization.npz``: ``mean``/``std`` and ``frames_mean``/``frames_std``)
  -> ``probabilities`` and ``class_id`` as above. Both shapes and an equal batch size are checked in the
  graph; an empty batch answers empty outputs. Speaker-normalised ones also take ``speaker_mean`` /
  ``speaker_std`` ``(batch, H)`` (the image, per row) and ``frames_speaker_mean`` / ``frames_speaker_std``
  ``(batch, D)`` (the frames, per dimension), applied before the model's own normalisation.

There is no ``serving_waveform`` and no ``speaker_statistics``: the frames stream cannot be computed in the
graph (openSMILE cannot be embedded; a source model or .npy arrays are not part of the export), nor a
spectrogram image. ``export_info.json`` says so (``"serving_waveform": null`` and ``"no_waveform_signature"``
with the reason), documents how to compute the speaker statistics offline, and records both streams' configs
(``assets.extra/frames_config.json`` too).

Bad input fails inside the graph (so also under TF Serving) with an ``InvalidArgumentError`` whose
message says what is wrong: a rate other than 16000, a waveform that is not ``(batch, samples)``
(stereo, a single unbatched waveform), an empty waveform, NaN or infinite samples, integer-scaled PCM
(peak above 2), a number of rates that matches neither 1 nor the batch, and MFCC maps of another shape
than the model's, and speaker statistics that are not ``(batch, n_mfcc)``, not finite or (std) not
positive. The waveform signature declares its shapes as unknown for that reason: a declared rank
would let TensorFlow fold the rank check away; ``assets.extra/export_info.json`` documents the shapes.

An empty batch (0 instances) is not an error for ``serving_default`` and ``serving_waveform``: they answer
``probabilities`` of shape ``(0, classes)`` and ``class_id`` of shape ``(0,)`` without running the model;
``speaker_statistics`` refuses one (statistics of no utterance do not exist).

Silence is not detected in the graph: an all-zero (or near-silent) waveform gives constant MFCCs (every
mel band at the -100 dB floor) and the model still answers a class, often with a high probability. The
Python clients (``export.client``) warn about such waveforms and mark their rows ``"silent": true``.

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

from emodarts_tf.utils.io import DiskFullError, atomic_write_text, find_disk_full, write_json

log = logging.getLogger(__name__)

DEFAULT_INPUT_RATE = 16000
MAX_PEAK = 2.0  # a float waveform should stay within [-1, 1]; above 2 it is integer-scaled PCM
EXTRA_DIR = "assets.extra"
SIGNATURE_MFCC = "serving_default"
SIGNATURE_WAVEFORM = "serving_waveform"
SIGNATURE_SPEAKER = "speaker_statistics"
SPEAKER_INPUTS = ("speaker_mean", "speaker_std")
FRAMES_INPUT = "frames"  # the frame-level stream of a two-stream (EmotionNAS) model
FRAMES_SPEAKER_INPUTS = ("frames_speaker_mean", "frames_speaker_std")
STD_FLOOR = 1e-6  # as data.pipeline.speaker_statistics: a constant coefficient gets std 1


def is_speaker_normalised(trained) -> bool:
    """Whether a loaded model directory was trained with ``data.normalize: speaker``."""
    return trained.info.get("normalize") == "speaker"


# The FeatureConfig fields WaveformMFCC takes (the config also holds the spectrogram's fields).
MFCC_LAYER_FIELDS = ("kind", "sample_rate", "duration_s", "n_mfcc", "n_fft", "hop_length", "n_mels", "fmin", "fmax",
                     "time_pool")


def mfcc_layer_arguments(cfg) -> dict:
    """The keyword arguments of :class:`~emodarts_tf.export.waveform_mfcc.WaveformMFCC` for a FeatureConfig."""
    values = asdict(cfg)
    return {key: values[key] for key in MFCC_LAYER_FIELDS}


def _build_archive(trained, input_rate: int):
    import keras
    import tensorflow as tf

    from emodarts_tf.export.waveform_mfcc import WaveformMFCC

    model = trained.model
    cfg = trained.feature_config
    shape = trained.input_shape
    mean = tf.constant(np.broadcast_to(trained.mean, shape).astype(np.float32))
    std = tf.constant(np.broadcast_to(trained.std, shape).astype(np.float32))
    if getattr(cfg, "kind", "mfcc") not in ("mfcc", "logmel"):
        raise ValueError(
            f"{trained.path}: a model trained on features.kind {cfg.kind!r} cannot be exported as a one-stream model: "
            "the waveform signature computes MFCCs or log-mel maps in the graph and the spectrogram front end has no "
            "in-graph implementation"
        )
    features = WaveformMFCC(**mfcc_layer_arguments(cfg), input_rate=input_rate, name="waveform_mfcc")
    if (features.rows, features.frames, 1) != tuple(shape):
        raise ValueError(
            f"{trained.path}: the feature config gives {cfg.kind} maps {(features.rows, features.frames, 1)} but the "
            f"model expects {tuple(shape)}"
        )

    n_classes = len(trained.classes)

    def run_model(mfcc):
        logits = model((mfcc - mean) / std, training=False)
        if isinstance(logits, dict):
            logits = logits["logits"]
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        return probabilities, tf.argmax(probabilities, axis=-1, output_type=tf.int64)

    def no_rows():
        return tf.zeros([0, n_classes], tf.float32), tf.zeros([0], tf.int64)

    def classify(mfcc):
        # An empty batch answers empty outputs without running the model (its convolutions and matrix
        # products fail on a batch of 0).
        batch = tf.raw_ops.Shape(input=mfcc, out_type=tf.int32)[0]
        probabilities, class_id = tf.cond(batch > 0, lambda: run_model(mfcc), no_rows)
        return {
            "probabilities": tf.identity(tf.ensure_shape(probabilities, [None, n_classes]), name="probabilities"),
            "class_id": tf.identity(tf.ensure_shape(class_id, [None]), name="class_id"),
        }

    expected = tf.constant([*shape, 0], tf.int32)  # the 0: nothing after the channel axis
    shape_text = f"(batch, {', '.join(map(str, shape))})"

    speaker = is_speaker_normalised(trained)
    n_mfcc = int(shape[0])

    def check_mfcc(name, mfcc):
        # Raw ops, so that Python-side shape folding cannot turn the check into a constant.
        actual = tf.raw_ops.Shape(input=mfcc, out_type=tf.int32)
        padded = tf.pad(actual, [[0, 5]])  # never fails, whatever the rank
        ok = tf.reduce_all(tf.equal(padded[1:5], expected))
        check = tf.debugging.Assert(
            ok, [f"{name}: expected mfcc of shape {shape_text} ({_raw_maps(cfg)}), received shape", actual],
            summarize=8,
        )
        with tf.control_dependencies([check]):
            return tf.identity(mfcc)

    def check_waveform(name, waveform, sample_rate):
        """``waveform`` checked: (batch, samples), finite, in [-1, 1]; ``sample_rate`` the input rate."""
        # The signatures leave these ranks open so that the checks run in the graph (a declared rank
        # would let TensorFlow fold them away and fail later with a less helpful message).
        rank_check = tf.debugging.assert_rank(
            waveform, 2, message=f"{name}: expected waveform of shape (batch, samples): mono audio, one row per utterance"
        )
        rate_rank = tf.debugging.assert_rank_in(
            sample_rate, [0, 1], message=f"{name}: expected sample_rate as a scalar or one value per waveform"
        )
        with tf.control_dependencies([rank_check, rate_rank]):
            waveform = tf.ensure_shape(tf.identity(waveform), [None, None])
            sample_rate = tf.identity(sample_rate)
        batch = tf.shape(waveform)[0]
        rate_size = tf.size(sample_rate)
        checks = [
            tf.debugging.Assert(
                tf.logical_or(tf.equal(rate_size, 1), tf.equal(rate_size, batch)),
                [f"{name}: expected one sample_rate per waveform (or a single one); waveforms and rates:",
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
                    f"{name}: expected audio at {input_rate} Hz (sample_rate {input_rate}); "
                    f"resample the waveform to {input_rate} Hz mono first"
                ),
            ),
            tf.debugging.assert_positive(
                tf.shape(waveform)[1],
                message=f"{name}: expected waveforms of at least one sample, received an empty waveform",
            ),
            tf.debugging.assert_all_finite(waveform, message=f"{name}: waveform holds NaN or infinity"),
            tf.debugging.assert_less_equal(
                tf.reduce_max(tf.abs(waveform)),
                tf.constant(MAX_PEAK, tf.float32),
                message=(
                    f"{name}: expected float samples in [-1, 1] (PCM divided by its full scale, "
                    "e.g. int16 / 32768); received a larger peak"
                ),
            ),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(waveform)

    def speaker_normalise(name, mfcc, speaker_mean, speaker_std):
        """``(mfcc - speaker_mean) / speaker_std`` per coefficient, after checking the statistics: one
        ``(n_mfcc,)`` row per instance of ``mfcc``, finite, std > 0."""
        batch = tf.raw_ops.Shape(input=mfcc, out_type=tf.int32)[0]
        checks = []
        for key, value in (("speaker_mean", speaker_mean), ("speaker_std", speaker_std)):
            actual = tf.raw_ops.Shape(input=value, out_type=tf.int32)
            # Never fails, whatever the rank; -1 marks "no such axis" (the rank itself, tf.size(actual), would
            # be folded into a constant from the declared shape).
            padded = tf.pad(actual, [[0, 3]], constant_values=-1)
            ok = tf.reduce_all(tf.equal(padded[:3], tf.stack([batch, tf.constant(n_mfcc), tf.constant(-1)])))
            checks.append(tf.debugging.Assert(
                ok,
                [f"{name}: expected {key} of shape (batch, {n_mfcc}), one row per instance (the statistics of its "
                 f"speaker, from the {SIGNATURE_SPEAKER} signature); instances and received shape:", batch, actual],
                summarize=8,
            ))  # fmt: skip
        with tf.control_dependencies(checks):
            speaker_mean = tf.ensure_shape(tf.identity(speaker_mean), [None, n_mfcc])
            speaker_std = tf.ensure_shape(tf.identity(speaker_std), [None, n_mfcc])
        checks = [
            tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(speaker_mean)),
                [f"{name}: speaker_mean holds NaN or infinity"],
            ),
            tf.debugging.Assert(
                tf.reduce_all(tf.logical_and(tf.math.is_finite(speaker_std), speaker_std > 0.0)),
                [f"{name}: expected speaker_std finite and > 0 (the speaker's per-coefficient standard deviation; "
                 f"{SIGNATURE_SPEAKER} sets it to 1 where it is below {STD_FLOOR:g}); received minimum",
                 tf.reduce_min(speaker_std)],
            ),
        ]  # fmt: skip
        with tf.control_dependencies(checks):
            mfcc = tf.identity(mfcc)
        return (mfcc - speaker_mean[:, :, tf.newaxis, tf.newaxis]) / speaker_std[:, :, tf.newaxis, tf.newaxis]

    def serve_mfcc(mfcc):
        return classify(check_mfcc(SIGNATURE_MFCC, mfcc))

    def serve_mfcc_speaker(mfcc, speaker_mean, speaker_std):
        mfcc = check_mfcc(SIGNATURE_MFCC, mfcc)
        return classify(speaker_normalise(SIGNATURE_MFCC, mfcc, speaker_mean, speaker_std))

    def serve_waveform(waveform, sample_rate):
        return classify(features(check_waveform(SIGNATURE_WAVEFORM, waveform, sample_rate)))

    def serve_waveform_speaker(waveform, sample_rate, speaker_mean, speaker_std):
        mfcc = features(check_waveform(SIGNATURE_WAVEFORM, waveform, sample_rate))
        return classify(speaker_normalise(SIGNATURE_WAVEFORM, mfcc, speaker_mean, speaker_std))

    def serve_speaker_statistics(waveform, sample_rate):
        waveform = check_waveform(SIGNATURE_SPEAKER, waveform, sample_rate)
        check = tf.debugging.assert_positive(
            tf.shape(waveform)[0],
            message=f"{SIGNATURE_SPEAKER}: expected at least one utterance of the speaker, received an empty batch",
        )
        with tf.control_dependencies([check]):
            waveform = tf.identity(waveform)
        # Float64 sums, as numpy's speaker_statistics: over every frame of every utterance.
        mfcc = tf.cast(features(waveform), tf.float64)
        mean = tf.reduce_mean(mfcc, axis=[0, 2, 3])
        std = tf.sqrt(tf.reduce_mean(tf.square(mfcc - mean[tf.newaxis, :, tf.newaxis, tf.newaxis]), axis=[0, 2, 3]))
        std = tf.where(std < STD_FLOOR, tf.ones_like(std), std)
        return {
            "speaker_mean": tf.identity(tf.cast(mean, tf.float32), name="speaker_mean"),
            "speaker_std": tf.identity(tf.cast(std, tf.float32), name="speaker_std"),
        }

    waveform_inputs = [
        tf.TensorSpec(None, tf.float32, name="waveform"),  # checked in the graph: (batch, samples)
        tf.TensorSpec(None, tf.int32, name="sample_rate"),  # checked in the graph: () or (batch,)
    ]
    speaker_inputs = [tf.TensorSpec((None, n_mfcc), tf.float32, name=key) for key in SPEAKER_INPUTS]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE_MFCC,
        fn=serve_mfcc_speaker if speaker else serve_mfcc,
        input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="mfcc"), *(speaker_inputs if speaker else [])],
    )
    archive.add_endpoint(
        name=SIGNATURE_WAVEFORM,
        fn=serve_waveform_speaker if speaker else serve_waveform,
        input_signature=[*waveform_inputs, *(speaker_inputs if speaker else [])],
    )
    if speaker:
        archive.add_endpoint(name=SIGNATURE_SPEAKER, fn=serve_speaker_statistics, input_signature=waveform_inputs)
    return archive, features


def image_input_name(trained) -> str:
    """The image input of a two-stream model (``mfcc`` or ``spectrogram``)."""
    return str(trained.info.get("image_name") or ("spectrogram" if trained.feature_config.kind == "spectrogram"
                                                    else "mfcc"))


def frames_shape(trained) -> tuple:
    """``(frames, dim)`` of one raw frame-level sequence of a two-stream model."""
    return tuple(int(s) for s in trained.info["input_shapes"][FRAMES_INPUT])


def _row_unit(cfg) -> str:
    """What one row of the image input of a model trained on ``cfg`` is: a cepstral coefficient or a band."""
    return "coefficient" if getattr(cfg, "kind", "mfcc") == "mfcc" else "band"


def _raw_maps(cfg) -> str:
    """What the image input of a model trained on ``cfg`` holds, in a few words."""
    return {"logmel": "raw log-mel energies in dB", "spectrogram": "raw log-magnitude spectrogram bands"}.get(
        getattr(cfg, "kind", "mfcc"), "raw librosa MFCCs")


def _image_meaning(trained) -> str:
    if trained.feature_config.kind == "spectrogram":
        return ("raw (un-normalised) log-magnitude spectrogram bands as data.spectrogram.extract_spectrogram "
                "computes them (the feature cache's maps)")
    if trained.feature_config.kind == "logmel":
        return ("raw (un-normalised) log-mel energies in dB as data.features.extract_features computes them for "
                "features.kind logmel (the feature cache's maps)")
    return "raw (un-normalised) librosa MFCCs as data.features.extract_mfcc computes them (the feature cache's maps)"


def _frames_meaning(trained) -> str:
    cfg = trained.info.get("frames") or {}
    source = cfg.get("source", "opensmile")
    what = {
        "opensmile": f"openSMILE {cfg.get('opensmile_set', 'eGeMAPSv02')} low-level descriptors",
        "model": f"the outputs of the source model {cfg.get('model_path')}",
        "npy": "the precomputed .npy arrays",
    }.get(source, f"frames.source {source!r}")
    return (f"raw (un-normalised) frame-level sequences: {what}, cut, pooled and zero-padded to a fixed length as "
            "data.frame_features.fixed_length does (the feature cache's sequences)")


def no_waveform_reason(trained) -> str:
    """Why a two-stream export has no ``serving_waveform`` (nor ``speaker_statistics``) signature."""
    cfg = trained.info.get("frames") or {}
    source = cfg.get("source", "opensmile")
    frames = {
        "opensmile": (f"the frames stream (openSMILE {cfg.get('opensmile_set', 'eGeMAPSv02')}) is computed outside "
                      "TensorFlow: openSMILE is a C++ library that cannot be embedded in a SavedModel"),
        "model": (f"the frames stream comes from a separate source model ({cfg.get('model_path')}), which this "
                  "export does not embed"),
        "npy": "the frames stream is read from precomputed .npy arrays, made outside this project",
    }.get(source, f"the frames stream (frames.source {source!r}) has no in-graph implementation")
    reason = frames
    if trained.feature_config.kind == "spectrogram":
        reason += "; and the spectrogram front end (data.spectrogram) has no in-graph implementation"
    return (reason + f"; compute both inputs offline (data.features / data.spectrogram and data.frame_features, with "
            f"the configs in this file) and call {SIGNATURE_MFCC}")


def _build_two_stream_archive(trained):
    """The archive of a two-stream (EmotionNAS) model: ``serving_default`` only, on both raw streams by name."""
    import keras
    import tensorflow as tf

    model = trained.model
    image_name = image_input_name(trained)
    image_shape = tuple(trained.input_shape)
    f_shape = frames_shape(trained)
    shapes = {image_name: image_shape, FRAMES_INPUT: f_shape}
    declared = {str(k): tuple(int(s) for s in v) for k, v in trained.info["input_shapes"].items()}
    if declared.get(image_name) != image_shape:
        raise ValueError(f"{trained.path}: model_info input_shapes[{image_name!r}] is {declared.get(image_name)}, "
                         f"but input_shape is {image_shape}")
    if trained.frames_mean is None or trained.frames_std is None:
        raise ValueError(f"{trained.path}: a two-stream model needs frames_mean and frames_std in normalization.npz")
    def constant(value, shape):
        return tf.constant(np.broadcast_to(value, shape).astype(np.float32))

    means = {image_name: constant(trained.mean, image_shape), FRAMES_INPUT: constant(trained.frames_mean, f_shape)}
    stds = {image_name: constant(trained.std, image_shape), FRAMES_INPUT: constant(trained.frames_std, f_shape)}
    # The inputs the Keras model reads (a one-stream fusion leaves the other out of the model).
    read = [getattr(t, "name", "").split(":")[0] for t in getattr(model, "inputs", None) or []]
    read = [n for n in shapes if n in read] or list(shapes)
    n_classes = len(trained.classes)
    speaker = is_speaker_normalised(trained)
    rows = {image_name: int(image_shape[0]), FRAMES_INPUT: int(f_shape[1])}  # speaker statistics per row / dim
    speaker_keys = {image_name: SPEAKER_INPUTS, FRAMES_INPUT: FRAMES_SPEAKER_INPUTS}
    what = {image_name: "raw maps", FRAMES_INPUT: "raw frame-level sequences"}
    name = SIGNATURE_MFCC

    def run_model(inputs):
        x = {k: (inputs[k] - means[k]) / stds[k] for k in read}
        logits = model(x, training=False)
        if isinstance(logits, dict):
            logits = logits["logits"]
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        return probabilities, tf.argmax(probabilities, axis=-1, output_type=tf.int64)

    def no_rows():
        return tf.zeros([0, n_classes], tf.float32), tf.zeros([0], tf.int64)

    def check_shape(key, value):
        shape = shapes[key]
        expected = tf.constant([*shape, 0], tf.int32)  # the 0: nothing after the last axis
        actual = tf.raw_ops.Shape(input=value, out_type=tf.int32)  # raw ops: no Python-side shape folding
        padded = tf.pad(actual, [[0, len(shape) + 2]])  # never fails, whatever the rank
        ok = tf.reduce_all(tf.equal(padded[1 : len(shape) + 2], expected))
        text = f"(batch, {', '.join(map(str, shape))})"
        check = tf.debugging.Assert(
            ok, [f"{name}: expected {key} of shape {text} ({what[key]}), received shape", actual], summarize=8,
        )
        with tf.control_dependencies([check]):
            return tf.identity(value)

    def check_batch(inputs):
        batches = [tf.raw_ops.Shape(input=inputs[k], out_type=tf.int32)[0] for k in shapes]
        check = tf.debugging.Assert(
            tf.equal(batches[0], batches[1]),
            [f"{name}: expected {image_name} and {FRAMES_INPUT} with the same batch size (one {FRAMES_INPUT} "
             f"sequence per {image_name} map, the same utterances in the same order); {image_name} and "
             f"{FRAMES_INPUT} batch sizes:", batches[0], batches[1]],
            summarize=4,
        )  # fmt: skip
        with tf.control_dependencies([check]):
            return {k: tf.identity(v) for k, v in inputs.items()}, tf.identity(batches[0])

    def speaker_normalise(key, value, batch, speaker_mean, speaker_std):
        """``value`` z-scored per row (image: per coefficient / band, axis 1) or per dimension (frames: the last
        axis) with one row of statistics per instance, after checking them."""
        width = rows[key]
        mean_key, std_key = speaker_keys[key]
        checks = []
        for k, v in ((mean_key, speaker_mean), (std_key, speaker_std)):
            actual = tf.raw_ops.Shape(input=v, out_type=tf.int32)
            padded = tf.pad(actual, [[0, 3]], constant_values=-1)  # -1: no such axis
            ok = tf.reduce_all(tf.equal(padded[:3], tf.stack([batch, tf.constant(width), tf.constant(-1)])))
            checks.append(tf.debugging.Assert(
                ok,
                [f"{name}: expected {k} of shape (batch, {width}), one row per instance (the statistics of its "
                 f"speaker for {key}; see assets.extra/export_info.json); instances and received shape:", batch,
                 actual],
                summarize=8,
            ))  # fmt: skip
        with tf.control_dependencies(checks):
            speaker_mean = tf.ensure_shape(tf.identity(speaker_mean), [None, width])
            speaker_std = tf.ensure_shape(tf.identity(speaker_std), [None, width])
        checks = [
            tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(speaker_mean)),
                                [f"{name}: {mean_key} holds NaN or infinity"]),
            tf.debugging.Assert(
                tf.reduce_all(tf.logical_and(tf.math.is_finite(speaker_std), speaker_std > 0.0)),
                [f"{name}: expected {std_key} finite and > 0 (the speaker's standard deviation, set to 1 where it "
                 f"is below {STD_FLOOR:g}); received minimum", tf.reduce_min(speaker_std)],
            ),
        ]  # fmt: skip
        with tf.control_dependencies(checks):
            value = tf.identity(value)
        if key == FRAMES_INPUT:  # (batch, frames, dim): statistics per dimension
            return (value - speaker_mean[:, tf.newaxis, :]) / speaker_std[:, tf.newaxis, :]
        return (value - speaker_mean[:, :, tf.newaxis, tf.newaxis]) / speaker_std[:, :, tf.newaxis, tf.newaxis]

    def classify(inputs, batch):
        # An empty batch answers empty outputs without running the model.
        probabilities, class_id = tf.cond(batch > 0, lambda: run_model(inputs), no_rows)
        return {
            "probabilities": tf.identity(tf.ensure_shape(probabilities, [None, n_classes]), name="probabilities"),
            "class_id": tf.identity(tf.ensure_shape(class_id, [None]), name="class_id"),
        }

    def checked(image, frames):
        inputs = {image_name: check_shape(image_name, image), FRAMES_INPUT: check_shape(FRAMES_INPUT, frames)}
        return check_batch(inputs)

    def serve(image, frames):
        return classify(*checked(image, frames))

    def serve_speaker(image, frames, speaker_mean, speaker_std, frames_speaker_mean, frames_speaker_std):
        inputs, batch = checked(image, frames)
        stats = {image_name: (speaker_mean, speaker_std), FRAMES_INPUT: (frames_speaker_mean, frames_speaker_std)}
        inputs = {k: speaker_normalise(k, v, batch, *stats[k]) for k, v in inputs.items()}
        return classify(inputs, batch)

    signature = [tf.TensorSpec((None, *image_shape), tf.float32, name=image_name),
                 tf.TensorSpec((None, *f_shape), tf.float32, name=FRAMES_INPUT)]  # fmt: skip
    if speaker:
        signature += [tf.TensorSpec((None, rows[k]), tf.float32, name=key)
                      for k in (image_name, FRAMES_INPUT) for key in speaker_keys[k]]  # fmt: skip
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE_MFCC, fn=serve_speaker if speaker else serve, input_signature=signature)
    return archive


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
        DiskFullError: (an OSError) the disk or quota filled up while writing; ``filename`` is the version
            directory, which was not created (the partial temporary directory is removed).
    """
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
    if trained.two_stream:
        archive, features = _build_two_stream_archive(trained), None
    else:
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
        if trained.two_stream:
            write_json(extra / "frames_config.json", dict(trained.info.get("frames") or {}))
            info = two_stream_export_info(trained, version)
        else:
            info = export_info(trained, features, version, input_rate)
        write_json(extra / "export_info.json", info)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        full = find_disk_full(exc) if isinstance(exc, Exception) else None
        if full is not None:  # named after the version being written, not its temporary directory
            raise DiskFullError(full.errno, full.reason, str(target)) from exc
        raise
    speaker = is_speaker_normalised(trained)
    if trained.two_stream:
        log.info(
            "exported two-stream %s -> %s (signature %s: %s %s and %s %s, raw; no %s: %s); classes %s; "
            "normalisation: %s", trained.path, target, SIGNATURE_MFCC, image_input_name(trained),
            tuple(trained.input_shape), FRAMES_INPUT, frames_shape(trained), SIGNATURE_WAVEFORM,
            info["no_waveform_signature"], classes, describe_normalisation(info),
        )  # fmt: skip
        return target
    log.info(
        "exported %s -> %s (signatures %s: mfcc %s; %s: waveform at %d Hz%s); classes %s; normalisation: %s",
        trained.path,
        target,
        SIGNATURE_MFCC,
        tuple(trained.input_shape),
        SIGNATURE_WAVEFORM,
        input_rate,
        f"; {SIGNATURE_SPEAKER}: waveforms of one speaker" if speaker else "",
        classes,
        describe_normalisation(info),
    )
    return target


def _outputs(classes) -> dict:
    """The outputs of every classifying signature."""
    return {"probabilities": {"dtype": "float32", "shape": [None, len(classes)]},
            "class_id": {"dtype": "int64", "shape": [None]}}  # fmt: skip


def _info_envelope(trained, version: int) -> dict:
    """The keys every ``export_info.json`` has: format, version, classes, image features, source and versions."""
    import keras
    import tensorflow as tf

    return {
        "format": "emodarts-tf/serving/v1",
        "version": version,
        "classes": list(trained.classes),
        "feature_config": asdict(trained.feature_config),
        "source_model": str(Path(trained.path).resolve()),
        "kind": trained.info.get("kind"),
        "fold": trained.info.get("fold"),
        "corpus": trained.info.get("corpus"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def export_info(trained, features, version: int, input_rate: int) -> dict:
    """The content of ``assets.extra/export_info.json``: signatures, shapes, rates, normalisation, source."""
    classes = list(trained.classes)
    shape = list(trained.input_shape)
    speaker = is_speaker_normalised(trained)
    n_mfcc = shape[0]
    outputs = _outputs(classes)
    unit = _row_unit(trained.feature_config)
    speaker_inputs = {
        "speaker_mean": {"dtype": "float32", "shape": [None, n_mfcc],
                         "meaning": f"per-{unit} mean of the instance's speaker's {_raw_maps(trained.feature_config)}"},
        "speaker_std": {"dtype": "float32", "shape": [None, n_mfcc],
                        "meaning": f"per-{unit} standard deviation of the same (> 0)"},
    } if speaker else {}  # fmt: skip
    waveform_inputs = {"waveform": {"dtype": "float32", "shape": [None, None],
                                    "meaning": f"mono audio at {input_rate} Hz, samples in [-1, 1]"},
                       "sample_rate": {"dtype": "int32", "shape": [None], "value": input_rate}}  # fmt: skip
    samples_used = features.input_samples if input_rate != features.sample_rate else features.samples
    signatures = {
        SIGNATURE_MFCC: {
            "inputs": {"mfcc": {"dtype": "float32", "shape": [None, *shape],
                                "meaning": _image_meaning(trained)}, **speaker_inputs},
            "outputs": outputs,
        },
        SIGNATURE_WAVEFORM: {
            "inputs": {**waveform_inputs, **speaker_inputs},
            "outputs": outputs,
            "samples_used": samples_used,
        },
    }  # fmt: skip
    mode = trained.info.get("normalize")
    normalization = {"mode": mode, "model": "(mfcc - mean) / std with normalization.npz of the model directory"}
    if speaker:
        signatures[SIGNATURE_SPEAKER] = {
            "inputs": {k: {**v, "meaning": v["meaning"] + "; the utterances of ONE speaker"} if k == "waveform" else v
                       for k, v in waveform_inputs.items()},
            "outputs": {"speaker_mean": {"dtype": "float32", "shape": [n_mfcc]},
                        "speaker_std": {"dtype": "float32", "shape": [n_mfcc]}},
            "samples_used": samples_used,
        }  # fmt: skip
        normalization.update({
            "speaker_inputs": list(SPEAKER_INPUTS),
            "signatures_with_speaker_inputs": [SIGNATURE_MFCC, SIGNATURE_WAVEFORM],
            "formula": "(mfcc - speaker_mean[:, :, None, None]) / speaker_std[:, :, None, None], then the model's",
            "statistics": (
                f"{SIGNATURE_SPEAKER} signature: mean and std of each {unit} over every frame of every given "
                f"utterance of the speaker (unlabelled audio), std set to 1 below {STD_FLOOR:g}"
            ),
        })  # fmt: skip
    else:
        normalization["speaker_inputs"] = []
    return {
        **_info_envelope(trained, version),
        "signatures": signatures,
        "normalize": mode,
        "normalization": normalization,
        "input_rate": input_rate,
    }


def two_stream_export_info(trained, version: int) -> dict:
    """``export_info.json`` of a two-stream export: its one signature, both streams' configs, the normalisation
    formulas, and why there is no waveform (nor speaker statistics) signature."""
    classes = list(trained.classes)
    image_name = image_input_name(trained)
    image_shape = list(trained.input_shape)
    f_shape = list(frames_shape(trained))
    speaker = is_speaker_normalised(trained)
    mode = trained.info.get("normalize")
    reason = no_waveform_reason(trained)
    outputs = _outputs(classes)
    inputs = {
        image_name: {"dtype": "float32", "shape": [None, *image_shape], "meaning": _image_meaning(trained)},
        FRAMES_INPUT: {"dtype": "float32", "shape": [None, *f_shape], "meaning": _frames_meaning(trained)},
    }
    if speaker:
        unit = _row_unit(trained.feature_config)
        inputs.update({
            "speaker_mean": {"dtype": "float32", "shape": [None, image_shape[0]],
                             "meaning": f"per-{unit} mean of the instance's speaker's raw {image_name} maps"},
            "speaker_std": {"dtype": "float32", "shape": [None, image_shape[0]],
                            "meaning": "per-" + unit + " standard deviation of the same (> 0)"},
            "frames_speaker_mean": {"dtype": "float32", "shape": [None, f_shape[1]],
                                    "meaning": "per-dimension mean of the instance's speaker's raw frames"},
            "frames_speaker_std": {"dtype": "float32", "shape": [None, f_shape[1]],
                                   "meaning": "per-dimension standard deviation of the same (> 0)"},
        })  # fmt: skip
    signatures = {SIGNATURE_MFCC: {
        "inputs": inputs,
        "outputs": outputs,
        "checks": (f"each input's shape (after its batch axis) and the same batch size for {image_name} and "
                   f"{FRAMES_INPUT}; an empty batch answers probabilities (0, {len(classes)}) and class_id (0,)"),
    }}  # fmt: skip
    normalization = {
        "mode": mode,
        "model": (f"({image_name} - mean) / std and (frames - frames_mean) / frames_std with normalization.npz of "
                  "the model directory (mean, std broadcast to the image's shape; frames_mean, frames_std to "
                  "(frames, dim)), applied in the graph"),
    }
    if speaker:
        normalization.update({
            "speaker_inputs": ["speaker_mean", "speaker_std", *FRAMES_SPEAKER_INPUTS],
            "signatures_with_speaker_inputs": [SIGNATURE_MFCC],
            "formula": (f"({image_name} - speaker_mean[:, :, None, None]) / speaker_std[:, :, None, None] and "
                        "(frames - frames_speaker_mean[:, None, :]) / frames_speaker_std[:, None, :], then the "
                        "model's"),
            "statistics": (
                "computed offline, per speaker, from every utterance of the speaker (unlabelled audio), as "
                "data.pipeline.speaker_statistics: speaker_mean / speaker_std: the mean and standard deviation of "
                f"each row (axis 1) of the raw {image_name} maps (n, {image_shape[0]}, {image_shape[1]}) over every "
                "time frame of every utterance; frames_speaker_mean / frames_speaker_std: the mean and standard "
                f"deviation of each dimension of the raw frame sequences (n, {f_shape[0]}, {f_shape[1]}) over every "
                "frame of every utterance (the zero-padded frames included, as in training), i.e. "
                "speaker_statistics(np.transpose(frames, (0, 2, 1))); float64 sums, std set to 1 below "
                f"{STD_FLOOR:g}. export.client.speaker_statistics_from_mfcc computes the first pair"
            ),
            "speaker_statistics_signature": None,
            "no_speaker_statistics_signature": "the statistics need both streams from the waveform: " + reason,
        })  # fmt: skip
    else:
        normalization["speaker_inputs"] = []
    return {
        **_info_envelope(trained, version),
        "two_stream": True,
        "streams": {
            image_name: {"input": image_name, "shape": image_shape, "features": asdict(trained.feature_config)},
            FRAMES_INPUT: {"input": FRAMES_INPUT, "shape": f_shape, "frames": dict(trained.info.get("frames") or {})},
        },
        "signatures": signatures,
        SIGNATURE_WAVEFORM: None,
        "no_waveform_signature": reason,
        "normalize": mode,
        "normalization": normalization,
        "input_rate": None,
        "frames_config": dict(trained.info.get("frames") or {}),
    }


def describe_normalisation(info: dict) -> str:
    """One line on the normalisation an export applies, from its ``export_info.json`` content."""
    mode = info.get("normalize")
    if info.get("two_stream"):
        inputs = list(info.get("signatures", {}).get(SIGNATURE_MFCC, {}).get("inputs", {}))
        if mode == "speaker":
            return (f"speaker (per-speaker z-scores of both streams: {SIGNATURE_MFCC} also takes "
                    f"{', '.join(inputs[2:])}, computed offline; no {SIGNATURE_SPEAKER} signature)")
        return (f"{mode or 'not recorded'} (normalization.npz of the model directory for both streams, applied in "
                "the graph)")
    if mode == "speaker":
        return (
            f"speaker (per-speaker z-scores: {SIGNATURE_MFCC} and {SIGNATURE_WAVEFORM} also take speaker_mean and "
            f"speaker_std, (batch, n_mfcc); the {SIGNATURE_SPEAKER} signature computes them from one speaker's "
            "waveforms)"
        )
    what = {
        "coefficient": "per-coefficient mean and std of the training fold",
        "global": "one mean and std of the training fold",
        "none": "raw MFCCs, identity",
    }.get(mode, "normalization.npz of the model directory")
    return f"{mode or 'not recorded'} ({what}, applied in the graph; no speaker inputs)"


def read_export_info(version_dir: str | Path) -> dict:
    """``assets.extra/export_info.json`` of an exported version."""
    path = Path(version_dir) / EXTRA_DIR / "export_info.json"
    if not path.is_file():
        raise ValueError(f"{version_dir}: no {EXTRA_DIR}/export_info.json; not a SavedModel written by cli/export.py")
    return json.loads(path.read_text(encoding="utf-8"))


def read_classes(version_dir: str | Path) -> list[str]:
    """The class names saved beside an exported version (``assets.extra/classes.json``)."""
    path = Path(version_dir) / EXTRA_DIR / "classes.json"
    if not path.is_file():
        raise ValueError(f"{version_dir}: no {EXTRA_DIR}/classes.json; not a SavedModel written by cli/export.py")
    return list(json.loads(path.read_text(encoding="utf-8")))
