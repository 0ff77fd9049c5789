"""The feature cache's journal: every finished shard is recorded at once, the manifest is rewritten only when
the journal has grown as large as it, and what a reader sees is always the writer's state."""
from __future__ import annotations

import json
import logging
from functools import partial

import numpy as np
import pytest

import emodarts_tf.data.cache as cache_module
from emodarts_tf.data.cache import Extractor, FeatureCache

SHAPE = (2, 3)


def _value(path: str) -> np.ndarray:
    """The features the fake extractor gives ``path``: its number, so every row can be checked."""
    return np.full(SHAPE, float(path.rsplit("-", 1)[1]), dtype=np.float32)


def _extract(path: str, fail=()) -> np.ndarray:
    if path in fail:
        raise ValueError("unreadable")
    return _value(path)


def _extractor(fail=()) -> Extractor:
    # Paths that do not exist: entries are dated (None, None) and stay fresh, so no audio is needed.
    return Extractor(kind="fake", key="k0", shape=SHAPE, config={}, extract=partial(_extract, fail=frozenset(fail)),
                     in_process=True)


def _paths(n: int, start: int = 0) -> list:
    return [f"/nonexistent/utt-{i}" for i in range(start, start + n)]


def _state(cache: FeatureCache) -> tuple:
    return dict(cache._files), dict(cache._shards)


def test_a_reader_sees_the_writers_state_after_every_shard(tmp_path, monkeypatch):
    paths = _paths(40)
    bad = {paths[5], paths[33]}
    writer = FeatureCache(tmp_path, _extractor(fail=bad))
    seen = {"journal": 0, "checks": 0}
    real_store = FeatureCache._store

    def store_then_read(self, *args):
        real_store(self, *args)
        if self is writer:
            seen["journal"] += self.journal_path.is_file()
            assert _state(FeatureCache(tmp_path, _extractor())) == _state(self)
            seen["checks"] += 1

    monkeypatch.setattr(FeatureCache, "_store", store_then_read)
    errors = writer.extract(paths, workers=1, progress=False, shard_size=3)
    assert seen["checks"] == 14 and seen["journal"] > 0  # 14 chunks of at most 3; some recorded in the journal only
    assert set(errors) == bad and all("unreadable" in e for e in errors.values())
    assert not writer.journal_path.exists()  # folded into the manifest when the extraction finished
    reader = FeatureCache(tmp_path, _extractor())
    assert _state(reader) == _state(writer)
    good = [p for p in paths if p not in bad]
    np.testing.assert_array_equal(reader.load(good), np.stack([_value(p) for p in good]))
    assert reader.errors(paths) == errors


def test_manifest_writes_grow_linearly_with_the_corpus(tmp_path, monkeypatch):
    written = {"manifest": 0, "journal": 0, "rewrites": 0}
    real_write_json, real_append = cache_module.write_json, cache_module.append_durably

    def counting_write_json(path, obj):
        out = real_write_json(path, obj)
        if out.name == "manifest.json":  # not the lock holder's note
            written["manifest"] += out.stat().st_size
            written["rewrites"] += 1
        return out

    def counting_append(path, data):
        written["journal"] += len(data)
        return real_append(path, data)

    monkeypatch.setattr(cache_module, "write_json", counting_write_json)
    monkeypatch.setattr(cache_module, "append_durably", counting_append)
    paths = _paths(1200)
    cache = FeatureCache(tmp_path, _extractor())
    cache.extract(paths, workers=1, progress=False, shard_size=4)  # 300 shards
    total, rewrites = written["manifest"] + written["journal"], written["rewrites"]
    final = cache.manifest_path.stat().st_size  # the whole state, written when the extraction finished
    # A rewrite after every shard would write the growing manifest 300 times, about 150 x its final size.
    assert total < 5 * final and rewrites < 20
    np.testing.assert_array_equal(FeatureCache(tmp_path, _extractor()).load(paths), np.stack([_value(p) for p in paths]))


def test_a_cut_off_or_damaged_journal_line_loses_only_its_own_shard(tmp_path, caplog):
    # A manifest of 30 files outweighs the three 4-file records, so they stay in the journal.
    first, second, third, fourth = _paths(30), _paths(4, 30), _paths(4, 34), _paths(4, 38)
    cache = FeatureCache(tmp_path, _extractor())
    cache.extract(first, workers=1, progress=False)
    cache._write_manifest()  # a fresh manifest, no journal
    assert cache.manifest_path.is_file() and not cache.journal_path.exists()
    # Three shards recorded in the journal, as an extraction killed before its end leaves them.
    for part in (second, third, fourth):
        cache._store(part, np.stack([_value(p) for p in part]), {}, cache._next_shard_index())
    lines = cache.journal_path.read_bytes().split(b"\n")
    assert len(lines) == 4 and lines[-1] == b""
    damaged = json.loads(lines[0])
    damaged["shards"] = {name: {"rows": "many"} for name in damaged["shards"]}
    # The second part's line damaged, the third's whole after it, the fourth's cut off in the middle by a kill.
    cache.journal_path.write_bytes(json.dumps(damaged).encode() + b"\n" + lines[1] + b"\n" + lines[2][:40])

    with caplog.at_level(logging.INFO, logger=cache_module.__name__):
        reader = FeatureCache(tmp_path, _extractor())
    cached, errors, todo = reader.status(first + second + third + fourth)
    assert sorted(cached) == sorted(first + third) and not errors and sorted(todo) == sorted(second + fourth)
    assert any("record 1 is unusable" in m for m in caplog.messages)
    assert any("last record is cut off" in m for m in caplog.messages)

    # The next extraction writes the state anew before appending (the cut-off line would spoil the next one),
    # and extracts only the rest.
    assert reader.extract(first + second + third + fourth, workers=1, progress=False) == {}
    assert not reader.journal_path.exists()  # a finished extraction leaves one manifest
    everything = first + second + third + fourth
    again = FeatureCache(tmp_path, _extractor())
    assert sorted(again.status(everything)[0]) == sorted(everything)
    np.testing.assert_array_equal(again.load(everything), np.stack([_value(p) for p in everything]))


def test_an_interrupted_extraction_keeps_its_finished_shards(tmp_path):
    paths = _paths(20)

    def interrupted(path):
        if path == paths[13]:
            raise KeyboardInterrupt
        return _value(path)

    extractor = Extractor(kind="fake", key="k0", shape=SHAPE, config={}, extract=interrupted, in_process=True)
    with pytest.raises(KeyboardInterrupt):
        FeatureCache(tmp_path, extractor).extract(paths, workers=1, progress=False, shard_size=3)
    cached, _, todo = FeatureCache(tmp_path, _extractor()).status(paths)
    assert sorted(cached) == sorted(paths[:12]) and sorted(todo) == sorted(paths[12:])  # 4 chunks of 3 finished


def test_a_reader_racing_a_manifest_rewrite_reads_again(tmp_path, monkeypatch):
    writer = FeatureCache(tmp_path, _extractor())
    writer.extract(_paths(30), workers=1, progress=False)
    for part in (_paths(4, 30), _paths(4, 34)):
        writer._store(part, np.stack([_value(p) for p in part]), {}, writer._next_shard_index())
    assert writer.journal_path.is_file()
    real = FeatureCache._journal_records
    calls = []

    def rewritten_first(self):
        # Between this reader's manifest read and its journal read, the writer rewrites the manifest and
        # removes the journal, whose records the reader has not seen.
        calls.append(self.journal_path.exists())
        if len(calls) == 1:
            writer._write_manifest()
        return real(self)

    monkeypatch.setattr(FeatureCache, "_journal_records", rewritten_first)
    reader = FeatureCache(tmp_path, _extractor())
    assert calls == [True, False]  # read again, from the rewritten manifest
    assert _state(reader) == _state(writer) and len(reader.status(_paths(38))[0]) == 38


def test_a_journal_record_of_another_extractor_is_refused(tmp_path, caplog):
    cache = FeatureCache(tmp_path, _extractor())
    cache.extract(_paths(3), workers=1, progress=False)
    foreign = {"feature_hash": "other", "shards": {}, "files": {"/nonexistent/utt-99": {"error": "x"}}}
    cache.journal_path.write_text(json.dumps(foreign) + "\n")
    with caplog.at_level(logging.WARNING, logger=cache_module.__name__):
        reader = FeatureCache(tmp_path, _extractor())
    assert "/nonexistent/utt-99" not in reader._files
    assert any("feature hash 'other'" in m for m in caplog.messages)


def test_a_journal_without_a_usable_manifest_is_not_read_and_is_replaced(tmp_path, caplog):
    cache = FeatureCache(tmp_path, _extractor())
    cache.extract(_paths(30), workers=1, progress=False)
    part = _paths(4, 30)
    cache._store(part, np.stack([_value(p) for p in part]), {}, cache._next_shard_index())
    assert cache.journal_path.is_file()
    cache.manifest_path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger=cache_module.__name__):
        reader = FeatureCache(tmp_path, _extractor())
    assert reader.status(_paths(34))[0] == []  # neither the manifest's entries nor the journal's
    assert any("is not read either" in m for m in caplog.messages)
    assert reader.extract(_paths(34), workers=1, progress=False) == {}
    assert not reader.journal_path.exists()
    again = FeatureCache(tmp_path, _extractor())
    np.testing.assert_array_equal(again.load(_paths(34)), np.stack([_value(p) for p in _paths(34)]))


@pytest.mark.parametrize("size", [0, 5])
def test_append_durably_appends_and_returns_the_size(tmp_path, size):
    path = tmp_path / "log"
    if size:
        path.write_bytes(b"x" * size)
    assert cache_module.append_durably(path, b"abc\n") == size + 4
    assert cache_module.append_durably(path, b"de\n") == size + 7
    assert path.read_bytes() == b"x" * size + b"abc\nde\n"
