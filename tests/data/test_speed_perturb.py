"""Speed perturbation (recipe.speed_perturb): the perturbed waveform against an independent resampling, the cached
copies against a direct computation, their per-speaker normalisation, and the per-example draw of versions."""
from __future__ import annotations

import numpy as np
import pytest

from emodarts_tf.data.features import load_audio, mfcc_from_waveform, read_audio
from emodarts_tf.data.perturbation import check_speed_factors, extract_speed_perturbed, speed_perturb
from emodarts_tf.data.pipeline import make_fold_data
from emodarts_tf.data.prepare import prepare
from emodarts_tf.evaluation.recipe import train_dataset


def test_speed_perturbation_scales_duration_and_frequency():
    sr, f0 = 16000, 200.0
    t = np.arange(sr) / sr
    y = np.sin(2 * np.pi * f0 * t).astype(np.float32)
    for factor in (0.9, 1.1):
        out = speed_perturb(y, sr, factor)
        assert abs(len(out) - len(y) / factor) <= 2
        spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
        peak = np.argmax(spectrum) * sr / len(out)
        assert abs(peak - f0 * factor) < 2.0, (factor, peak)
    np.testing.assert_array_equal(speed_perturb(y, sr, 1.0), y)


def test_speed_perturbation_equals_reading_the_file_at_another_rate(tmp_path, wav_writer, tiny_features):
    """Independently: soundfile's samples treated as recorded at factor * rate, resampled with scipy's polyphase
    filter to the feature rate, then padded and turned into MFCCs (the resamplers differ: close, not equal)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    path = wav_writer(tmp_path / "a.wav", seed=3, sr=8000, seconds=0.3)
    got = extract_speed_perturbed(path, tiny_features, 0.9)
    y, sr = sf.read(path, dtype="float32")
    assert sr == tiny_features.sample_rate
    slow = resample_poly(y, 10, 9).astype(np.float32)  # 0.9 x the rate -> 10/9 as many samples
    padded = np.zeros(int(tiny_features.sample_rate * tiny_features.duration_s), np.float32)
    padded[: len(slow)] = slow[: len(padded)]
    expected = mfcc_from_waveform(padded, tiny_features)
    assert got.shape == expected.shape
    original = mfcc_from_waveform(load_audio(path, tiny_features), tiny_features)

    def error(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    assert error(got, expected) < 0.04 and error(original, expected) > 5 * error(got, expected), (
        error(got, expected), error(original, expected))
    assert len(speed_perturb(read_audio(path, 8000), 8000, 0.9)) > len(read_audio(path, 8000))


@pytest.mark.parametrize("bad", [[1.0], [0.5], [1.3], 0.9, ["fast"], [0.9, 0.9]])
def test_speed_factors_are_checked(bad):
    with pytest.raises(ValueError, match="recipe.speed_perturb"):
        check_speed_factors(bad)
    assert check_speed_factors([0.9, 1.1]) == [0.9, 1.1] and check_speed_factors([]) == []


@pytest.fixture
def speed_fold(csv_corpus, make_config):
    config = make_config("csv", csv_corpus(n_speakers=4, per_class=2), normalize="speaker")
    config.recipe.speed_perturb = [0.9, 1.1]
    prep = prepare(config, progress=False)
    return config, prep, make_fold_data(prep, 1, config)


def test_fold_copies_equal_direct_extraction_normalised_per_perturbed_speaker(speed_fold):
    config, prep, fd = speed_fold
    speaker = {r.path: r.speaker for r in prep.records}
    assert fd.speed_factors == (0.9, 1.1) and fd._x_speed["train"].shape == (2, len(fd.train_paths), *fd.input_shape)
    for v, factor in enumerate((0.9, 1.1)):
        for part, paths in (("train", fd.train_paths), ("val", fd.val_paths)):
            got = fd._x_speed[part][v][..., 0]
            for row, p in zip(got, paths):
                own = np.stack([extract_speed_perturbed(q, config.features, factor)
                                for q in speaker if speaker[q] == speaker[p]]).astype(np.float64)  # fmt: skip
                mean, std = own.mean(axis=(0, 2))[:, None], own.std(axis=(0, 2))[:, None]
                expected = (extract_speed_perturbed(p, config.features, factor) - mean) / std
                np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-4)
    assert make_fold_data(prep, 1, config, speed_copies=False)._x_speed is None  # the search's folds


def test_each_example_is_drawn_from_its_versions_reproducibly(speed_fold):
    config, prep, fd = speed_fold
    versions = np.concatenate([fd._x["train"][None], fd._x_speed["train"]])  # (3, n, ...)
    batches = [(x.numpy(), y.numpy()) for x, y in fd.train(4, versions=True)]
    again = [(x.numpy(), y.numpy()) for x, y in fd.train(4, versions=True)]
    drawn = []
    for x, y in batches:
        for example, label in zip(x, y):
            matches = [(v, i) for v in range(3) for i in range(versions.shape[1]) if np.array_equal(versions[v, i], example)]
            assert len(matches) == 1 and fd.labels("train")[matches[0][1]] == label
            drawn.append(matches[0])
    assert sorted(i for _, i in drawn) == list(range(versions.shape[1]))  # one pass: every utterance once
    assert {v for v, _ in drawn} == {0, 1, 2}
    assert len(again) == len(batches)  # the next epoch: other versions, same sizes
    with pytest.raises(ValueError, match="speed-perturbed"):
        make_fold_data(prep, 1, config, speed_copies=False).train(4, versions=True)
    refit = fd.with_validation_in_training()
    assert refit._x_speed["train"].shape[1] == len(fd.train_paths) + len(fd.val_paths)


def test_recipe_batches_use_the_copies_only_when_asked(speed_fold):
    config, _, fd = speed_fold
    first = [x.numpy() for x, _ in train_dataset(fd, 4, config.recipe)]
    second = [x.numpy() for x, _ in train_dataset(fd, 4, config.recipe)]
    for a, b in zip(first, second):  # a fresh dataset: the same draws (per-batch stateless seeds)
        np.testing.assert_array_equal(a, b)
    originals = {fd._x["train"][i].tobytes() for i in range(fd.size("train"))}
    seen = [x.tobytes() for batch in first for x in batch]
    assert any(s not in originals for s in seen)
    config.recipe.speed_perturb = []
    plain = [x.numpy() for x, _ in train_dataset(fd, 4, config.recipe)]
    assert all(x.tobytes() in originals for batch in plain for x in batch)
