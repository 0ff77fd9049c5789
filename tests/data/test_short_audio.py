"""Very short audio is kept (zero-padded like any file) but reported: under max(0.25 s, 10 % of
features.duration_s), named with its duration and counted in the prepare summary."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from emodarts_tf.commands.prepare import main
from emodarts_tf.config import FeatureConfig
from emodarts_tf.data.features import audio_duration, find_short_audio, load_audio, short_audio_limit
from emodarts_tf.data.records import read_records

TINY = [
    "--set", "features.sample_rate=8000", "--set", "features.duration_s=0.5", "--set", "features.n_mfcc=13",
    "--set", "features.n_fft=256", "--set", "features.hop_length=128", "--set", "features.n_mels=26",
    "--set", "features.time_pool=2", "--no-progress",
]  # fmt: skip


def test_the_rule():
    assert short_audio_limit(FeatureConfig(duration_s=1.0)) == 0.25  # 0.25 s at least
    assert short_audio_limit(FeatureConfig(duration_s=3.0)) == pytest.approx(0.3)  # 10 % of a longer length
    assert short_audio_limit(FeatureConfig()) == pytest.approx(0.8)  # the paper's 8 s


def test_find_short_audio_ignores_unreadable_files(tmp_path, wav_writer, tiny_features):
    click = wav_writer(tmp_path / "click.wav", seconds=0.05)
    edge = wav_writer(tmp_path / "edge.wav", seconds=0.25)  # not shorter than the limit
    long = wav_writer(tmp_path / "long.wav", seconds=0.4)
    (tmp_path / "notes.wav").write_text("not audio\n")
    (tmp_path / "empty.wav").write_bytes(b"")
    assert audio_duration(click) == pytest.approx(0.05)
    assert audio_duration(tmp_path / "notes.wav") is None
    paths = [click, edge, long, tmp_path / "notes.wav", tmp_path / "empty.wav", tmp_path / "missing.wav"]
    assert find_short_audio(paths, tiny_features) == {str(click): pytest.approx(0.05)}
    assert np.count_nonzero(load_audio(click, tiny_features)[400:]) == 0  # kept: zero-padded as before


def test_prepare_summary_names_and_counts_short_files(tmp_path, csv_corpus, wav_writer, caplog):
    manifest = csv_corpus(n_speakers=2, per_class=2)
    short = [manifest.parent / "audio/spk0/ang_0.wav", manifest.parent / "audio/spk1/sad_1.wav"]
    wav_writer(short[0], seconds=0.05)
    wav_writer(short[1], seconds=0.1)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert main(["--data", "csv", "--root", str(manifest), "--out", str(out), "--cache", str(tmp_path / "cache"),
                     *TINY]) == 0  # fmt: skip
    assert "2 very short file(s) (under 0.25 s, i.e. max(0.25 s, 10% of features.duration_s 0.5 s))" in caplog.text
    assert f"{short[0]}: 0.050 s" in caplog.text and f"{short[1]}: 0.100 s" in caplog.text
    kept = {r.path for r in read_records(out / "records.csv")}
    assert {str(p) for p in short} <= kept and len(kept) == 16  # reported, not dropped
