"""MFCC features against librosa computed directly, and clear errors for bad audio files."""
from __future__ import annotations

import numpy as np
import pytest

from emodarts_tf.config import FeatureConfig
from emodarts_tf.data.cache import FeatureCache
from emodarts_tf.data.features import AudioError, extract_mfcc, feature_shape, load_audio

EMODB_FILES = ("03a01Fa.wav", "08a01Wa.wav", "16b10Tb.wav")


def _librosa_reference(path, sr, seconds, n_mfcc, n_fft, hop, n_mels, pool) -> np.ndarray:
    """Independent computation: librosa.load, pad/cut, librosa.feature.mfcc, max over windows of `pool` frames."""
    import librosa

    y, _ = librosa.load(path, sr=sr)
    n = int(round(sr * seconds))
    y = np.pad(y, (0, max(0, n - len(y))))[:n]
    m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    frames = m.shape[1] // pool
    return np.stack([m[:, i * pool : (i + 1) * pool].max(axis=1) for i in range(frames)], axis=1)


def test_feature_shape_presets():
    assert feature_shape(FeatureConfig()) == (128, 128)  # the paper: 512 frames pooled by 4
    demo = FeatureConfig(sample_rate=16000, duration_s=2.048, n_mfcc=32, n_fft=512, hop_length=256, n_mels=40)
    assert feature_shape(demo) == (32, 32)
    with pytest.raises(ValueError, match="features.n_mfcc: expected at most n_mels"):
        feature_shape(FeatureConfig(n_mfcc=64, n_mels=40))
    with pytest.raises(ValueError, match="features.time_pool"):
        feature_shape(FeatureConfig(time_pool=0))


def test_cached_mfcc_equals_librosa_on_emodb(emodb_root, tmp_path):
    cfg = FeatureConfig(sample_rate=16000, duration_s=1.5, n_mfcc=20, n_fft=512, hop_length=256, n_mels=40, time_pool=3)
    paths = [str(emodb_root / "wav" / name) for name in EMODB_FILES]
    cache = FeatureCache(tmp_path / "cache", cfg)
    assert cache.extract(paths, workers=1, progress=False) == {}
    cached = FeatureCache(tmp_path / "cache", cfg).load(paths)  # a fresh object reads the shards
    assert cached.shape == (3, *feature_shape(cfg)) and cached.dtype == np.float32
    for path, got in zip(paths, cached):
        want = _librosa_reference(path, 16000, 1.5, 20, 512, 256, 40, 3)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_paper_preset_equals_librosa_on_emodb(emodb_root):
    path = str(emodb_root / "wav" / EMODB_FILES[0])
    got = extract_mfcc(path, FeatureConfig())
    assert got.shape == (128, 128) and got.dtype == np.float32
    np.testing.assert_allclose(got, _librosa_reference(path, 32750, 8.0, 128, 2048, 512, 128, 4), rtol=1e-5, atol=1e-3)


def test_load_audio_pads_cuts_resamples_and_mixes_down(tmp_path, tiny_features, wav_writer):
    import soundfile as sf

    short = wav_writer(tmp_path / "short.wav", sr=16000, seconds=0.2)
    y = load_audio(short, tiny_features)
    assert y.shape == (4000,) and y.dtype == np.float32 and np.all(y[1700:] == 0)
    long = wav_writer(tmp_path / "long.wav", sr=8000, seconds=2.0)
    assert load_audio(long, tiny_features).shape == (4000,)
    stereo = tmp_path / "stereo.wav"
    mono, _ = sf.read(long, dtype="float32")
    sf.write(stereo, np.stack([mono, np.zeros_like(mono)], axis=1), 8000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(stereo, tiny_features), mono[:4000] / 2, atol=1e-4)


def _bad_files(tmp_path, write_wav):
    import soundfile as sf

    good = write_wav(tmp_path / "good.wav")
    data = good.read_bytes()
    files = {
        "empty": (tmp_path / "empty.wav", b"", "empty file"),
        "non-audio": (tmp_path / "notes.wav", b"these are my notes, not a recording\n" * 20, "not a readable audio file"),
        "truncated": (tmp_path / "truncated.wav", data[: len(data) // 2], "truncated WAV file"),
        "header only": (tmp_path / "header.wav", data[:30], "not a readable audio file"),
    }
    for path, content, _ in files.values():
        path.write_bytes(content)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    files["silent"] = (silent, None, "silent audio")
    files["missing"] = (tmp_path / "missing.wav", None, "no such file")
    return files


def test_bad_audio_raises_naming_file_and_problem(tmp_path, tiny_features, wav_writer):
    for kind, (path, _, problem) in _bad_files(tmp_path, wav_writer).items():
        with pytest.raises(AudioError) as info:
            load_audio(path, tiny_features)
        assert str(path) in str(info.value) and problem in str(info.value), kind
        assert isinstance(info.value, ValueError) and info.value.path == str(path)


def test_the_fields_each_kind_of_map_reads():
    """What a resume compares (read_feature_fields) against the fields each map's code reads, listed by hand:
    librosa's mel arguments (+ n_mfcc for MFCCs), the spectrogram's window, hop and bands."""
    from dataclasses import asdict

    from emodarts_tf.data.features import comparable_features, hashed_feature_fields, read_feature_fields

    common = {"sample_rate", "duration_s", "time_pool"}
    mel = {"n_fft", "hop_length", "n_mels", "fmin", "fmax"}
    expected = {"mfcc": common | mel | {"n_mfcc"}, "logmel": common | mel | {"kind"},
                "spectrogram": common | {"kind", "window_ms", "hop_ms", "freq_bins"}}  # fmt: skip
    for kind, names in expected.items():
        cfg = FeatureConfig(kind=kind)
        assert set(hashed_feature_fields(cfg)) == names, kind
        assert set(read_feature_fields(asdict(cfg))) == names | {"kind"}, kind
    # a kind the code does not know (refused by validate_feature_config) drops nothing
    unknown = {"kind": "cqt", "n_fft": 512}
    a, b = comparable_features(unknown, {**unknown, "n_fft": 1024})
    assert a != b and a["n_fft"] == 512
    # a field missing from a saved section takes its default only where `defaults` names it
    assert read_feature_fields({"n_mfcc": 40}, {"kind": "mfcc"}) == {"n_mfcc": 40, "kind": "mfcc"}
    assert read_feature_fields({"n_mfcc": 40})["sample_rate"] == FeatureConfig().sample_rate
    assert read_feature_fields({"kind": ["mfcc"], "n_mfcc": 40})["kind"] == "['mfcc']"  # hand-edited: no crash
    assert read_feature_fields({"n_mfcc": 40, "future": 1}, {})["future"] == 1
