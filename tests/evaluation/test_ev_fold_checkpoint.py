"""The fingerprint comparison that decides whether a checkpoint may be resumed."""
from __future__ import annotations

from emodarts_tf.evaluation.fold_checkpoint import diff_keys


def test_settings_added_off_are_not_differences():
    saved = {"recipe": {"mixup": 0.2}, "seed": 0}
    assert diff_keys(saved, {"recipe": {"mixup": 0.2, "refit": False, "ema": 0.0}, "seed": 0}) == []
    assert diff_keys(saved, {"recipe": {"mixup": 0.2, "refit": True}, "seed": 0}) == ["recipe.refit"]
    assert diff_keys(saved, {"recipe": {"mixup": 0.3}, "seed": 0}) == ["recipe.mixup"]
    assert diff_keys(saved, {"recipe": {}, "seed": 0}) == ["recipe.mixup"]  # removed: a difference
    assert diff_keys(saved, {"recipe": {"mixup": 0.2}, "seed": 0, "space": {"width": 4}}) == ["space"]


def test_settings_added_at_a_default_that_reproduces_old_runs_are_not_differences():
    saved = {"space": {"dropout": 0.0}, "seed": 0}
    assert diff_keys(saved, {"space": {"dropout": 0.0, "pooling": "mean"}, "seed": 0}) == []
    assert diff_keys(saved, {"space": {"dropout": 0.0, "pooling": "mean_std"}, "seed": 0}) == ["space.pooling"]
    assert diff_keys({"pooling": "x"}, {"pooling": "mean"}) == ["pooling"]
    old = {"features": {"n_mfcc": 40}, "seed": 0}
    new = {"features": {"n_mfcc": 40, "kind": "mfcc", "window_ms": 25.0, "hop_ms": 11.0, "freq_bins": 128},
           "frames": {"source": "opensmile", "frames": 200}, "seed": 0}
    assert diff_keys(old, new) == []  # saved before the spectrogram kind and the frame stream existed
    assert diff_keys(old, {**new, "features": {**new["features"], "kind": "spectrogram"}}) == ["features.kind"]
    assert diff_keys({**new, "frames": {"frames": 100}}, new) == ["frames.frames", "frames.source"]


def test_features_compare_on_the_fields_their_kind_reads():
    """A log-mel run ignores the spectrogram's window and n_mfcc, a spectrogram the mel-scale fields: changing
    them changes no map and resumes; a field the kind reads, or the kind itself, is a difference."""
    logmel = {"kind": "logmel", "n_mels": 40, "n_mfcc": 40, "window_ms": 25.0, "hop_ms": 11.0, "freq_bins": 128}
    assert diff_keys({"features": logmel}, {"features": {**logmel, "window_ms": 32.0, "n_mfcc": 13}}) == []
    assert diff_keys({"features": logmel}, {"features": {**logmel, "n_mels": 64}}) == ["features.n_mels"]
    spec = {"kind": "spectrogram", "n_mels": 64, "freq_bins": 40}
    assert diff_keys({"features": spec}, {"features": {**spec, "n_mels": 40, "n_fft": 512}}) == []
    assert diff_keys({"features": spec}, {"features": {**spec, "freq_bins": 64}}) == ["features.freq_bins"]
    mfcc = {"n_mfcc": 40, "n_mels": 64}  # saved before features.kind existed: an MFCC run
    assert diff_keys({"features": mfcc}, {"features": {**mfcc, "kind": "mfcc", "freq_bins": 40}}) == []
    assert diff_keys({"features": mfcc}, {"features": {**mfcc, "kind": "logmel"}}) == ["features.kind"]
    assert diff_keys({"features": {**mfcc, "future": 1}}, {"features": mfcc}) == ["features.future"]
    # only the top-level section: a nested "features" key is compared as it is
    assert diff_keys({"a": {"features": logmel}}, {"a": {"features": {**logmel, "window_ms": 32.0}}}) == [
        "a.features.window_ms"]


def test_a_feature_field_missing_from_an_old_run_is_forgiven_only_at_its_added_default():
    """Only features.kind / window_ms / hop_ms / freq_bins were added after runs were saved; any other field a
    saved section lacks is compared as missing (a difference unless off), not filled with today's default."""
    old = {"features": {"n_mfcc": 40}}
    assert diff_keys(old, {"features": {"n_mfcc": 40, "sample_rate": 16000}}) == ["features.sample_rate"]
    assert diff_keys(old, {"features": {"n_mfcc": 40, "fmin": 0.0}}) == []  # off
    assert diff_keys(old, {"features": {"n_mfcc": 40, "kind": "mfcc", "hop_ms": 11.0}}) == []
