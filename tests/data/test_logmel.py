"""``features.kind: logmel`` against an independent NumPy computation of the log-mel energies, and against the
MFCCs it is the input of (their DCT-II)."""
from __future__ import annotations

import numpy as np
import pytest

from emodarts_tf.config import FeatureConfig
from emodarts_tf.data import features as F
from emodarts_tf.data.cache import FeatureCache

EMODB_FILES = ("03a01Fa.wav", "08a01Wa.wav", "16b10Tb.wav")


def _numpy_logmel(path, sr, seconds, n_fft, hop, n_mels, pool, fmin, fmax) -> np.ndarray:
    """Independent computation: power STFT (librosa.stft), the mel filterbank as a matrix product, 10 log10 with
    librosa's floors (1e-10 and 80 dB below the utterance's peak), max over windows of ``pool`` frames."""
    import librosa

    y, _ = librosa.load(path, sr=sr)
    n = int(round(sr * seconds))
    y = np.pad(y, (0, max(0, n - len(y))))[:n]
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, center=True, pad_mode="constant")) ** 2
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax) @ power
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    frames = db.shape[1] // pool
    return np.stack([db[:, i * pool: (i + 1) * pool].max(axis=1) for i in range(frames)], axis=1)


def test_cached_logmel_equals_numpy_on_emodb(emodb_root, tmp_path):
    cfg = FeatureConfig(kind="logmel", sample_rate=16000, duration_s=1.5, n_fft=512, hop_length=256, n_mels=40,
                        time_pool=3, fmin=50.0, fmax=7000.0)
    paths = [str(emodb_root / "wav" / name) for name in EMODB_FILES]
    cache = FeatureCache(tmp_path / "cache", cfg)
    assert cache.extract(paths, workers=1, progress=False) == {}
    assert cache.dir.name.startswith("logmel-")
    cached = FeatureCache(tmp_path / "cache", cfg).load(paths)
    assert cached.shape == (3, 40, (1 + 24000 // 256) // 3) and cached.dtype == np.float32
    for path, got in zip(paths, cached):
        np.testing.assert_allclose(got, _numpy_logmel(path, 16000, 1.5, 512, 256, 40, 3, 50.0, 7000.0), rtol=1e-5, atol=1e-3)


def test_mfcc_is_the_dct_of_logmel(emodb_root):
    """Without time pooling (which does not commute with the DCT), the orthonormal DCT-II of the log-mel map over
    its bands, first ``n_mfcc`` rows, is the MFCC map of the same config."""
    from scipy.fft import dct

    path = str(emodb_root / "wav" / EMODB_FILES[1])
    mfcc_cfg = FeatureConfig(sample_rate=16000, duration_s=2.0, n_mfcc=20, n_fft=512, hop_length=256, n_mels=40,
                             time_pool=1)
    logmel_cfg = FeatureConfig(**{**mfcc_cfg.__dict__, "kind": "logmel"})
    logmel = F.extract_features(path, logmel_cfg)
    assert logmel.shape == F.feature_shape(logmel_cfg) == (40, 126)
    mfcc = F.extract_features(path, mfcc_cfg)
    np.testing.assert_allclose(dct(logmel, type=2, norm="ortho", axis=0)[:20], mfcc, rtol=1e-5, atol=1e-3)


def test_logmel_shape_key_and_errors():
    cfg = FeatureConfig(kind="logmel", sample_rate=16000, duration_s=3.0, n_fft=512, hop_length=256, n_mels=40)
    assert F.feature_shape(cfg) == (40, 47)
    # n_mfcc is not read: larger than n_mels is no error, and it leaves the cache key alone.
    wide = FeatureConfig(**{**cfg.__dict__, "n_mfcc": 128})
    assert F.feature_shape(wide) == (40, 47)
    assert F.feature_config_hash(wide) == F.feature_config_hash(cfg)
    assert F.feature_config_hash(FeatureConfig(**{**cfg.__dict__, "freq_bins": 7})) == F.feature_config_hash(cfg)
    # Every field it reads enters the key, and an MFCC config of the same fields has another key.
    assert F.feature_config_hash(FeatureConfig(**{**cfg.__dict__, "n_mels": 64})) != F.feature_config_hash(cfg)
    assert F.feature_config_hash(FeatureConfig(**{**cfg.__dict__, "kind": "mfcc"})) != F.feature_config_hash(cfg)
    assert F.feature_extractor_label(cfg) == "log-mel maps"
    with pytest.raises(ValueError, match="features.n_mels: expected a positive integer, received 0"):
        F.feature_shape(FeatureConfig(**{**cfg.__dict__, "n_mels": 0}))
    with pytest.raises(ValueError, match="features.fmin/fmax"):
        F.feature_shape(FeatureConfig(**{**cfg.__dict__, "fmax": 9000.0}))
