"""The open-file limit: raised up to what is needed, never above the hard limit, never lowered."""
from __future__ import annotations

import pytest

from emodarts_tf.utils.open_files import raise_open_file_limit

resource = pytest.importorskip("resource")


@pytest.fixture
def restored_limit():
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield before
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_soft_limit_is_raised_to_the_need_and_capped_by_the_hard_limit(restored_limit, caplog):
    import logging

    soft, hard = restored_limit
    low = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    assert raise_open_file_limit(low - 10) == low  # enough already: unchanged, never lowered
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (low, hard)
    if hard != resource.RLIM_INFINITY and hard <= low:
        pytest.skip(f"hard open-file limit {hard}: nothing to raise to")
    want = low + 100 if hard == resource.RLIM_INFINITY else min(low + 100, hard)
    assert raise_open_file_limit(want, "test") == want
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (want, hard)
    if hard != resource.RLIM_INFINITY:
        with caplog.at_level(logging.WARNING):
            assert raise_open_file_limit(hard + 1000, "test") == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert f"the hard limit {hard} is below the {hard + 1000}" in caplog.text


def test_cache_loading_raises_the_limit_for_its_shards(csv_corpus, tiny_features, tmp_path, restored_limit):
    """Loading a cache raises a low soft limit to its shards plus the margin, and loads every shard."""
    from emodarts_tf.data import cache as cache_module
    from emodarts_tf.data.cache import FeatureCache

    soft, hard = restored_limit
    paths = sorted(str(p) for p in (csv_corpus(n_speakers=2, per_class=2).parent / "audio").rglob("*.wav"))
    cache = FeatureCache(tmp_path / "cache", tiny_features)
    assert cache.extract(paths, workers=1, progress=False, shard_size=1) == {}
    if hard != resource.RLIM_INFINITY and hard < len(paths) + cache_module.OPEN_FILES_MARGIN:
        pytest.skip(f"hard open-file limit {hard} too low for this check")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 64), hard))
    loaded = FeatureCache(tmp_path / "cache", tiny_features).load(paths)
    assert loaded.shape == (len(paths), *cache.shape)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= len(paths) + cache_module.OPEN_FILES_MARGIN


def test_a_refused_raise_is_a_warning_not_a_crash(restored_limit, monkeypatch, caplog):
    import logging

    soft, hard = restored_limit
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"hard open-file limit {hard}: nothing to raise to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    def refuse(*_):
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    with caplog.at_level(logging.WARNING):
        assert raise_open_file_limit(300, "test") == 256
    assert "could not raise it from 256 to 300" in caplog.text and "not allowed" in caplog.text
