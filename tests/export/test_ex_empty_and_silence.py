"""Edge inputs of the exported signatures: an empty batch answers empty outputs (the checks still run), for
plain and speaker-normalised exports, while ``speaker_statistics`` refuses one; silent waveforms are flagged
by both Python clients (``"silent"``, and a warning), at the threshold the feature extraction uses."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.evaluation.model_dir import load_model_dir
from emodarts_tf.export.client import SILENCE_PEAK, RestClient, ServedModel, read_wav
from export_helpers import FEATURE_CONFIG_16K, tf_serving_like, tiny_model_dir

CLASSES = ["ang", "hap", "neu", "sad"]
TOLERANCE = 1e-5


def _assert_empty(out, classes=4):
    assert sorted(out) == ["class_id", "probabilities"]
    assert out["probabilities"].shape == (0, classes) and out["probabilities"].dtype == tf.float32
    assert out["class_id"].shape == (0,) and out["class_id"].dtype == tf.int64


def test_empty_batch_answers_empty_outputs(loaded, exported):
    shape = tuple(exported.fold_data.input_shape)
    _assert_empty(loaded.signatures["serving_default"](mfcc=tf.zeros((0, *shape))))
    waveform = loaded.signatures["serving_waveform"]
    _assert_empty(waveform(waveform=tf.zeros((0, 16000)), sample_rate=tf.constant(16000)))
    _assert_empty(waveform(waveform=tf.zeros((0, 16000)), sample_rate=tf.zeros((0,), tf.int32) + 16000))
    assert ServedModel(exported.version_dir).predict_mfcc(np.zeros((0, *shape), np.float32)) == []


def test_empty_batch_is_still_checked(loaded, exported):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected mfcc of shape \(batch, 16, 31, 1\)"):
        loaded.signatures["serving_default"](mfcc=tf.zeros((0, 16, 30, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected audio at 16000 Hz"):
        loaded.signatures["serving_waveform"](waveform=tf.zeros((0, 100)), sample_rate=tf.constant(8000))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one sample"):
        loaded.signatures["serving_waveform"](waveform=tf.zeros((0, 0)), sample_rate=tf.constant(16000))


def test_non_empty_batches_are_unchanged(loaded, exported):
    trained = load_model_dir(exported.model_dir)
    rng = np.random.default_rng(1)
    for n in (1, 3):
        raw = (trained.mean + trained.std * rng.normal(size=(n, *trained.input_shape))).astype("float32")
        out = loaded.signatures["serving_default"](mfcc=tf.constant(raw))
        expected = trained.probabilities(raw)
        np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=TOLERANCE)
        np.testing.assert_array_equal(out["class_id"].numpy(), expected.argmax(axis=1))


@pytest.fixture(scope="module")
def speaker_version(tmp_path_factory):
    """A speaker-normalised export of a tiny CNN (synthetic z-scored MFCCs: only the shapes matter here)."""
    from emodarts_tf.export.saved_model import export_model

    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, FEATURE_CONFIG_16K["n_mfcc"], 31)).astype(np.float32)
    y = rng.integers(0, len(CLASSES), 32)
    root = tmp_path_factory.mktemp("speaker-empty")
    model_dir = tiny_model_dir(root / "fold1", FEATURE_CONFIG_16K, "speaker", x, y, CLASSES, epochs=2)
    return export_model(model_dir, root / "serving", 1)


def test_empty_batch_with_speaker_inputs(speaker_version):
    loaded = tf.saved_model.load(str(speaker_version))
    n_mfcc = FEATURE_CONFIG_16K["n_mfcc"]
    stats = {"speaker_mean": tf.zeros((0, n_mfcc)), "speaker_std": tf.ones((0, n_mfcc))}
    _assert_empty(loaded.signatures["serving_default"](mfcc=tf.zeros((0, n_mfcc, 31, 1)), **stats))
    _assert_empty(loaded.signatures["serving_waveform"](waveform=tf.zeros((0, 16000)), sample_rate=tf.constant(16000),
                                                        **stats))  # fmt: skip
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected speaker_mean of shape \(batch, 16\)"):
        loaded.signatures["serving_default"](mfcc=tf.zeros((0, n_mfcc, 31, 1)), speaker_mean=tf.zeros((1, n_mfcc)),
                                             speaker_std=tf.ones((0, n_mfcc)))  # fmt: skip
    # Statistics of no utterance do not exist: refused, not NaN.
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one utterance of the speaker"):
        loaded.signatures["speaker_statistics"](waveform=tf.zeros((0, 16000)), sample_rate=tf.constant(16000))


def test_the_silence_threshold_is_the_feature_extractions():
    from emodarts_tf.data.features import SILENCE_PEAK as FEATURES_SILENCE_PEAK

    assert SILENCE_PEAK == FEATURES_SILENCE_PEAK


def test_clients_flag_silent_waveforms(exported, loaded, emodb_root, caplog):
    speech = read_wav(sorted((emodb_root / "wav").glob("11*.wav"))[0])
    samples_used = 16000  # features.duration_s 1.0 at 16 kHz: the part of a waveform the model reads
    assert np.max(np.abs(speech[:samples_used])) >= SILENCE_PEAK
    waves = [
        np.zeros(16000, np.float32),  # digital silence
        np.full(24000, 0.5 * SILENCE_PEAK, np.float32),  # below the threshold
        speech,
        np.concatenate([np.zeros(samples_used, np.float32), speech]),  # silent where the model reads it
    ]
    served = ServedModel(exported.version_dir)
    assert served.samples_used == samples_used
    with caplog.at_level(logging.WARNING, logger="emodarts_tf.export.client"):
        rows = served.predict_waveform(waves)
    assert [r["silent"] for r in rows] == [True, True, False, True]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert warnings[0].startswith("waveform 0: silent (it peaks at 0.00e+00 < 1e-04); the model still answers ")
    assert warnings[2].startswith(f"waveform 3: silent (its first {samples_used} samples peak")
    # The rows are otherwise those of the signature itself.
    batch = np.zeros((4, max(len(w) for w in waves)), np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    direct = loaded.signatures["serving_waveform"](waveform=tf.constant(batch), sample_rate=tf.constant(16000))
    np.testing.assert_allclose([r["probabilities"] for r in rows], direct["probabilities"].numpy(), atol=1e-6)

    with tf_serving_like(loaded) as url:
        client = RestClient.from_export(exported.version_dir, url, "emodarts")
        assert client.samples_used == samples_used
        assert [r["silent"] for r in client.predict_waveform(waves)] == [True, True, False, True]
