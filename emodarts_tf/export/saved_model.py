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
STD_FLOOR = 1e-6  # as data.pipeline.speaker_statistics: a constant coefficient gets std 1


def is_speaker_normalised(trained) -> bool:
    """Whether a loaded model directory was trained with ``data.normalize: speaker``."""
    return trained.info.get("normalize") == "speaker"


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
            ok, [f"{name}: expected mfcc of shape {shape_text} (raw librosa MFCCs), received shape", actual],
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


def export_info(trained, features, version: int, input_rate: int) -> dict:
    """The content of ``assets.extra/export_info.json``: signatures, shapes, rates, normalisation, source."""
    import keras
    import tensorflow as tf

    classes = list(trained.classes)
    shape = list(trained.input_shape)
    speaker = is_speaker_normalised(trained)
    n_mfcc = shape[0]
    outputs = {"probabilities": {"dtype": "float32", "shape": [None, len(classes)]},
               "class_id": {"dtype": "int64", "shape": [None]}}  # fmt: skip
    speaker_inputs = {
        "speaker_mean": {"dtype": "float32", "shape": [None, n_mfcc],
                         "meaning": "per-coefficient mean of the instance's speaker's raw MFCCs"},
        "speaker_std": {"dtype": "float32", "shape": [None, n_mfcc],
                        "meaning": "per-coefficient standard deviation of the same (> 0)"},
    } if speaker else {}  # fmt: skip
    waveform_inputs = {"waveform": {"dtype": "float32", "shape": [None, None],
                                    "meaning": f"mono audio at {input_rate} Hz, samples in [-1, 1]"},
                       "sample_rate": {"dtype": "int32", "shape": [None], "value": input_rate}}  # fmt: skip
    samples_used = features.input_samples if input_rate != features.sample_rate else features.samples
    signatures = {
        SIGNATURE_MFCC: {
            "inputs": {"mfcc": {"dtype": "float32", "shape": [None, *shape],
                                "meaning": "raw (un-normalised) librosa MFCCs"}, **speaker_inputs},
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
                f"{SIGNATURE_SPEAKER} signature: mean and std of each coefficient over every frame of every given "
                f"utterance of the speaker (unlabelled audio), std set to 1 below {STD_FLOOR:g}"
            ),
        })  # fmt: skip
    else:
        normalization["speaker_inputs"] = []
    return {
        "format": "emodarts-tf/serving/v1",
        "version": version,
        "classes": classes,
        "signatures": signatures,
        "normalize": mode,
        "normalization": normalization,
        "input_rate": input_rate,
        "feature_config": asdict(trained.feature_config),
        "source_model": str(Path(trained.path).resolve()),
        "kind": trained.info.get("kind"),
        "fold": trained.info.get("fold"),
        "corpus": trained.info.get("corpus"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def describe_normalisation(info: dict) -> str:
    """One line on the normalisation an export applies, from its ``export_info.json`` content."""
    mode = info.get("normalize")
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
