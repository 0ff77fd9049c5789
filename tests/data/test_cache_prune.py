"""FeatureCache.prune: the shards that no entry reads any more, unrecorded shard files and the temporary files of
killed writes are deleted; everything an entry reads stays and loads as before."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from emodarts_tf.data.cache import Extractor, FeatureCache

SHAPE = (2, 3)


def _read(path: str) -> np.ndarray:
    """The fake extractor: the number written in the file, broadcast to SHAPE."""
    with open(path) as handle:
        return np.full(SHAPE, float(handle.read()), dtype=np.float32)


def _extractor() -> Extractor:
    return Extractor(kind="fake", key="k0", shape=SHAPE, config={}, extract=_read, in_process=True)


def _write(paths, offset: int, mtime: int) -> None:
    for i, path in enumerate(paths):
        with open(path, "w") as handle:
            handle.write(str(i + offset))
        os.utime(path, ns=(mtime, mtime))


def _referenced(folder) -> set:
    """Shard names that manifest.json's entries read, from the file itself (the journal is folded in by then)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return {e["shard"] for e in manifest["files"].values() if "shard" in e}


def _shard_files(folder) -> set:
    return {p.name for p in folder.iterdir() if p.name.startswith("shard-")}


def _extracted(tmp_path, n: int) -> tuple:
    """``(paths, cache)``: ``n`` files holding 0 .. n-1, extracted in chunks of ceil(n / 4) (shard_size 4)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    paths = [str(audio / f"utt-{i}.txt") for i in range(n)]
    _write(paths, 0, 10**18)
    cache = FeatureCache(tmp_path / "cache", _extractor())
    cache.extract(paths, workers=1, progress=False, shard_size=4)
    return paths, cache


def test_prune_deletes_shards_whose_files_were_all_extracted_again(tmp_path):
    paths, cache = _extracted(tmp_path, 10)  # chunks of 3: files 0-2, 3-5, 6-8, 9
    assert _shard_files(cache.dir) == {f"shard-0000{i}.npy" for i in range(4)}
    # Files 0-4 change: shard 0 (files 0-2) is read by nothing now; shard 1 (files 3-5) keeps 1 live row.
    _write(paths[:5], 100, 2 * 10**18)
    cache.extract(paths, workers=1, progress=False, shard_size=4)
    (cache.dir / "shard-00099.npy").write_bytes(b"written, never recorded")
    (cache.dir / ".shard-00100.npy.abc123.tmp").write_bytes(b"a killed atomic write")
    (cache.dir / ".manifest.json.xyz.tmp").write_bytes(b"{")
    expected = [100 + i for i in range(5)] + list(range(5, 10))

    report = FeatureCache(tmp_path / "cache", _extractor()).prune()

    assert sorted(report.removed) == [".manifest.json.xyz.tmp", ".shard-00100.npy.abc123.tmp", "shard-00000.npy",
                                      "shard-00099.npy"]
    assert report.stale_rows == 2 and report.stale_bytes == 2 * 4 * 2 * 3  # files 3 and 4 in shard 1
    assert report.freed_bytes > 0
    assert _shard_files(cache.dir) == _referenced(cache.dir)
    assert "shard-00000.npy" not in json.loads((cache.dir / "manifest.json").read_text())["shards"]
    again = FeatureCache(tmp_path / "cache", _extractor())
    assert sorted(again.status(paths)[0]) == sorted(paths)  # nothing to extract again
    np.testing.assert_array_equal(again.load(paths)[:, 0, 0], np.asarray(expected, dtype=np.float32))
    second = again.prune()
    assert second.removed == () and second.freed_bytes == 0 and second.stale_rows == 2


def test_prune_leaves_shard_files_alone_without_a_usable_manifest(tmp_path):
    cache = FeatureCache(tmp_path, _extractor())
    cache.dir.mkdir(parents=True)
    (cache.dir / "shard-00000.npy").write_bytes(b"x")
    (cache.dir / "manifest.json").write_text("{not json")
    report = cache.prune()
    assert report.removed == () and (cache.dir / "shard-00000.npy").exists()
    assert FeatureCache(tmp_path / "none", _extractor()).prune().removed == ()  # no folder: nothing to do


def _fake(path: str) -> np.ndarray:
    """Features of the paths that do not exist (entries dated (None, None), always fresh): the path's number."""
    return np.full(SHAPE, float(path.rsplit("-", 1)[1]), dtype=np.float32)


def _fake_extractor() -> Extractor:
    return Extractor(kind="fake", key="k0", shape=SHAPE, config={}, extract=_fake, in_process=True)


def test_prune_reads_the_journal_and_rewrites_the_manifest_before_deleting(tmp_path, monkeypatch):
    first = [f"/nonexistent/utt-{i}" for i in range(30)]
    second, third = [f"/nonexistent/utt-{i}" for i in range(30, 34)], [f"/nonexistent/utt-{i}" for i in range(34, 38)]
    cache = FeatureCache(tmp_path, _fake_extractor())
    cache.extract(first, workers=1, progress=False)
    cache._write_manifest()
    # Two shards recorded in the journal only (as a killed extraction leaves them), the second line cut off.
    for part in (second, third):
        cache._store(part, np.stack([_fake(p) for p in part]), {}, cache._next_shard_index())
    lines = cache.journal_path.read_bytes().split(b"\n")
    cache.journal_path.write_bytes(lines[0] + b"\n" + lines[1][:40])
    (journal_only,) = json.loads(lines[0])["shards"]
    (cut_off,) = json.loads(lines[1])["shards"]
    sizes = {cut_off: (cache.dir / cut_off).stat().st_size}
    deleted = []
    real_unlink = type(cache.dir).unlink

    def unlink_checked(path, *args, **kwargs):
        if path.name.startswith("shard-"):
            assert path.name not in json.loads((path.parent / "manifest.json").read_text())["shards"]
            deleted.append(path.name)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(type(cache.dir), "unlink", unlink_checked)
    report = FeatureCache(tmp_path, _fake_extractor()).prune()
    assert report.removed == (cut_off,) and deleted == [cut_off] and report.freed_bytes == sizes[cut_off]
    assert not cache.journal_path.exists() and journal_only in _referenced(cache.dir)
    again = FeatureCache(tmp_path, _fake_extractor())
    cached, _, todo = again.status(first + second + third)
    assert sorted(cached) == sorted(first + second) and sorted(todo) == sorted(third)


def test_a_pruned_shard_number_is_not_given_out_again(tmp_path):
    paths, cache = _extracted(tmp_path, 8)  # chunks of 2: shards 0-3
    last = cache._files[paths[-1]]["shard"]
    assert last == "shard-00003.npy"
    for path in paths[-2:]:  # the last shard's files are now unreadable: error entries, no new shard
        with open(path, "w") as handle:
            handle.write("not a number")
        os.utime(path, ns=(2 * 10**18, 2 * 10**18))
    errors = cache.extract(paths, workers=1, progress=False, shard_size=4)
    assert sorted(errors) == sorted(paths[-2:])
    assert FeatureCache(tmp_path / "cache", _extractor()).prune().removed == (last,)
    _write(paths[-2:], 50, 3 * 10**18)
    again = FeatureCache(tmp_path / "cache", _extractor())
    assert again.extract(paths, workers=1, progress=False, shard_size=4) == {}
    # Chunks of 1: shards 4 and 5, not 3 again (a reader holding the state before the prune may name it).
    assert [again._files[p]["shard"] for p in paths[-2:]] == ["shard-00004.npy", "shard-00005.npy"]
    np.testing.assert_array_equal(again.load(paths)[:, 0, 0], np.asarray([0, 1, 2, 3, 4, 5, 50, 51], np.float32))


def test_an_unreadable_journal_stops_prune_before_it_deletes_anything(tmp_path):
    cache = FeatureCache(tmp_path, _fake_extractor())
    cache.extract([f"/nonexistent/utt-{i}" for i in range(4)], workers=1, progress=False)
    (cache.dir / "shard-00007.npy").write_bytes(b"a shard the unreadable journal may record")
    cache.journal_path.mkdir()  # reading it raises IsADirectoryError, an OSError
    with pytest.raises(ValueError, match="manifest.journal: unreadable.*nothing pruned"):
        FeatureCache(tmp_path, _fake_extractor()).prune()
    assert (cache.dir / "shard-00007.npy").exists()
