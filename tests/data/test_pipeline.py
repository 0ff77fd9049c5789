"""tf.data pipelines of a fold: shapes, train-only statistics, seeded shuffling, search split, SpecAugment."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.data.pipeline import make_fold_data
from emodarts_tf.data.prepare import prepare


@pytest.fixture
def prepared(csv_corpus, make_config):
    config = make_config("csv", csv_corpus(n_speakers=5, per_class=4))  # 80 files, 5 speakers
    return config, prepare(config, progress=False)


def _concat(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_parts_shapes_and_dtypes(prepared):
    config, prep = prepared
    fd = make_fold_data(prep, 2, config)
    assert fd.input_shape == (13, 16, 1) and fd.classes == ["ang", "hap", "neu", "sad"]
    assert sorted(fd.train_paths + fd.val_paths) == sorted(prep.fold(2).train)
    assert fd.test_paths == prep.fold(2).test
    speaker = {r.path: r.speaker for r in prep.records}
    assert {speaker[p] for p in fd.val_paths} == set(fd.val_speakers) and len(fd.val_speakers) == 1
    assert not {speaker[p] for p in fd.train_paths} & set(fd.val_speakers)
    for part, ds, n in (("train", fd.train(8), 48), ("val", fd.val(8), 16), ("test", fd.test(8), 16)):
        x, y = next(iter(ds))
        assert x.dtype == tf.float32 and y.dtype == tf.int32 and x.shape[1:] == (13, 16, 1)
        assert fd.size(part) == n and fd.steps(part, 8) == n // 8
        xa, ya = _concat(ds)
        assert xa.shape == (n, 13, 16, 1) and sorted(ya) == sorted(fd.labels(part))
    x_test, y_test = _concat(fd.test(8))  # unshuffled: in path order
    np.testing.assert_array_equal(y_test, prep.labels(fd.test_paths))
    np.testing.assert_allclose(x_test, fd.arrays("test")[0])


@pytest.mark.parametrize("mode", ["coefficient", "global", "none"])
def test_normalisation_from_train_part_only(prepared, mode):
    config, prep = prepared
    config.data.normalize = mode
    fd = make_fold_data(prep, 1, config)
    raw = prep.features(fd.train_paths).astype(np.float64)
    if mode == "coefficient":
        mean, std = raw.mean(axis=(0, 2))[:, None, None], raw.std(axis=(0, 2))[:, None, None]
    elif mode == "global":
        mean, std = np.full((1, 1, 1), raw.mean()), np.full((1, 1, 1), raw.std())
    else:
        mean, std = np.zeros((1, 1, 1)), np.ones((1, 1, 1))
    np.testing.assert_allclose(fd.mean, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fd.std, std, rtol=1e-5)
    x_test = prep.features(fd.test_paths)[..., None]
    np.testing.assert_allclose(fd.arrays("test")[0], (x_test - mean) / std, rtol=1e-4, atol=1e-4)
    if mode != "none":
        # Statistics of train+val+test would differ: the held-out parts do not leak into them.
        everything = prep.features(fd.train_paths + fd.val_paths + fd.test_paths)
        assert not np.allclose(everything.mean(axis=(0, 2)) if mode == "coefficient" else everything.mean(), fd.mean.ravel())


def test_speaker_normalisation_uses_each_speakers_own_utterances(prepared):
    config, prep = prepared
    config.data.normalize = "speaker"
    fd = make_fold_data(prep, 1, config)
    speaker = {r.path: r.speaker for r in prep.records}
    for part, paths in (("train", fd.train_paths), ("val", fd.val_paths), ("test", fd.test_paths)):
        expected = []
        for p in paths:  # independently: each utterance with the mean/std of all frames of its speaker's files
            own = np.stack([prep.features([q])[0] for q in speaker if speaker[q] == speaker[p]]).astype(np.float64)
            mean, std = own.mean(axis=(0, 2))[:, None], own.std(axis=(0, 2))[:, None]
            expected.append((prep.features([p])[0] - mean) / std)
        np.testing.assert_allclose(fd.arrays(part)[0][..., 0], np.stack(expected), rtol=1e-4, atol=1e-4)
    assert fd.mean.ravel().tolist() == [0.0] and fd.std.ravel().tolist() == [1.0]  # nothing on top of it


def test_per_speaker_statistics_names_a_speaker_without_utterances(prepared):
    from emodarts_tf.data.pipeline import per_speaker_statistics

    _, prep = prepared
    with pytest.raises(ValueError, match="nobody"):
        per_speaker_statistics(prep.records, prep.features, ["nobody"])


def test_seeded_shuffle_reproducible_and_reshuffled_each_epoch(prepared):
    config, prep = prepared

    def two_epochs(seed):
        config.seed = seed
        ds = make_fold_data(prep, 1, config).train(48, augment=False)
        return [_concat(ds)[1] for _ in range(2)]

    first, second = two_epochs(5), two_epochs(5)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # a new order every epoch
    assert sorted(first[0]) == sorted(first[1])
    assert not np.array_equal(first[0], two_epochs(6)[0])


def test_search_split_disjoint_covering_stratified(prepared):
    config, prep = prepared
    config.data.weights_fraction = 0.75
    fd = make_fold_data(prep, 3, config)
    w, a = set(fd.weights_paths), set(fd.alphas_paths)
    assert not w & a and w | a == set(fd.train_paths)
    assert len(w) == 36 and len(a) == 12  # 48 x 0.75; each class: 9 + 3
    assert set(np.bincount(fd.labels("weights"))) == {9} and set(np.bincount(fd.labels("alphas"))) == {3}
    assert not w & set(fd.val_paths)
    again = make_fold_data(prep, 3, config)
    assert again.weights_paths == fd.weights_paths  # seeded
    weights_ds, alphas_ds = fd.search_split(16)
    x_w, x_a = fd.arrays("weights")[0], fd.arrays("alphas")[0]
    steps = 2 * fd.steps("weights", 16) + 1  # past the end of both parts: both repeat
    for (xw, yw), (xa, ya) in tf.data.Dataset.zip((weights_ds, alphas_ds)).take(steps):
        assert xw.shape == (16, 13, 16, 1) and xa.shape == (16, 13, 16, 1)
        for row in xw.numpy():
            assert np.any(np.all(x_w == row, axis=(1, 2, 3)))
        for row in xa.numpy():
            assert np.any(np.all(x_a == row, axis=(1, 2, 3)))


def test_speaker_split_keeps_each_speaker_on_one_side_with_both_genders_on_both():
    from emodarts_tf.data.pipeline import speaker_split

    counts = {"m1": 30, "m2": 22, "m3": 34, "f1": 39, "f2": 42, "f3": 21}
    speakers = [s for s, n in counts.items() for _ in range(n)]
    rng = np.random.default_rng(0)
    speakers = list(rng.permutation(speakers))  # utterances in any order
    gender = {s: s[0].upper() for s in counts}
    for seed in range(20):
        first, second = speaker_split(speakers, gender, 0.5, seed)
        assert sorted(np.concatenate([first, second]).tolist()) == list(range(len(speakers)))
        side1 = {speakers[i] for i in first}
        side2 = {speakers[i] for i in second}
        assert not side1 & side2 and side1 | side2 == set(counts)
        assert {gender[s] for s in side1} == {gender[s] for s in side2} == {"M", "F"}
        # Greedy by share: no side is short of its half by more than the largest speaker.
        assert abs(len(first) - len(second)) <= max(counts.values())
        again = speaker_split(speakers, gender, 0.5, seed)
        np.testing.assert_array_equal(again[0], first)
    draws = {tuple(speaker_split(speakers, gender, 0.5, seed)[0]) for seed in range(20)}
    assert len(draws) > 1  # the seed chooses which speakers
    first, second = speaker_split(speakers, gender, 0.75, 0)
    assert len(first) > len(second)
    with pytest.raises(ValueError, match=r"1 speaker\(s\) \['m1'\]"):
        speaker_split(["m1"] * 5, gender, 0.5, 0)
    with pytest.raises(ValueError, match="weights_fraction.*1.5"):
        speaker_split(speakers, gender, 1.5, 0)


def test_speaker_search_split_in_a_fold(prepared):
    config, prep = prepared
    config.data.search_split = "speaker"
    fd = make_fold_data(prep, 3, config)
    speaker = {r.path: r.speaker for r in prep.records}
    w = {speaker[p] for p in fd.weights_paths}
    a = {speaker[p] for p in fd.alphas_paths}
    assert not w & a and w and a and w | a == {speaker[p] for p in fd.train_paths}
    assert sorted(fd.weights_paths + fd.alphas_paths) == sorted(fd.train_paths)
    np.testing.assert_array_equal(fd.arrays("weights")[1], prep.labels(fd.weights_paths))
    config.data.search_split = "session"
    with pytest.raises(ValueError, match="data.search_split.*'session'"):
        make_fold_data(prep, 3, config)


def test_spec_augment_masks_train_batches_only(prepared):
    config, prep = prepared
    sa = config.data.spec_augment
    sa.enabled, sa.time_mask, sa.freq_mask, sa.num_masks = True, 6, 5, 2
    fd = make_fold_data(prep, 1, config)
    x_train = fd.arrays("train")[0]
    x_aug, _ = _concat(fd.train(16, shuffle=False))
    changed = x_aug != x_train
    assert changed.any() and np.all(x_aug[changed] == 0.0)
    for example, mask in zip(x_aug[..., 0], changed[..., 0]):
        # Masked values fill whole coefficient rows or whole frame columns.
        rows = np.all(example == 0, axis=1)
        cols = np.all(example == 0, axis=0)
        assert not np.any(mask & ~(rows[:, None] | cols[None, :]))
        assert rows.sum() <= 2 * 5 and cols.sum() <= 2 * 6
    np.testing.assert_array_equal(_concat(fd.train(16, shuffle=False, augment=False))[0], x_train)
    np.testing.assert_array_equal(_concat(fd.val(16))[0], fd.arrays("val")[0])
    np.testing.assert_array_equal(_concat(fd.test(16))[0], fd.arrays("test")[0])
    sa.time_mask = 16
    with pytest.raises(ValueError, match="time_mask < 16"):
        make_fold_data(prep, 1, config)


def test_official_development_split_is_the_validation_part(msp_podcast_root, make_config):
    config = make_config("msp-podcast", msp_podcast_root())
    prep = prepare(config, progress=False)
    fd = make_fold_data(prep, 1, config)
    split = {r.path: r.split for r in prep.records}
    assert {split[p] for p in fd.val_paths} == {"Development"} and len(fd.val_paths) == 2
    assert {split[p] for p in fd.train_paths} == {"Train"} and {split[p] for p in fd.test_paths} == {"Test1"}
    assert fd.val_speakers == ["200", "201"]


@pytest.mark.parametrize("mode", ["coefficient", "global"])
def test_normalization_stats_in_blocks_equal_numpy_over_the_whole_part(monkeypatch, mode):
    """Blocks of 3 utterances (the last one short) give NumPy's float64 mean and std of the whole part; a constant
    coefficient gets std 1."""
    from emodarts_tf.data import pipeline as P

    monkeypatch.setattr(P, "NORM_BLOCK", 3)
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(10, 5, 6)) * 4 + 3).astype(np.float32)
    x[:, 2, :] = -1.5
    mean, std = P.normalization_stats(x, mode)
    x64 = x.astype(np.float64)
    axes, keep = ((0, 2), (-1, 1, 1)) if mode == "coefficient" else (None, (1, 1, 1))
    expected_mean = np.reshape(x64.mean(axis=axes), keep)
    expected_std = np.reshape(x64.std(axis=axes), keep)
    expected_std = np.where(expected_std < 1e-6, 1.0, expected_std)
    assert mean.dtype == std.dtype == np.float32 and mean.shape == expected_mean.shape
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(std, expected_std, rtol=1e-6)
    if mode == "coefficient":
        assert std[2, 0, 0] == 1.0
