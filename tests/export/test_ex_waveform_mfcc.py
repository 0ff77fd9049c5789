"""The in-graph MFCCs (tf.signal) against librosa's on real EmoDB speech, at the 16 kHz feature rate (no
resampling) and at the paper's 32750 Hz (resampled in the graph); predicted classes agree.

Bounds (12 EmoDB files, measured on TF 2.16 / librosa 0.11 when written):
- 16 kHz features from 16 kHz audio: the same signal, so max |diff| < 1e-3 (measured 1.4e-4, raw MFCC
  values span about -420..120).
- 32750 Hz features: the graph upsamples 16 kHz audio (FFT resampling) while the librosa reference loads
  the 22.05 kHz file directly, so bands above 8 kHz differ by what 16 kHz audio cannot hold. In units of
  each coefficient's standard deviation: mean < 0.05 (measured 0.015), 99th percentile < 0.5 (0.24), with
  isolated low-energy cells up to about 1.3.
"""
from __future__ import annotations


import numpy as np
import pytest

from emodarts_tf.config import FeatureConfig
from emodarts_tf.data.features import extract_mfcc, feature_shape, num_samples
from emodarts_tf.export.saved_model import mfcc_layer_arguments
from emodarts_tf.export.waveform_mfcc import WaveformMFCC, target_samples
from export_helpers import waveforms_16k

CFG_16K = FeatureConfig(sample_rate=16000, duration_s=1.0, n_mfcc=16, n_fft=512, hop_length=256, n_mels=32, time_pool=2)
CFG_PAPER_RATE = FeatureConfig(sample_rate=32750, duration_s=3.0, n_mfcc=40, n_fft=1024, hop_length=512, n_mels=64,
                               time_pool=4)  # fmt: skip


@pytest.fixture(scope="module")
def files(emodb_root):
    wavs = sorted((emodb_root / "wav").glob("*.wav"))
    return wavs[::45][:12]


@pytest.mark.parametrize(
    "cfg",
    [CFG_16K, CFG_PAPER_RATE, FeatureConfig(),
     FeatureConfig(sample_rate=8000, duration_s=2.5, n_mfcc=13, n_fft=256, hop_length=80, n_mels=26, time_pool=3)],
    ids=["16k", "paper-rate", "paper", "8k"],
)  # fmt: skip
def test_shapes_match_the_feature_config(cfg):
    layer = WaveformMFCC(**mfcc_layer_arguments(cfg))
    assert (layer.n_mfcc, layer.frames) == feature_shape(cfg)
    assert target_samples(cfg.sample_rate, cfg.duration_s) == num_samples(cfg)
    if cfg.sample_rate == 8000:  # downsampling and odd sizes run too
        out = layer(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 12345)).astype("float32"))
        assert tuple(out.shape) == (2, *feature_shape(cfg), 1) and np.all(np.isfinite(out))


def test_same_as_librosa_at_16k(files):
    layer = WaveformMFCC(**mfcc_layer_arguments(CFG_16K))
    got = np.asarray(layer(waveforms_16k(files)))[..., 0]
    ref = np.stack([extract_mfcc(p, CFG_16K) for p in files])
    diff = np.abs(got - ref)
    print(f"16 kHz: max |diff| {diff.max():.3g}, mean {diff.mean():.3g}, range {ref.min():.0f}..{ref.max():.0f}")
    assert diff.max() < 1e-3


def test_bounded_difference_with_in_graph_resampling(files):
    layer = WaveformMFCC(**mfcc_layer_arguments(CFG_PAPER_RATE))
    got = np.asarray(layer(waveforms_16k(files)))[..., 0]
    ref = np.stack([extract_mfcc(p, CFG_PAPER_RATE) for p in files])
    scaled = np.abs(got - ref) / ref.std(axis=(0, 2), keepdims=True)
    print(f"32750 Hz: |diff|/std mean {scaled.mean():.3g}, p99 {np.percentile(scaled, 99):.3g}, max {scaled.max():.3g}")
    assert scaled.mean() < 0.05
    assert np.percentile(scaled, 99) < 0.5


def test_classes_agree_with_in_graph_resampling(files, emodb_root, tmp_path):
    """A CNN trained on librosa features at 32750 Hz predicts the same classes from in-graph features."""
    import keras

    from emodarts_tf.evaluation.model_dir import inference_model

    labels = {"W": 0, "F": 1, "N": 2, "T": 3}
    wavs = [p for p in sorted((emodb_root / "wav").glob("*.wav")) if p.stem[5] in labels][::6][:48]
    x = np.stack([extract_mfcc(p, CFG_PAPER_RATE) for p in wavs])[..., np.newaxis]
    y = np.array([labels[p.stem[5]] for p in wavs])
    mean, std = x.mean(axis=(0, 2), keepdims=True), x.std(axis=(0, 2), keepdims=True)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(x.shape[1:], name="mfcc")
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(4)(h))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit((x - mean) / std, y, epochs=15, batch_size=16, verbose=0)
    model = inference_model(model)

    layer = WaveformMFCC(**mfcc_layer_arguments(CFG_PAPER_RATE))
    from_librosa = np.asarray(model.predict((x - mean) / std, verbose=0)).argmax(axis=1)
    in_graph = np.concatenate([np.asarray(layer(waveforms_16k(wavs[i : i + 16]))) for i in range(0, len(wavs), 16)])
    from_graph = np.asarray(model.predict((in_graph - mean) / std, verbose=0)).argmax(axis=1)
    agree = float(np.mean(from_librosa == from_graph))
    print(f"32750 Hz: classes agree on {agree:.0%} of {len(wavs)} EmoDB files; predicted {np.bincount(from_librosa, minlength=4)}")
    assert len(set(from_librosa.tolist())) >= 2
    assert agree >= 0.9


def test_config_round_trip_and_bad_arguments():
    layer = WaveformMFCC(**mfcc_layer_arguments(CFG_16K), input_rate=16000, name="mfcc_layer")
    clone = WaveformMFCC.from_config(layer.get_config())
    assert clone.feature_config == layer.feature_config == mfcc_layer_arguments(CFG_16K)
    x = np.random.default_rng(1).uniform(-0.3, 0.3, (1, 9000)).astype("float32")
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(layer(x)))
    with pytest.raises(ValueError, match="n_fft expected a positive integer, received 0"):
        WaveformMFCC(**{**mfcc_layer_arguments(CFG_16K), "n_fft": 0})
    with pytest.raises(ValueError, match=r"n_mfcc \(40\) cannot exceed n_mels \(32\)"):
        WaveformMFCC(**{**mfcc_layer_arguments(CFG_16K), "n_mfcc": 40})
    with pytest.raises(ValueError, match="duration_s expected > 0"):
        WaveformMFCC(**{**mfcc_layer_arguments(CFG_16K), "duration_s": 0})
