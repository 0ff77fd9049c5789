"""Frame-level sequences (EmotionNAS's second stream) against independent computations: openSMILE called
directly on real EmoDB files, the models called directly, the .npy arrays read back by numpy; bad files
reported by name and skipped; the cache resumes and keys another config to another folder."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest

from emodarts_tf.config import FramesConfig, load_config
from emodarts_tf.data.corpora import read_manifest
from emodarts_tf.data.frame_features import (
    corpus_root,
    frame_cache,
    load_frames,
    validate_frames_config,
)
from emodarts_tf.data.records import Record, read_records, write_records

EMODB_FILES = ("03a01Fa.wav", "08a01Wa.wav")


def reference_fixed_length(seq: np.ndarray, frames: int, pool: int, mode: str) -> np.ndarray:
    """Independent crop/pool/pad: windows of `pool` rows from the start (a partial last one kept), at most
    `frames` of them, zeros after."""
    seq = np.asarray(seq, dtype=np.float64)
    rows = []
    for start in range(0, min(len(seq), frames * pool), pool):
        window = seq[start : start + pool]
        rows.append(window.max(axis=0) if mode == "max" else window.mean(axis=0))
    out = np.zeros((frames, seq.shape[1]))
    if rows:
        out[: len(rows)] = np.stack(rows)
    return out


def extracted(cache, paths, **kwargs) -> dict:
    return cache.extract(paths, workers=1, progress=False, **kwargs)


# ------------------------------------------------------------------------------------------ openSMILE
@pytest.mark.parametrize(
    "feature_set, dim, frames, pool, mode",
    [("eGeMAPSv02", 25, 150, 1, "mean"), ("ComParE_2016", 65, 60, 4, "max"), ("eGeMAPSv02", 25, 60, 4, "mean")],
)
def test_opensmile_equals_process_file_on_emodb(emodb_root, tmp_path, feature_set, dim, frames, pool, mode):
    import opensmile
    import soundfile as sf

    paths = [str(emodb_root / "wav" / name) for name in EMODB_FILES]
    native = sf.info(paths[0]).samplerate  # no resampling, so process_file sees the same samples
    cfg = FramesConfig(opensmile_set=feature_set, sample_rate=native, duration_s=8.0, frames=frames, time_pool=pool,
                       pool=mode)  # fmt: skip
    cache = frame_cache(tmp_path / "cache", cfg, paths)
    assert cache.dir.name.startswith("frames-opensmile-") and cache.shape == (frames, dim)
    assert extracted(cache, paths) == {}
    got = frame_cache(tmp_path / "cache", cfg, paths).load(paths)  # a fresh object reads the shards
    assert got.shape == (2, frames, dim) and got.dtype == np.float32
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)  # fmt: skip
    for path, row in zip(paths, got):
        direct = smile.process_file(path).to_numpy()
        assert direct.shape[1] == dim
        want = reference_fixed_length(direct, frames, pool, mode)
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-5)
        pooled = math.ceil(len(direct) / pool)
        assert np.all(row[pooled:] == 0) and np.all(np.any(row[:pooled] != 0, axis=1))  # zeros after the frames


def test_opensmile_cuts_audio_to_duration_and_reports_bad_audio(emodb_root, tmp_path, wav_writer):
    import opensmile
    import soundfile as sf

    good = str(emodb_root / "wav" / EMODB_FILES[0])
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), 16000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    missing = str(tmp_path / "missing.wav")
    paths = [good, str(silent), str(empty), missing]
    y, sr = sf.read(good, dtype="float32")
    cfg = FramesConfig(sample_rate=sr, duration_s=0.75, frames=100, time_pool=1)
    cache = frame_cache(tmp_path / "cache", cfg, paths)
    errors = extracted(cache, paths)
    assert sorted(errors) == sorted(paths[1:])
    assert "silent audio" in errors[str(silent)] and "empty file" in errors[str(empty)]
    assert "no such file" in errors[missing]
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)  # fmt: skip
    direct = smile.process_signal(y[: int(round(0.75 * sr))], sr).to_numpy()
    assert len(direct) < 100
    np.testing.assert_allclose(cache.load([good])[0], reference_fixed_length(direct, 100, 1, "mean"), atol=1e-5)
    with pytest.raises(ValueError, match="missing.wav: no cached features .*no such file"):
        cache.load([missing])


# ---------------------------------------------------------------------------------------------- model
def _save_savedmodel(path: Path, dim: int, seed: int) -> Path:
    """A tf.Module mapping an unbatched waveform (samples,) to (frames, dim): 25 ms frames every 10 ms at
    16 kHz, a fixed projection and a tanh."""
    import tensorflow as tf

    class Framer(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(seed).standard_normal((400, dim)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, wave):
            return tf.tanh(tf.matmul(tf.signal.frame(wave, 400, 160), self.w))

    tf.saved_model.save(Framer(), str(path))
    return path


def _save_keras(path: Path, dim: int) -> Path:
    """A Keras model mapping a batched waveform (1, samples) to (1, frames, dim)."""
    import keras

    inputs = keras.Input(shape=(None,))
    x = keras.layers.Reshape((-1, 1))(inputs)
    x = keras.layers.Conv1D(dim, 400, strides=160, activation="tanh")(x)
    keras.Model(inputs, x).save(str(path))
    return path


def _direct(model_path: Path, wave: np.ndarray) -> np.ndarray:
    """The loaded model called on the waveform, as its own input signature says."""
    import keras
    import tensorflow as tf

    if model_path.is_dir():
        return tf.saved_model.load(str(model_path))(tf.constant(wave)).numpy()
    return keras.saving.load_model(str(model_path), compile=False)(wave[None]).numpy()[0]


@pytest.mark.parametrize("kind", ["savedmodel", "keras"])
def test_model_source_equals_calling_the_model(tmp_path, wav_writer, kind, caplog):
    import soundfile as sf

    model_path = _save_savedmodel(tmp_path / "sm", 6, seed=1) if kind == "savedmodel" else _save_keras(
        tmp_path / "tiny.keras", 5)
    dim = 6 if kind == "savedmodel" else 5
    paths = [str(wav_writer(tmp_path / f"{i}.wav", seed=i, seconds=s)) for i, s in enumerate((0.3, 1.0))]
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"RIFF but not really a wave file")
    cfg = FramesConfig(source="model", model_path=str(model_path), sample_rate=16000, frames=40, time_pool=2,
                       pool="mean")  # fmt: skip
    cache = frame_cache(tmp_path / "cache", cfg, paths)
    assert cache.dir.name.startswith("frames-model-") and cache.shape == (40, dim)
    assert cache.extractor.in_process
    errors = cache.extract(paths + [str(bad)], workers=2, progress=False)  # in this process all the same
    assert list(errors) == [str(bad)] and "not a readable audio file" in errors[str(bad)]
    got = load_frames(tmp_path / "cache", cfg, paths)
    for path, row in zip(paths, got):
        wave, sr = sf.read(path, dtype="float32")
        assert sr == 16000
        want = reference_fixed_length(_direct(model_path, wave), 40, 2, "mean")
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-5)
    # The first file (0.3 s: 28 frames -> 14 pooled) is padded, the second (98 -> 49) cut.
    assert np.all(got[0, 14:] == 0) and np.all(np.any(got[1] != 0, axis=1))

    # Resumed: nothing to extract. A retrained model (same path) is another model: another folder.
    with caplog.at_level(logging.INFO, logger="emodarts_tf.data.cache"):
        assert extracted(frame_cache(tmp_path / "cache", cfg, paths), paths) == {}
    assert not [m for m in caplog.messages if "extracting" in m]
    if kind == "savedmodel":
        _save_savedmodel(model_path, 6, seed=2)
        retrained = frame_cache(tmp_path / "cache", cfg, paths)
        assert retrained.dir != cache.dir
        assert extracted(retrained, paths) == {}
        assert not np.allclose(retrained.load(paths), got)


def test_model_width_from_a_probe_call_when_not_static(tmp_path, wav_writer):
    """A batched SavedModel whose output width is unknown until it runs: the width comes from one call."""
    import soundfile as sf
    import tensorflow as tf

    class Dynamic(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(3).standard_normal((320, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, None], tf.float32)])
        def __call__(self, wave):
            y = tf.matmul(tf.signal.frame(wave[0], 320, 320), self.w)
            return tf.reshape(y, [1, tf.shape(y)[0], -1])  # (1, frames, ?) in the signature

    tf.saved_model.save(Dynamic(), str(tmp_path / "dyn"), signatures=None)
    path = str(wav_writer(tmp_path / "a.wav", seconds=0.5))
    cfg = FramesConfig(source="model", model_path=str(tmp_path / "dyn"), frames=30, time_pool=1)
    cache = frame_cache(tmp_path / "cache", cfg, [path])
    assert cache.shape == (30, 4)
    assert extracted(cache, [path]) == {}
    wave, _ = sf.read(path, dtype="float32")
    direct = tf.saved_model.load(str(tmp_path / "dyn"))(tf.constant(wave[None])).numpy()[0]
    np.testing.assert_allclose(cache.load([path])[0], reference_fixed_length(direct, 30, 1, "mean"), rtol=1e-5)


def test_model_source_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="frames.model_path: source 'model' needs"):
        validate_frames_config(FramesConfig(source="model"))
    with pytest.raises(ValueError, match="frames.model_path .*no such file"):
        validate_frames_config(FramesConfig(source="model", model_path=str(tmp_path / "none.keras")))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="without saved_model.pb"):
        validate_frames_config(FramesConfig(source="model", model_path=str(tmp_path / "folder")))


# ------------------------------------------------------------------------------------------------ npy
def _arrays(rng) -> dict:
    """Good arrays of dim 5 (one longer than `frames`, two shorter) and one of each bad kind."""
    return {
        "a": rng.standard_normal((30, 5)).astype(np.float32),
        "b": rng.standard_normal((7, 5)).astype(np.float64),
        "c": rng.standard_normal((12, 5)).astype(np.float32),
        "rank": rng.standard_normal(5).astype(np.float32),
        "nan": np.where(rng.random((9, 5)) < 0.1, np.nan, 1.0).astype(np.float32),
        "dim": rng.standard_normal((9, 7)).astype(np.float32),
        "zero": np.zeros((0, 5), np.float32),
    }


def test_npy_from_the_manifest_column(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _arrays(rng)
    feats = tmp_path / "feats"
    feats.mkdir()
    for name, array in arrays.items():
        np.save(feats / f"{name}.npy", array)
    (feats / "empty.npy").write_bytes(b"")
    (feats / "text.npy").write_text("not an array")
    arrays["nan"][0, 0] = np.nan  # at least one NaN whatever the draw
    np.save(feats / "nan.npy", arrays["nan"])
    names = list(arrays) + ["empty", "text", "missing", "none"]
    rows = ["path,label,speaker,features"]
    for i, name in enumerate(names):
        column = "" if name == "none" else f"feats/{name}.npy"  # relative to the manifest's folder
        rows.append(f"wav/{name}.wav,{'ang' if i % 2 else 'sad'},s{i % 3},{column}")
    manifest = tmp_path / "corpus.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    utterances, problems = read_manifest(manifest)
    assert not problems
    features = {u.path: u.features for u in utterances}
    assert features[str(tmp_path / "wav" / "a.wav")] == str(feats / "a.npy") and features[str(tmp_path / "wav" / "none.wav")] == ""

    paths = [u.path for u in utterances]
    cfg = FramesConfig(source="npy", frames=10, time_pool=1)
    cache = frame_cache(tmp_path / "cache", cfg, paths, features=features)
    assert cache.dir.name.startswith("frames-npy-") and cache.shape == (10, 5)  # the dimension of most arrays
    errors = extracted(cache, paths)
    wav = {name: str(tmp_path / "wav" / f"{name}.wav") for name in names}
    assert sorted(errors) == sorted(wav[n] for n in names if n not in ("a", "b", "c"))
    expected = {
        "rank": "expected a 2-D (frames, dim) array, found shape (5,)",
        "nan": "non-finite value(s)",
        "dim": "7 values per frame, expected 5",
        "zero": "empty array (shape (0, 5))",
        "empty": "empty file (0 bytes)",
        "text": "not a readable .npy array",
        "missing": "no such file",
        "none": "no precomputed .npy for it",
    }
    for name, words in expected.items():
        assert words in errors[wav[name]], (name, errors[wav[name]])
        if name != "none":
            assert str(feats / f"{name}.npy") in errors[wav[name]]  # the message names the array's file
    got = cache.load([wav[n] for n in "abc"])
    assert got.shape == (3, 10, 5) and got.dtype == np.float32
    for row, name in zip(got, "abc"):
        np.testing.assert_allclose(row, reference_fixed_length(arrays[name], 10, 1, "mean"), rtol=1e-6)

    # Resume: nothing is read again; a changed array is; a fixed bad one is extracted now.
    same = frame_cache(tmp_path / "cache", cfg, paths, features=features)
    assert same.status(paths)[2] == []
    np.save(feats / "dim.npy", rng.standard_normal((4, 5)).astype(np.float32))
    later = np.load(feats / "dim.npy")
    os.utime(feats / "dim.npy", ns=(1, 1))  # another mtime, whatever the clock's resolution
    again = frame_cache(tmp_path / "cache", cfg, paths, features=features)
    assert again.status(paths)[2] == [wav["dim"]]
    assert wav["dim"] not in extracted(again, paths)
    np.testing.assert_allclose(again.load([wav["dim"]])[0], reference_fixed_length(later, 10, 1, "mean"))

    # The records keep the column: a round trip through records.csv.
    records = [Record(u.path, "ang", u.speaker, features=u.features) for u in utterances]
    write_records(tmp_path / "records.csv", records)
    assert read_records(tmp_path / "records.csv") == records


def test_npy_from_a_mirrored_folder_with_pooling(tmp_path):
    rng = np.random.default_rng(1)
    root, npy_dir = tmp_path / "corpus", tmp_path / "mirror"
    lengths = {"s1/a": 23, "s1/b": 4, "s2/c": 16}
    arrays = {}
    for rel, n in lengths.items():
        arrays[rel] = rng.standard_normal((n, 3)).astype(np.float32)
        (npy_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(npy_dir / f"{rel}.npy", arrays[rel])
    paths = [str(root / f"{rel}.wav") for rel in lengths]  # the audio itself is never read
    outside = str(tmp_path / "elsewhere" / "d.wav")
    cfg = FramesConfig(source="npy", npy_dir=str(npy_dir), frames=5, time_pool=4, pool="max")
    cache = frame_cache(tmp_path / "cache", cfg, paths + [outside], audio_root=root)
    assert cache.shape == (5, 3)
    errors = extracted(cache, paths + [outside])
    assert list(errors) == [outside] and "not under the corpus root" in errors[outside]
    got = load_frames(tmp_path / "cache", cfg, paths, audio_root=root)
    for row, rel in zip(got, lengths):
        np.testing.assert_allclose(row, reference_fixed_length(arrays[rel], 5, 4, "max"))
    # Another frames config is another folder; the npy folder's dim comes from the cache when reopened.
    other = frame_cache(tmp_path / "cache", FramesConfig(source="npy", npy_dir=str(npy_dir), frames=6), paths,
                        audio_root=root)  # fmt: skip
    assert other.dir != cache.dir and other.dir.parent == cache.dir.parent
    assert frame_cache(tmp_path / "cache", cfg, [], audio_root=root).shape == (5, 3)


def test_mirrored_npy_paths_through_symbolic_links(tmp_path):
    """The audio paths of a manifest keep their symbolic links while the corpus root comes resolved (and the
    other way round): both find the mirrored array, and a path outside the root still has none."""
    from emodarts_tf.data.frame_features import npy_source

    real = tmp_path / "disk" / "corpus"
    (real / "s1").mkdir(parents=True)
    (real / "s1" / "a.wav").write_bytes(b"")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "disk")
    npy_dir = tmp_path / "mirror"
    npy_dir.mkdir()
    source = npy_source(FramesConfig(source="npy", npy_dir=str(npy_dir)), audio_root=real.resolve())
    expected = str((npy_dir / "s1" / "a.npy").resolve())
    assert source(str(link / "corpus" / "s1" / "a.wav")) == expected  # linked path, resolved root
    assert source(str(real / "s1" / "a.wav")) == expected
    through_link = npy_source(FramesConfig(source="npy", npy_dir=str(npy_dir)), audio_root=link / "corpus")
    assert through_link(str(link / "corpus" / "s1" / "a.wav")) == expected  # both as written
    assert through_link(str(real / "s1" / "a.wav")) == expected  # resolved path, linked root
    assert source(str(tmp_path / "disk" / "other.wav")) is None
    # A manifest reached through a link reads its relative paths from the link's folder: so does corpus_root.
    from emodarts_tf.config import DataConfig
    from emodarts_tf.data.frame_features import corpus_root

    (real / "m.csv").write_text("path,label,speaker\n")
    assert corpus_root(DataConfig(corpus="csv", root=str(link / "corpus" / "m.csv"))) == link / "corpus"


def test_corpus_root_and_manifest_without_features(tmp_path):
    manifest = tmp_path / "corpus.csv"
    manifest.write_text("path,label,speaker\nx.wav,ang,s1\n", encoding="utf-8")
    data = load_config(overrides=[f"data.root={manifest}", "data.corpus=csv"]).data
    assert corpus_root(data) == tmp_path.resolve()
    utterances, _ = read_manifest(manifest)
    assert utterances[0].features == ""
    # records.csv of a corpus without precomputed arrays keeps its six columns, and old files read back.
    write_records(tmp_path / "records.csv", [Record(utterances[0].path, "ang", "s1")])
    assert (tmp_path / "records.csv").read_text().splitlines()[0] == "path,label,speaker,session,split,gender"
    assert read_records(tmp_path / "records.csv")[0].features == ""


# --------------------------------------------------------------------------------------------- config
def test_frames_config_section_and_validation():
    config = load_config(overrides=["frames.source=npy", "frames.frames=50", "frames.pool=max"])
    assert (config.frames.source, config.frames.frames, config.frames.pool) == ("npy", 50, "max")
    assert load_config().frames == FramesConfig()
    with pytest.raises(ValueError, match="unknown key 'bogus'"):
        load_config(overrides=["frames.bogus=1"])
    bad = {
        "source": ("wav2vec", "frames.source: expected one of"),
        "opensmile_set": ("GeMAPS", "frames.opensmile_set: expected one of .*'GeMAPS'"),
        "pool": ("median", "frames.pool: expected one of .*'median'"),
        "frames": (0, "frames.frames: expected a positive integer, received 0"),
        "time_pool": (1.5, "frames.time_pool: expected a positive integer, received 1.5"),
        "sample_rate": (0, "frames.sample_rate: expected a positive rate"),
        "duration_s": (-1.0, "frames.duration_s: expected a positive duration"),
        "dim": (26, "frames.dim: eGeMAPSv02 has 25 low-level descriptors, received 26"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            validate_frames_config(FramesConfig(**{key: value}))
    with pytest.raises(ValueError, match="frames.npy_dir '/no/such/dir': no such folder"):
        validate_frames_config(FramesConfig(source="npy", npy_dir="/no/such/dir"))
    with pytest.raises(ValueError, match="frames.dim: no readable 2-D .npy array"):
        frame_cache("unused-cache", FramesConfig(source="npy"), ["/x/a.wav"], features={})
