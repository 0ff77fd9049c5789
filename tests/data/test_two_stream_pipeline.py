"""Two-stream folds (EmotionNAS): the frame-level stream beside the image, normalised per dimension, batched
as a dict, augmented consistently with the image (SpecAugment on the image only; one time shift and one
mixup for both streams)."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.config import RecipeConfig
from emodarts_tf.data.pipeline import make_fold_data
from emodarts_tf.data.prepare import prepare
from emodarts_tf.evaluation.recipe import mixup_batch, time_shift_batch, train_dataset

FRAMES = (10, 3)


class TwoStream:
    """A prepared corpus with a frame-level stream: every utterance's frames are a seeded random
    ``(10, 3)`` array with a per-speaker offset and scale, so speaker normalisation has something to remove."""

    def __init__(self, prepared):
        self._prepared = prepared
        self.frames_shape = FRAMES
        self.image_name = "spectrogram"
        self._speaker = {r.path: r.speaker for r in prepared.records}

    def __getattr__(self, name):
        return getattr(self._prepared, name)

    def frames_features(self, paths):
        out = []
        for p in paths:
            rng = np.random.default_rng(zlib.crc32(p.encode()))
            s = int(zlib.crc32(self._speaker[p].encode()) % 7)
            out.append(rng.normal(size=FRAMES) * (1 + s) + np.array([s, -2 * s, 10.0]))
        return np.stack(out).astype(np.float32)


@pytest.fixture
def two_stream(csv_corpus, make_config):
    config = make_config("csv", csv_corpus(n_speakers=5, per_class=4))
    return config, TwoStream(prepare(config, progress=False))


@pytest.mark.parametrize("mode", ["coefficient", "speaker"])
def test_frames_are_normalised_per_dimension_like_the_image(two_stream, mode):
    config, prep = two_stream
    config.data.normalize = mode
    fd = make_fold_data(prep, 1, config)
    assert fd.two_stream and fd.model_input_shape == {"spectrogram": (13, 16, 1), "frames": FRAMES}
    speaker = {r.path: r.speaker for r in prep.records}
    raw_train = prep.frames_features(fd.train_paths).astype(np.float64)
    for part, paths in (("train", fd.train_paths), ("val", fd.val_paths), ("test", fd.test_paths)):
        raw = prep.frames_features(paths).astype(np.float64)
        if mode == "coefficient":  # statistics of the train part, per dimension over every frame
            expected = (raw - raw_train.mean(axis=(0, 1))) / raw_train.std(axis=(0, 1))
        else:  # each utterance with the statistics of every frame of its speaker's utterances
            expected = []
            for p, f in zip(paths, raw):
                own = prep.frames_features([q for q in speaker if speaker[q] == speaker[p]]).astype(np.float64)
                expected.append((f - own.mean(axis=(0, 1))) / own.std(axis=(0, 1)))
            expected = np.stack(expected)
        x, y = fd.arrays(part)
        assert set(x) == {"spectrogram", "frames"} and len(y) == len(paths)
        np.testing.assert_allclose(x["frames"], expected, rtol=1e-4, atol=1e-4, err_msg=part)
        np.testing.assert_allclose(x["spectrogram"], make_fold_data(prep._prepared, 1, config).arrays(part)[0])
    xw, yw = fd.arrays("weights")
    np.testing.assert_array_equal(xw["frames"], fd.arrays("train")[0]["frames"][fd.weights_index])
    refit = fd.with_validation_in_training()
    assert refit.arrays("train")[0]["frames"].shape[0] == len(fd.train_paths) + len(fd.val_paths)


def test_two_stream_batches_and_spec_augment_on_the_image_only(two_stream):
    config, prep = two_stream
    sa = config.data.spec_augment
    sa.enabled, sa.time_mask, sa.freq_mask, sa.num_masks = True, 6, 5, 2
    fd = make_fold_data(prep, 1, config)
    batches = list(fd.train(16, shuffle=False))
    images = np.concatenate([x["spectrogram"].numpy() for x, _ in batches])
    frames = np.concatenate([x["frames"].numpy() for x, _ in batches])
    x_train = fd.arrays("train")[0]
    assert np.any(images != x_train["spectrogram"])  # masked
    np.testing.assert_array_equal(frames, x_train["frames"])  # untouched
    (xw, yw), (xa, ya) = next(iter(tf.data.Dataset.zip(fd.search_split(4))))
    assert xw["frames"].shape == (4, *FRAMES) and xa["spectrogram"].shape == (4, 13, 16, 1)


def test_time_shift_and_mixup_treat_both_streams_alike():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 4, 20, 1)).astype(np.float32)
    frames = rng.normal(size=(6, 10, 3)).astype(np.float32)
    x = {"mfcc": tf.constant(image), "frames": tf.constant(frames)}
    shifted = time_shift_batch(x, 4, seed=3)
    shifts_image = time_shift_batch(tf.constant(image), 4, seed=3).numpy()
    np.testing.assert_array_equal(shifted["mfcc"].numpy(), shifts_image)  # the image as on its own
    for i in range(6):  # the frame stream shifted by half as many frames (10 vs 20 frames), numpy
        k = next(s for s in range(-4, 5) if np.array_equal(np.roll(image[i], s, axis=1)[:, max(s, 0):20 + min(s, 0)],
                                                          shifts_image[i][:, max(s, 0):20 + min(s, 0)]))
        kf = int(np.round(k / 2))
        expected = np.zeros_like(frames[i])
        src = np.arange(10) - kf
        ok = (src >= 0) & (src < 10)
        expected[ok] = frames[i][src[ok]]
        np.testing.assert_array_equal(shifted["frames"].numpy()[i], expected, err_msg=f"example {i}, shift {k}")
    # mixup: one weight and one partner per example for both streams and the targets
    const = np.arange(6, dtype=np.float32)
    x = {"mfcc": tf.constant(np.broadcast_to(const[:, None, None, None], (6, 4, 20, 1)).copy()),
         "frames": tf.constant(np.broadcast_to(const[:, None, None], (6, 10, 3)).copy())}
    y = tf.one_hot(np.arange(6) % 3, 3)
    xm, ym = mixup_batch(x, y, 0.4, seed=5)
    a, b = xm["mfcc"].numpy()[:, 0, 0, 0], xm["frames"].numpy()[:, 0, 0]
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(ym.numpy().sum(axis=1), 1.0, rtol=1e-6)


def test_recipe_dataset_yields_two_stream_batches(two_stream):
    config, prep = two_stream
    fd = make_fold_data(prep, 1, config)
    recipe = RecipeConfig(mixup=0.2, time_shift=0.1)
    x, y = next(iter(train_dataset(fd, 8, recipe)))
    assert x["spectrogram"].shape == (8, 13, 16, 1) and x["frames"].shape == (8, *FRAMES) and y.shape == (8, 4)


def test_prepare_two_streams_from_npy_arrays_and_reload(tmp_path, csv_corpus, make_config):
    """prepare(two_stream=True) extracts both streams; an utterance whose array is bad is reported and
    skipped, the rest kept; the fold's frames are the arrays (normalised); PreparedCorpus.load reopens it."""
    from emodarts_tf.data.prepare import PreparedCorpus

    config = make_config("csv", csv_corpus(n_speakers=5, per_class=4))
    first = prepare(config, progress=False)
    arrays = tmp_path / "npy"
    rng = np.random.default_rng(0)
    root = Path(config.data.root).parent
    bad = first.records[3].path
    for r in first.records:
        target = arrays / Path(r.path).relative_to(root).with_suffix(".npy")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, rng.normal(size=(7, 5)).astype(np.float32) if r.path != bad else np.zeros((0, 5)))
    config.frames.source, config.frames.npy_dir = "npy", str(arrays)
    config.frames.frames, config.frames.time_pool = 6, 1
    prepared = prepare(config, out_dir=tmp_path / "prep", progress=False, two_stream=True)
    assert bad not in {r.path for r in prepared.records} and len(prepared.records) == len(first.records) - 1
    assert any(p.path == bad and "frames" in p.problem for p in prepared.problems)
    assert prepared.frames_shape == (6, 5) and prepared.image_name == "mfcc"
    some = prepared.records[0].path
    expected = np.load(arrays / Path(some).relative_to(root).with_suffix(".npy"))[:6]
    np.testing.assert_allclose(prepared.frames_features([some])[0], expected, rtol=1e-6)
    config.data.normalize = "none"
    fd = make_fold_data(prepared, 1, config)
    idx = fd.test_paths.index(fd.test_paths[0])
    np.testing.assert_allclose(fd.arrays("test")[0]["frames"][idx], prepared.frames_features(fd.test_paths[:1])[0])
    reloaded = PreparedCorpus.load(tmp_path / "prep")
    np.testing.assert_array_equal(reloaded.frames_features([some]), prepared.frames_features([some]))
