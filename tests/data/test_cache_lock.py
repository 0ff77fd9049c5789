"""The feature cache's lock: a killed extraction leaves no worker and no lock behind, and a command that
waits for the lock says whose it is and gives up after ``data.lock_timeout_s``."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emodarts_tf.config import load_config
from emodarts_tf.data.cache import CacheLockTimeout, FeatureCache
from emodarts_tf.data.prepare import prepare

TINY = ["features.sample_rate=8000", "features.duration_s=0.5", "features.n_mfcc=13", "features.n_fft=256",
        "features.hop_length=128", "features.n_mels=26", "features.time_pool=2"]  # fmt: skip

# prepare() on a CSV corpus with 2 forked workers, each file slowed down by argv[2] seconds.
_PREPARE = """
import json, sys, time
from emodarts_tf.config import load_config
from emodarts_tf.data import cache as c
from emodarts_tf.data.prepare import prepare
real, delay = c.F.extract_mfcc, float(sys.argv[2])
c.F.extract_mfcc = lambda p, cfg: (time.sleep(delay), real(p, cfg))[1]
prepare(load_config(None, overrides=json.loads(sys.argv[1])), progress=False)
"""

# Holds the cache lock until killed.
_HOLDER = """
import sys, time
from pathlib import Path
from emodarts_tf.data.cache import _locked
with _locked(Path(sys.argv[1]), 5):
    print("locked", flush=True)
    time.sleep(120)
"""


def _emodb_manifest(path: Path, emodb_root: Path, speakers=("03", "08"), per_class: int = 2) -> Path:
    """``path,label,speaker`` rows of ``per_class`` EmoDB files per speaker and emotion (W, F, T, N)."""
    labels, count, rows = {"W": "ang", "F": "hap", "T": "sad", "N": "neu"}, {}, ["path,label,speaker"]
    for wav in sorted((emodb_root / "wav").glob("*.wav")):
        speaker, letter = wav.stem[:2], wav.stem[5]
        if speaker in speakers and letter in labels and count.get((speaker, letter), 0) < per_class:
            count[(speaker, letter)] = count.get((speaker, letter), 0) + 1
            rows.append(f"{wav},{labels[letter]},{speaker}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _children(pid: int) -> list:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie, which holds no descriptor any more, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_killed_parallel_extraction_leaves_no_worker_and_the_rerun_resumes(emodb_root, tmp_path, caplog):
    manifest = _emodb_manifest(tmp_path / "mini.csv", emodb_root)  # 16 files
    overrides = ["data.corpus=csv", f"data.root={manifest}", f"data.cache_dir={tmp_path / 'cache'}",
                 "data.workers=2", "data.lock_timeout_s=20", *TINY]  # fmt: skip
    features = load_config(None, overrides=TINY).features
    paths = [line.split(",")[0] for line in manifest.read_text().splitlines()[1:]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.Popen([sys.executable, "-c", _PREPARE, json.dumps(overrides), "0.3"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    workers: list = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and child.poll() is None:
            workers = sorted(set(workers) | set(_children(child.pid)))
            if workers and len(FeatureCache(tmp_path / "cache", features).status(paths)[0]) >= 2:
                break  # extraction is under way in the pool
            time.sleep(0.05)
        assert child.poll() is None, "the extraction finished before it could be killed"
        assert workers, "no worker process was seen"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        # The workers die with their parent instead of living on with the lock.
        gone_by = time.time() + 10
        while time.time() < gone_by and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "extraction workers outlived their killed parent"

        before = FeatureCache(tmp_path / "cache", features)
        cached, errors, todo = before.status(paths)
        assert cached and todo and not errors
        shard_of = {p: before._files[p]["shard"] for p in cached}
        # The same preparation again (here, in this process): it gets the lock at once (a wait would be
        # bounded by data.lock_timeout_s) and extracts only what is missing.
        started = time.time()
        with caplog.at_level(logging.INFO):
            prepared = prepare(load_config(None, overrides=[*overrides, "data.workers=1"]), progress=False)
        assert time.time() - started < 20 and len(prepared.records) == len(paths)
        assert not [m for m in caplog.messages if "waiting" in m]
        assert any(f"extracting MFCCs of {len(todo)} file(s)" in m for m in caplog.messages)
        after = FeatureCache(tmp_path / "cache", features)
        assert len(after.status(paths)[0]) == len(paths)
        assert {p: after._files[p]["shard"] for p in cached} == shard_of  # the first run's shards are kept
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        for pid in workers:  # only if the test failed: never leave the processes it started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_waiting_for_the_lock_names_the_holder_and_gives_up(csv_corpus, tiny_features, tmp_path, caplog):
    paths = sorted(str(p) for p in (csv_corpus(n_speakers=1, per_class=1).parent / "audio").rglob("*.wav"))
    cache = FeatureCache(tmp_path / "cache", tiny_features)
    lock = cache.dir / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        info = json.loads((cache.dir / ".lock.info").read_text())
        assert info["pid"] == holder.pid and info["host"] == socket.gethostname() and info["since"]
        started = time.monotonic()
        with caplog.at_level(logging.WARNING), pytest.raises(CacheLockTimeout) as raised:
            cache.extract(paths, workers=1, progress=False, lock_timeout_s=1.0)
        assert time.monotonic() - started < 5
        message = str(raised.value)
        assert str(lock) in message and "data.lock_timeout_s=1" in message
        assert f"pid {holder.pid} on host {socket.gethostname()} since {info['since']}" in message
        assert isinstance(raised.value, ValueError)  # the commands turn it into exit status 2
        waiting = [m for m in caplog.messages if "waiting up to 1 s" in m]
        assert waiting and f"pid {holder.pid}" in waiting[0]
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # The kernel released the killed holder's lock; its stale information does not stop anyone.
    assert cache.extract(paths, workers=1, progress=False, lock_timeout_s=1.0) == {}
    assert not (cache.dir / ".lock.info").exists()
    with pytest.raises(ValueError, match=r"data.lock_timeout_s: expected a number of seconds >= 0, received -1"):
        cache.extract(paths, workers=1, progress=False, lock_timeout_s=-1)


def test_cached_files_do_not_wait_for_the_lock(csv_corpus, tiny_features, tmp_path):
    """Another process's extraction holds the folder's lock: a run whose files are all cached reads them without
    waiting, and one with a file still to extract waits (and gives up after its timeout)."""
    audio = sorted(str(p) for p in (csv_corpus(n_speakers=1, per_class=2).parent / "audio").rglob("*.wav"))
    cached, missing = audio[:-1], audio[-1]
    cache = FeatureCache(tmp_path / "cache", tiny_features)
    assert cache.extract(cached, workers=1, progress=False) == {}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(cache.dir / ".lock")], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        reader = FeatureCache(tmp_path / "cache", tiny_features)
        assert reader.extract(cached, workers=1, progress=False, lock_timeout_s=30.0) == {}
        assert time.monotonic() - started < 10
        assert reader.load(cached).shape == (len(cached), *reader.shape)
        with pytest.raises(CacheLockTimeout):
            reader.extract([*cached, missing], workers=1, progress=False, lock_timeout_s=0.5)
    finally:
        holder.kill()
        holder.wait(timeout=30)
