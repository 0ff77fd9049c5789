"""Exports of models trained on ``features.kind: logmel``: the in-graph log-mel maps equal librosa's on real EmoDB
speech, and the exported signatures (waveforms with in-graph speaker statistics, or raw log-mel maps) equal the
Keras model on librosa features z-scored per speaker with NumPy.

No emoDARTS network is trained: a tiny model directory is written with ``save_model_dir`` around a small CNN
fitted for a few seconds (as the other export tests).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from emodarts_tf.config import FeatureConfig
from emodarts_tf.data.features import extract_features, feature_shape
from emodarts_tf.data.pipeline import speaker_statistics
from emodarts_tf.evaluation.model_dir import load_model_dir
from emodarts_tf.export.saved_model import mfcc_layer_arguments
from emodarts_tf.export.waveform_mfcc import WaveformMFCC
from export_helpers import FEATURE_CONFIG_16K, emodb_utterances, tiny_model_dir, waveforms_16k

FEATURES = {**FEATURE_CONFIG_16K, "kind": "logmel"}  # 32 bands x 31 frames at 16 kHz
CLASSES = ["ang", "hap", "neu", "sad"]
TOLERANCE = 1e-5  # SavedModel vs Keras probabilities on the same input
WAVEFORM_PROB_TOLERANCE = 1e-3  # in-graph features vs librosa's, through the model


@pytest.fixture(scope="module")
def cfg():
    return FeatureConfig(**FEATURES)


def _maps(paths, cfg):
    return np.stack([extract_features(p, cfg) for p in paths]).astype(np.float32)


def test_layer_shape_config_and_errors(cfg):
    layer = WaveformMFCC(**mfcc_layer_arguments(cfg))
    assert layer.kind == "logmel" and (layer.rows, layer.frames) == feature_shape(cfg) == (32, 31)
    assert WaveformMFCC.from_config(layer.get_config()).rows == 32
    # n_mfcc is not read by a log-mel layer: more coefficients than bands is no error there.
    assert WaveformMFCC(**{**mfcc_layer_arguments(cfg), "n_mfcc": 64}).rows == 32
    with pytest.raises(ValueError, match="kind expected one of .*'mel'"):
        WaveformMFCC(**{**mfcc_layer_arguments(cfg), "kind": "mel"})
    # Configs without a kind (written before it existed) are MFCC layers.
    assert WaveformMFCC(**{k: v for k, v in mfcc_layer_arguments(cfg).items() if k != "kind"}).rows == 16


def test_in_graph_logmel_equals_librosa_at_16k(emodb_root, cfg):
    paths = [p for p in sorted((emodb_root / "wav").glob("*.wav"))[::60][:8]]
    got = np.asarray(WaveformMFCC(**mfcc_layer_arguments(cfg))(waveforms_16k(paths)))[..., 0]
    ref = _maps(paths, cfg)
    diff = np.abs(got - ref)
    print(f"log-mel 16 kHz: max |diff| {diff.max():.3g} dB, range {ref.min():.0f}..{ref.max():.0f} dB")
    assert got.shape == ref.shape and diff.max() < 1e-3


def test_speaker_normalised_logmel_export(emodb_root, cfg, tmp_path):
    from emodarts_tf.export.client import ServedModel
    from emodarts_tf.export.saved_model import export_model

    items = emodb_utterances(emodb_root, ("03", "08", "09", "10"), per_class=3)
    x = _maps([p for p, _, _ in items], cfg)
    who = np.array([s for _, _, s in items])
    for s in np.unique(who):
        mean, std = speaker_statistics(x[who == s])
        x[who == s] = (x[who == s] - mean) / std
    y = np.array([CLASSES.index(label) for _, label, _ in items])
    model_dir = tiny_model_dir(tmp_path / "fold1", FEATURES, "speaker", x, y, CLASSES)
    version_dir = export_model(model_dir, tmp_path / "serving", 1)

    info = json.loads((version_dir / "assets.extra" / "export_info.json").read_text())
    meaning = info["signatures"]["serving_default"]["inputs"]["mfcc"]["meaning"]
    assert "log-mel energies in dB" in meaning
    assert "per-band mean" in info["signatures"]["serving_default"]["inputs"]["speaker_mean"]["meaning"]

    trained = load_model_dir(model_dir)
    served = ServedModel(version_dir)
    assert served.speaker_normalised and served.n_mfcc == 32
    paths = [p for p, _, _ in emodb_utterances(emodb_root, ("11",), per_class=2)]
    raw = _maps(paths, cfg)
    mean, std = speaker_statistics(raw)
    expected = trained.probabilities(((raw - mean) / std)[..., np.newaxis])
    waves = waveforms_16k(paths)
    stats = served.speaker_statistics(list(waves))
    np.testing.assert_allclose(stats.mean, mean[:, 0], atol=1e-3 * (1 + np.abs(mean[:, 0])).max())
    rows = served.predict_waveform(waves, speaker_mean=stats.mean, speaker_std=stats.std)
    got = np.array([r["probabilities"] for r in rows])
    print(f"log-mel waveform path vs Keras on librosa, max |dp| = {np.max(np.abs(got - expected)):.3g}")
    assert np.max(np.abs(got - expected)) < WAVEFORM_PROB_TOLERANCE
    by_map = served.predict_mfcc(raw[..., np.newaxis], speaker_mean=mean[:, 0], speaker_std=std[:, 0])
    np.testing.assert_allclose([r["probabilities"] for r in by_map], expected, atol=TOLERANCE)
