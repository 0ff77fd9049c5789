"""The prepare command on miniature trees and on the real EmoDB."""
from __future__ import annotations

import json
import logging
import os

import pytest

from emodarts_tf.commands.prepare import main
from emodarts_tf.data.records import read_folds, read_records

TINY = [
    "--set", "features.sample_rate=8000", "--set", "features.duration_s=0.5", "--set", "features.n_mfcc=13",
    "--set", "features.n_fft=256", "--set", "features.hop_length=128", "--set", "features.n_mels=26",
    "--set", "features.time_pool=2", "--no-progress",
]  # fmt: skip


def test_cli_iemocap_emodarts(iemocap_root, tmp_path):
    out = tmp_path / "out"
    argv = ["--data", "iemocap", "--root", str(iemocap_root), "--protocol", "emodarts", "--out", str(out)]
    assert main(argv + ["--cache", str(tmp_path / "cache"), "--workers", "1"] + TINY) == 0
    records = read_records(out / "records.csv")
    assert len(records) == 30 and all("_impro" in r.path for r in records)
    assert len(read_folds(out / "folds.json")) == 5
    meta = json.loads((out / "prepared.json").read_text())
    assert meta["protocol"] == "emodarts" and meta["selection"] == "improvised" and meta["input_shape"] == [13, 16, 1]


def test_cli_msp_corpora(msp_improv_root, msp_podcast_root, tmp_path):
    for corpus, root, folds in (("msp-improv", msp_improv_root, 6), ("msp-podcast", msp_podcast_root(), 1)):
        out = tmp_path / corpus
        argv = ["--data", corpus, "--root", str(root), "--out", str(out), "--cache", str(tmp_path / "cache")]
        assert main(argv + TINY) == 0
        assert len(read_folds(out / "folds.json")) == folds


def test_cli_emodb_real(emodb_root, tmp_path):
    out = tmp_path / "out"
    argv = ["--data", "emodb", "--root", str(emodb_root), "--out", str(out), "--cache", str(tmp_path / "cache")]
    assert main(argv + TINY) == 0
    assert len(read_records(out / "records.csv")) == 339
    assert [f.index for f in read_folds(out / "folds.json")] == [1, 2, 3, 4, 5]


def test_cli_errors(tmp_path, caplog):
    argv = ["--data", "emodb", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]
    assert main(argv + ["--cache", str(tmp_path / "cache")]) == 2
    assert any("nowhere" in m for m in caplog.messages)
    caplog.clear()
    assert main(["--data", "iemocap", "--out", str(tmp_path / "out")]) == 2  # no --root: one line, status 2
    assert any("--data iemocap needs --root" in m for m in caplog.messages)


def test_cli_prune_deletes_the_shards_of_a_corpus_copied_anew(csv_corpus, tmp_path, caplog):
    manifest = csv_corpus(n_speakers=4, per_class=2)
    cache = tmp_path / "cache"
    argv = ["--data", "csv", "--root", str(manifest), "--out", str(tmp_path / "out"), "--cache", str(cache),
            "--workers", "1"] + TINY  # fmt: skip
    assert main(argv) == 0
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    before = {p.name for p in folder.glob("shard-*.npy")}
    for wav in (manifest.parent / "audio").rglob("*.wav"):  # every file "copied anew": a later mtime
        st = wav.stat()
        os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(argv + ["--prune"]) == 0
    after = {p.name for p in folder.glob("shard-*.npy")}
    assert before and after and not before & after  # every old shard deleted, the new ones kept
    assert any(f"pruned {len(before)} file(s)" in m for m in caplog.messages)
    entries = json.loads((folder / "manifest.json").read_text())["files"].values()
    assert {e["shard"] for e in entries if "shard" in e} == after


def test_cli_prepares_and_prunes_both_streams_of_a_two_stream_config(csv_corpus, tmp_path, caplog):
    manifest = csv_corpus(n_speakers=4, per_class=1)
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["--data", "csv", "--root", str(manifest), "--out", str(out), "--cache", str(cache), "--workers", "1",
            "--set", "search.method=emotionnas", "--prune"] + TINY  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    meta = json.loads((out / "prepared.json").read_text())
    folders = sorted(p.name.split("-")[0] for p in cache.iterdir() if p.is_dir())
    assert folders == ["frames", "mfcc"] and meta["frames_cache_dir"].startswith(str(cache))
    assert sum("pruned 0 file(s)" in m for m in caplog.messages) == 2  # each stream's folder, nothing stale
