"""prepare(): records/folds tables, the feature cache (reuse, new config, resume), and bad files."""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emodarts_tf.data import cache as cache_module
from emodarts_tf.data.cache import FeatureCache
from emodarts_tf.data.prepare import PreparedCorpus, prepare
from emodarts_tf.data.records import read_folds, read_records


def _add_bad_files(manifest: Path) -> dict:
    """Append empty, non-audio, truncated, silent and missing files to a manifest; {stem: problem}."""
    root = manifest.parent
    good = next((root / "audio").rglob("*.wav")).read_bytes()
    bad = root / "audio" / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "notes.wav").write_text("meeting notes, not audio\n" * 10)
    (bad / "truncated.wav").write_bytes(good[: len(good) // 3])
    sf.write(bad / "silent.wav", np.zeros(4000, np.float32), 16000, subtype="PCM_16")
    with manifest.open("a", newline="") as handle:
        writer = csv.writer(handle)
        for stem in ("empty", "notes", "truncated", "silent", "missing"):
            writer.writerow([f"audio/bad/{stem}.wav", "ang", "spk0", "1", "", "M"])
    return {
        "empty": "empty file",
        "notes": "not a readable audio file",
        "truncated": "truncated WAV file",
        "silent": "silent audio",
        "missing": "no such file",
    }


def test_prepare_writes_tables_and_reports_bad_files(csv_corpus, make_config, tmp_path, caplog):
    manifest = csv_corpus(n_speakers=4, per_class=2)
    expected = _add_bad_files(manifest)
    config = make_config("csv", manifest)
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        prepared = prepare(config, out_dir=out, progress=False)
    # The bad files are reported (by name, with the problem) and skipped; all the others are kept.
    problems = {Path(p.path).stem: p.problem for p in prepared.problems}
    assert set(problems) == set(expected)
    for stem, text in expected.items():
        assert text in problems[stem]
        assert any(f"{stem}.wav" in m and text in m for m in caplog.messages)
    assert len(prepared.records) == 32 and prepared.input_shape == (13, 16, 1)
    # The tables on disk.
    assert read_records(out / "records.csv") == prepared.records
    with (out / "records.csv").open() as handle:
        assert next(csv.reader(handle))[:5] == ["path", "label", "speaker", "session", "split"]
    folds = read_folds(out / "folds.json")
    assert folds == prepared.folds and len(folds) == 4
    raw = json.loads((out / "folds.json").read_text())
    assert set(raw[0]) == {"index", "name", "train", "test"} and set(raw[0]["train"]) == {"speakers", "paths"}
    meta = json.loads((out / "prepared.json").read_text())
    assert meta["synthetic"] is False and meta["summary"]["problems"] == 5
    assert {Path(p["path"]).stem for p in meta["problem_list"]} == set(expected)
    # Features and labels from the cache.
    fold = prepared.fold(2)
    x = prepared.features(fold.test)
    assert x.shape == (8, 13, 16) and x.dtype == np.float32
    assert prepared.labels(fold.test).dtype == np.int32
    assert [prepared.classes[i] for i in prepared.labels(fold.test)] == [prepared.record(p).label for p in fold.test]
    # Reopened from the output folder.
    again = PreparedCorpus.load(out)
    np.testing.assert_array_equal(again.features(fold.test), x)
    assert again.folds == prepared.folds and len(again.problems) == 5


def test_the_summary_line_names_the_kind_of_map(csv_corpus, make_config, tmp_path, caplog):
    # A log-mel map is fed to the input named "mfcc": the summary says which map it is.
    manifest = csv_corpus(n_speakers=4, per_class=2)
    config = make_config("csv", manifest)
    config.features = dataclasses.replace(config.features, kind="logmel")
    with caplog.at_level(logging.INFO, logger="emodarts_tf.data.prepare"):
        prepared = prepare(config, out_dir=tmp_path / "out", progress=False)
    shape = prepared.input_shape
    assert shape[0] == config.features.n_mels  # one row per mel band, not per coefficient
    assert any(f"features logmel {shape}" in m for m in caplog.messages), caplog.messages


def test_a_resumed_preparation_refuses_other_speakers_and_accepts_a_moved_corpus(csv_corpus, make_config, tmp_path,
                                                                                  caplog):
    manifest = csv_corpus(n_speakers=4, per_class=2)
    out = tmp_path / "run" / "data"
    first = prepare(make_config("csv", manifest), out_dir=out, progress=False)
    # The same corpus moved elsewhere (data.root may change on resume): the same speakers in every fold.
    moved = tmp_path / "moved"
    shutil.copytree(manifest.parent, moved)
    again = prepare(make_config("csv", moved / "manifest.csv"), out_dir=out, progress=False, resuming=True)
    assert [f.test_speakers for f in again.folds] == [f.test_speakers for f in first.folds]
    # The same speakers with an utterance fewer: resumed, with a warning per fold whose counts changed.
    rows = (moved / "manifest.csv").read_text().splitlines()
    (moved / "manifest.csv").write_text("\n".join(rows[:-1]) + "\n")
    with caplog.at_level(logging.WARNING, logger="emodarts_tf.data.prepare"):
        fewer = prepare(make_config("csv", moved / "manifest.csv"), out_dir=out, progress=False, resuming=True)
    changed = [f.index for f, g in zip(first.folds, fewer.folds) if (len(f.train), len(f.test)) != (len(g.train), len(g.test))]
    warned = [m for m in caplog.messages if "utterances now" in m]
    assert changed and len(warned) == len(changed)
    # Another corpus (other speakers, as many folds): refused before anything is written.
    other = csv_corpus(n_speakers=4, per_class=2, name="other")
    other.write_text(other.read_text().replace(",spk", ",talker"))  # the speaker column only
    written = (out / "folds.json").read_text()
    with pytest.raises(ValueError, match=r"folds\.json: 4 of its 4 speakers are not in the corpus now .*choose "
                                         r"another --out"):
        prepare(make_config("csv", other), out_dir=out, progress=False, resuming=True)
    assert (out / "folds.json").read_text() == written
    other_paths = [str(p) for p in sorted((other.parent / "audio").rglob("*.wav"))]
    assert len(other_paths) == 32
    assert FeatureCache(tmp_path / "cache", make_config("csv").features).status(other_paths)[0] == []  # not extracted
    # A new run into the folder (not resuming) writes the other corpus's tables.
    fresh = prepare(make_config("csv", other), out_dir=out, progress=False)
    assert read_folds(out / "folds.json")[0].train_speakers == fresh.folds[0].train_speakers


def test_check_same_folds_names_the_fold_and_the_speakers_that_moved(tmp_path):
    from emodarts_tf.data.prepare import check_same_folds
    from emodarts_tf.data.records import Fold, write_folds

    first = [Fold(1, "a", ["s1", "s2"], ["s3"], ["1.wav", "2.wav"], ["3.wav"]),
             Fold(2, "b", ["s1", "s3"], ["s2"], ["1.wav", "3.wav"], ["2.wav"])]  # fmt: skip
    write_folds(tmp_path / "folds.json", first)
    check_same_folds(tmp_path, first)  # the same folds
    swapped = [first[0], Fold(2, "b", ["s1", "s2"], ["s3"], ["1.wav", "2.wav"], ["3.wav"])]
    with pytest.raises(ValueError, match=r"fold 2's train speakers differ \(only there: \['s3'\], only now: \['s2'\]\)"):
        check_same_folds(tmp_path, swapped)
    with pytest.raises(ValueError, match=r"folds \[1, 2\] there, \[1\] now"):
        check_same_folds(tmp_path, first[:1])
    check_same_folds(tmp_path / "elsewhere", swapped)  # no earlier preparation: nothing to compare


def test_cache_reused_and_failures_reported_without_rereading(csv_corpus, make_config, monkeypatch):
    manifest = csv_corpus(n_speakers=2, per_class=1)
    _add_bad_files(manifest)
    config = make_config("csv", manifest)
    first = prepare(config, progress=False)
    x = first.features([r.path for r in first.records])

    def fail(*args, **kwargs):
        raise AssertionError("extract_mfcc called although the cache holds every file")

    monkeypatch.setattr(cache_module.F, "extract_mfcc", fail)
    second = prepare(config, progress=False)
    assert second.cache_dir == first.cache_dir
    assert sorted(map(str, second.problems)) == sorted(map(str, first.problems))
    np.testing.assert_array_equal(second.features([r.path for r in second.records]), x)


def test_other_feature_config_makes_a_new_cache(csv_corpus, make_config):
    config = make_config("csv", csv_corpus(n_speakers=2, per_class=1))
    first = prepare(config, progress=False)
    config.features.n_mfcc = 12
    second = prepare(config, progress=False)
    assert second.cache_dir != first.cache_dir and second.cache_dir.parent == first.cache_dir.parent
    assert second.input_shape == (12, 16, 1)
    manifest = json.loads((second.cache_dir / "manifest.json").read_text())
    assert manifest["feature_config"]["n_mfcc"] == 12 and second.cache_dir.name.endswith(manifest["feature_hash"])


def test_interrupted_extraction_resumes(csv_corpus, tiny_features, tmp_path, monkeypatch):
    manifest = csv_corpus(n_speakers=2, per_class=3)  # 24 files
    paths = sorted(str(p) for p in (manifest.parent / "audio").rglob("*.wav"))
    real = cache_module.F.extract_mfcc
    calls = []

    def interrupted(path, cfg):
        if len(calls) == 11:
            raise KeyboardInterrupt  # a kill in the middle of the third shard
        calls.append(path)
        return real(path, cfg)

    monkeypatch.setattr(cache_module.F, "extract_mfcc", interrupted)
    cache = FeatureCache(tmp_path / "cache", tiny_features)
    with pytest.raises(KeyboardInterrupt):
        cache.extract(paths, workers=1, progress=False, shard_size=5)
    # Two finished shards of 5 files survive; the third, unfinished one was never written.
    resumed = FeatureCache(tmp_path / "cache", tiny_features)
    cached, errors, todo = resumed.status(paths)
    assert len(cached) == 10 and not errors and len(todo) == 14
    assert sorted(p.name for p in resumed.dir.glob("shard-*.npy")) == ["shard-00000.npy", "shard-00001.npy"]

    calls.clear()
    monkeypatch.setattr(cache_module.F, "extract_mfcc", lambda p, c: (calls.append(p), real(p, c))[1])
    assert resumed.extract(paths, workers=1, progress=False, shard_size=5) == {}
    assert sorted(calls) == sorted(todo)  # only what was missing
    x = resumed.load(paths)
    np.testing.assert_allclose(x, np.stack([real(p, tiny_features) for p in paths]), rtol=1e-6, atol=1e-5)


def test_parallel_extraction_matches_serial_and_changed_files_are_redone(csv_corpus, tiny_features, tmp_path):
    manifest = csv_corpus(n_speakers=2, per_class=2)  # 16 files
    paths = sorted(str(p) for p in (manifest.parent / "audio").rglob("*.wav"))
    parallel = FeatureCache(tmp_path / "a", tiny_features)
    assert parallel.extract(paths, workers=2, progress=False) == {}
    assert len(list(parallel.dir.glob("shard-*.npy"))) > 1
    serial = FeatureCache(tmp_path / "b", tiny_features)
    serial.extract(paths, workers=1, progress=False)
    np.testing.assert_array_equal(parallel.load(paths), serial.load(paths))
    # A rewritten file is extracted again.
    target = paths[0]
    y, sr = sf.read(paths[1], dtype="float32")
    sf.write(target, y, sr, subtype="PCM_16")
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    assert serial.status(paths)[2] == [target]
    serial.extract(paths, workers=1, progress=False)
    np.testing.assert_array_equal(serial.load([target]), serial.load([paths[1]]))


_SLOW_EXTRACTION = """
import sys, time
from emodarts_tf.config import FeatureConfig
from emodarts_tf.data import cache as c
real = c.F.extract_mfcc
c.F.extract_mfcc = lambda p, cfg: (time.sleep(0.15), real(p, cfg))[1]
cfg = FeatureConfig(**eval(sys.argv[2]))
c.FeatureCache(sys.argv[1], cfg).extract(sys.argv[3:], workers=1, progress=False, shard_size=3)
"""


def test_killed_extraction_resumes(csv_corpus, tiny_features, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from dataclasses import asdict

    manifest = csv_corpus(n_speakers=2, per_class=3)  # 24 files, 0.15 s each in the child
    paths = sorted(str(p) for p in (manifest.parent / "audio").rglob("*.wav"))
    cache_dir = tmp_path / "cache"
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_EXTRACTION, str(cache_dir), repr(asdict(tiny_features)), *paths],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    cache = FeatureCache(cache_dir, tiny_features)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and child.poll() is None:
            if cache.manifest_path.is_file():
                cache = FeatureCache(cache_dir, tiny_features)
                if len(cache.status(paths)[0]) >= 6:
                    break
            time.sleep(0.05)
        assert child.poll() is None, "the extraction finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    resumed = FeatureCache(cache_dir, tiny_features)
    cached, errors, todo = resumed.status(paths)
    assert len(cached) >= 6 and todo and not errors
    assert resumed.extract(paths, workers=1, progress=False) == {}
    x = resumed.load(paths)
    fresh = FeatureCache(tmp_path / "fresh", tiny_features)
    fresh.extract(paths, workers=1, progress=False)
    np.testing.assert_array_equal(x, fresh.load(paths))
