"""The spectrogram map against an independent numpy STFT, its cache folder, and the MFCC cache key kept as it
was before ``features.kind`` existed."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from emodarts_tf.config import FeatureConfig, load_config
from emodarts_tf.data import features as F
from emodarts_tf.data.cache import FeatureCache
from emodarts_tf.data.spectrogram import spectrogram_from_waveform, spectrogram_shape

# The fields FeatureConfig had before `kind` and the spectrogram's fields were added.
MFCC_FIELDS = ("sample_rate", "duration_s", "n_mfcc", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "time_pool")


def reference_spectrogram(y, sr, window_ms, hop_ms, bands, pool) -> np.ndarray:
    """Frame by frame: Hamming window from its formula, |rfft|, mean over each band, log(1 + x), max over
    windows of `pool` frames (incomplete last window dropped)."""
    win, hop = round(window_ms * sr / 1000), round(hop_ms * sr / 1000)
    hamming = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(win) / (win - 1))
    columns = []
    for start in range(0, len(y) - win + 1, hop):
        mag = np.abs(np.fft.rfft(y[start : start + win] * hamming))
        edges = [math.floor(b * len(mag) / bands) for b in range(bands + 1)]
        columns.append([np.log(1 + mag[edges[b] : edges[b + 1]].mean()) for b in range(bands)])
    m = np.array(columns).T
    n = m.shape[1] // pool
    return np.stack([m[:, i * pool : (i + 1) * pool].max(axis=1) for i in range(n)], axis=1)


def synthetic(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    chirp = np.sin(2 * np.pi * (300 + 900 * t) * t)
    return (0.4 * chirp + 0.2 * np.sin(2 * np.pi * 2500 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("sr, window_ms, hop_ms, bands, pool", [(16000, 25.0, 11.0, 64, 3), (8000, 20.0, 10.0, 81, 1)])
def test_spectrogram_equals_numpy_stft(sr, window_ms, hop_ms, bands, pool):
    cfg = FeatureConfig(kind="spectrogram", sample_rate=sr, duration_s=0.5, window_ms=window_ms, hop_ms=hop_ms,
                        freq_bins=bands, time_pool=pool)  # fmt: skip
    y = synthetic(sr, 0.5)
    got = spectrogram_from_waveform(y, cfg)
    want = reference_spectrogram(y.astype(np.float64), sr, window_ms, hop_ms, bands, pool)
    assert got.shape == want.shape == spectrogram_shape(cfg) == F.feature_shape(cfg) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_spectrogram_cache_pads_like_mfcc_and_has_its_own_folder(tmp_path, wav_writer):
    import soundfile as sf

    paths = [str(wav_writer(tmp_path / f"{i}.wav", seed=i, seconds=s)) for i, s in enumerate((0.3, 1.2))]
    cfg = FeatureConfig(kind="spectrogram", sample_rate=16000, duration_s=0.8, freq_bins=40, time_pool=2)
    cache = FeatureCache(tmp_path / "cache", cfg)
    assert cache.dir.name == f"spectrogram-{F.feature_config_hash(cfg)}"
    assert cache.extract(paths, workers=1, progress=False) == {}
    got = FeatureCache(tmp_path / "cache", cfg).load(paths)
    n = int(0.8 * 16000)
    for path, row in zip(paths, got):
        y, _ = sf.read(path, dtype="float32")
        y = np.pad(y, (0, max(0, n - len(y))))[:n]  # zero-padded or cut to duration_s, the start kept
        np.testing.assert_allclose(row, reference_spectrogram(y.astype(np.float64), 16000, 25.0, 11.0, 40, 2),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    # The padded end of the short file is exactly 0 (log(1 + 0)).
    assert np.all(got[0][:, -5:] == 0)
    # A second call extracts nothing; another window is another folder.
    assert cache.status(paths)[2] == []
    other = FeatureCache(tmp_path / "cache", FeatureConfig(**{**vars(cfg), "window_ms": 20.0}))
    assert other.dir != cache.dir and other.status(paths)[2] == paths


def _old_mfcc_hash(cfg: FeatureConfig) -> str:
    """The cache key as computed before `kind` existed: every field FeatureConfig had then."""
    import librosa

    payload = {
        "features": {name: getattr(cfg, name) for name in MFCC_FIELDS},
        "feature_version": F.FEATURE_VERSION,
        "librosa": librosa.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def test_mfcc_cache_key_unchanged(tmp_path):
    configs = [FeatureConfig(), FeatureConfig(sample_rate=8000, duration_s=0.5, n_mfcc=13, n_fft=256, hop_length=128,
                                              n_mels=26, time_pool=2), FeatureConfig(fmax=8000.0)]  # fmt: skip
    for cfg in configs:
        assert F.feature_config_hash(cfg) == _old_mfcc_hash(cfg)
        # The spectrogram's fields do not touch an MFCC key.
        assert F.feature_config_hash(FeatureConfig(**{**vars(cfg), "window_ms": 30.0, "freq_bins": 7})) == \
            _old_mfcc_hash(cfg)  # fmt: skip
        assert FeatureCache(tmp_path, cfg).dir.name == f"mfcc-{_old_mfcc_hash(cfg)}"
    spectrogram = FeatureConfig(kind="spectrogram")
    assert F.feature_config_hash(spectrogram) != F.feature_config_hash(FeatureConfig())
    # MFCC fields do not touch a spectrogram key.
    assert F.feature_config_hash(FeatureConfig(kind="spectrogram", n_mfcc=20)) == F.feature_config_hash(spectrogram)


def test_spectrogram_config_errors_name_the_key():
    assert load_config(overrides=["features.kind=spectrogram"]).features.kind == "spectrogram"
    cases = [
        ({"kind": "mel"}, "features.kind: expected one of .*'mel'"),
        ({"kind": "spectrogram", "window_ms": 0}, "features.window_ms: expected a positive number"),
        ({"kind": "spectrogram", "hop_ms": -1.0}, "features.hop_ms: expected a positive number"),
        ({"kind": "spectrogram", "freq_bins": 1000}, "features.freq_bins: expected at most the 410 FFT bins of a 819-sample window"),
        ({"kind": "spectrogram", "freq_bins": 0}, "features.freq_bins: expected a positive integer"),
        ({"kind": "spectrogram", "duration_s": 0.01}, "features.duration_s: .* shorter than one window"),
        ({"kind": "spectrogram", "duration_s": 0.05, "time_pool": 5}, "features.time_pool: expected at most the"),
    ]
    for fields, message in cases:
        with pytest.raises(ValueError, match=message):
            F.feature_shape(FeatureConfig(**fields))
