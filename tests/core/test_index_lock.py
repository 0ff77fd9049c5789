"""Folds over machines: the run indexes (``genotypes.json``, ``summary.json`` / ``summary.md``) rebuilt from
the finished folds by concurrent processes, the cross-host lock file, and its stale-lock handling.

The concurrent tests start 6 spawned processes (one per fold, as 6 hosts would be) on one run folder per
round, released together by a barrier, for several rounds: every round's index must hold every fold and
be valid JSON, and a reader polling the index meanwhile must never see half a file.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import index_workers
from emodarts_tf.utils.index_lock import LOCK_NAME, IndexLockTimeout, index_lock, rebuild_index

N_FOLDS = 6
ROUNDS = 12


def _run_concurrently(target, args_of_fold, out: Path, rounds: int, index_name: str) -> list:
    """Start one spawned process per fold on ``target``; poll ``out/r*/index_name`` meanwhile and return
    the texts that did not parse (there must be none)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_FOLDS)
    procs = [ctx.Process(target=target, args=(*args_of_fold(k), rounds, barrier)) for k in range(1, N_FOLDS + 1)]
    for p in procs:
        p.start()
    torn = []
    deadline = time.monotonic() + 120
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        for path in out.glob(f"r*/{index_name}"):
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            try:
                json.loads(text)
            except ValueError:
                torn.append(text)
        time.sleep(0.002)
    for p in procs:
        p.join(timeout=max(1.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * N_FOLDS
    return torn


def test_concurrent_searches_keep_every_fold_in_genotypes_json(tmp_path):
    from emodarts_tf.search.genotype_index import INDEX_FILE, read_genotype_index
    from emodarts_tf.search_space.genotype import Genotype

    out = tmp_path / "search"
    # A fold still searching (genotypes of its epochs, no final search.json) and a killed one
    # (search.json of fewer epochs than planned) are never indexed.
    for r in range(ROUNDS):
        index_workers.write_finished_search(out / f"r{r}" / "fold7", 7, epochs=3, done=1)
        running = out / f"r{r}" / "fold8"
        index_workers.write_finished_search(running, 8)
        (running / "search.json").unlink()
    torn = _run_concurrently(index_workers.search_worker, lambda k: (str(out), k), out, ROUNDS, INDEX_FILE)
    assert torn == []
    expected = [str(k) for k in range(1, N_FOLDS + 1)]
    for r in range(ROUNDS):
        run = out / f"r{r}"
        index = json.loads((run / INDEX_FILE).read_text(encoding="utf-8"))
        assert list(index) == expected, f"round {r}"
        for k in expected:
            assert index[k] == Genotype.load(run / f"fold{k}" / "genotype_best.json").to_dict()
        assert not (run / LOCK_NAME).exists()
        assert not list(run.glob(".*.tmp")) and not list(run.glob(f"{LOCK_NAME}*"))
        assert read_genotype_index(run) == index


def test_concurrent_retrainings_keep_every_fold_in_the_summary(tmp_path):
    out = tmp_path / "train"
    torn = _run_concurrently(index_workers.train_worker, lambda k: (str(out), k, N_FOLDS), out, ROUNDS,
                             "summary.json")
    assert torn == []
    for r in range(ROUNDS):
        run = out / f"r{r}"
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        assert summary["folds"] == list(range(1, N_FOLDS + 1)), f"round {r}"
        assert summary["ua"]["per_fold"] == {str(k): k / 10 for k in range(1, N_FOLDS + 1)}
        assert summary["params"] == round(sum(1000 + k for k in range(1, N_FOLDS + 1)) / N_FOLDS)
        # summary.md is written under the same lock, after summary.json: the same folds.
        md = (run / "summary.md").read_text(encoding="utf-8")
        assert f"{N_FOLDS} fold(s)" in md and all(f"| {k} |" in md for k in range(1, N_FOLDS + 1))
        assert not (run / LOCK_NAME).exists()


def test_index_keeps_entries_without_a_fold_folder_and_drops_unfinished_folds(tmp_path):
    from emodarts_tf.search.genotype_index import rebuild_genotype_index

    # An index whose fold 3 folder was removed (or that was copied on its own) keeps fold 3; fold 4 is
    # being searched again with more epochs (its genotypes say 5, its search.json the old 2): left out.
    old = {**index_workers.GENOTYPE, "meta": {"fold": 3}}
    (tmp_path / "genotypes.json").write_text(json.dumps({"3": old, "4": old}))
    index_workers.write_finished_search(tmp_path / "fold1", 1)
    index_workers.write_finished_search(tmp_path / "fold4", 4, epochs=5, done=3)
    info = json.loads((tmp_path / "fold4" / "search.json").read_text())
    (tmp_path / "fold4" / "search.json").write_text(json.dumps({**info, "epochs": 2, "epochs_done": 2}))
    index = rebuild_genotype_index(tmp_path)
    assert list(index) == ["1", "3"] and index["3"] == old and index["1"]["meta"]["fold"] == 1
    assert json.loads((tmp_path / "genotypes.json").read_text()) == index


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path, caplog):
    """A process SIGKILLed while holding the lock leaves its lock file; the next writer on this host sees
    that its pid is gone and takes the lock at once."""
    helper = Path(index_workers.__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(helper.parent), *sys.path])}
    proc = subprocess.run([sys.executable, str(helper), str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip
    assert proc.returncode == -9 and "locked" in proc.stdout, proc.stderr
    left = json.loads((tmp_path / LOCK_NAME).read_text())
    assert left["pid"] != os.getpid()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="emodarts_tf.utils.index_lock"):
        with index_lock(tmp_path, timeout_s=10, stale_s=300):
            waited = time.monotonic() - started
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert waited < 5
    assert "stale index lock" in caplog.text and "no longer running" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_of_another_host_is_stale_once_unchanged_for_stale_s(tmp_path, caplog):
    """A holder on another host cannot be asked whether it runs: its lock is broken when it has not
    changed for ``stale_s`` seconds; before that a writer waits, and after ``timeout_s`` it gives up on
    the lock (``rebuild_index`` then rebuilds without it, with a warning)."""
    foreign = json.dumps({"pid": 1, "host": "another-host.invalid", "since": "2026-01-01T00:00:00+00:00"})
    (tmp_path / LOCK_NAME).write_text(foreign)
    with pytest.raises(IndexLockTimeout, match="another-host.invalid"):
        with index_lock(tmp_path, timeout_s=0.3, stale_s=60):
            pass
    assert (tmp_path / LOCK_NAME).read_text() == foreign

    written = []
    with caplog.at_level(logging.WARNING, logger="emodarts_tf.utils.index_lock"):
        result = rebuild_index(tmp_path, lambda: written.append(1) or "done", lambda: 1, lambda: 1,
                               timeout_s=0.3, stale_s=60)  # fmt: skip
    assert result == "done" and written == [1] and "without it" in caplog.text

    started = time.monotonic()
    with index_lock(tmp_path, timeout_s=30, stale_s=0.5):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] != "another-host.invalid"
    assert 0.4 < time.monotonic() - started < 10
    assert not (tmp_path / LOCK_NAME).exists()


def test_rebuild_repeats_until_the_index_holds_what_finished(tmp_path):
    """The check after the write: a fold that finishes while the index is written makes it write again."""
    finished = {1}
    on_disk = {}

    def write():
        on_disk["folds"] = set(finished)
        finished.add(len(finished) + 1) if len(finished) < 3 else None  # a fold finishes during the write
        return set(on_disk["folds"])

    assert rebuild_index(tmp_path, write, lambda: finished, lambda: on_disk["folds"]) == {1, 2, 3}


def test_baseline_summary_holds_the_folds_other_hosts_finished(tmp_path):
    """``cli/baseline.py --folds 2`` on one host after ``--folds 1`` on another: the summary has both."""
    from emodarts_tf.baselines.runner import summarise_run
    from emodarts_tf.config import load_config
    from emodarts_tf.utils.io import write_json

    config = load_config("demo")
    bl = config.baseline

    def fold(k):
        metrics = {"ua": k / 10, "wa": k / 10, "f1": k / 10, "n": 8, "seconds": 1.0, "classes": ["a", "b"]}
        best = {"family": bl.family, "tuner": bl.tuner, "trials": bl.trials, "values": {"units": k},
                "val_ua": 0.5, "tuning_s": 3.0, "params": 100 * k, "flops": 1000 * k}
        return metrics, best

    metrics1, best1 = fold(1)
    write_json(tmp_path / "fold1" / "metrics.json", metrics1)  # finished by another host
    write_json(tmp_path / "fold1" / "best_hp.json", best1)
    write_json(tmp_path / "fold3" / "best_hp.json", fold(3)[1])  # tuned, not retrained yet: not in it
    metrics2, best2 = fold(2)
    summary = summarise_run(tmp_path, config, {2: metrics2}, {2: best2})
    assert summary["folds"] == [1, 2] and summary["ua"]["per_fold"] == {"1": 0.1, "2": 0.2}
    assert summary["extra"]["best_hp_per_fold"] == {"1": {"units": 1}, "2": {"units": 2}}
    assert json.loads((tmp_path / "summary.json").read_text())["folds"] == [1, 2]


def test_a_full_disk_while_taking_the_lock_leaves_no_lock_and_names_it(tmp_path, monkeypatch):
    import errno

    from emodarts_tf.utils.io import DiskFullError

    def full_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_fsync)
    with pytest.raises(DiskFullError) as caught:
        with index_lock(tmp_path):
            pass
    monkeypatch.undo()
    assert caught.value.filename == str(tmp_path / LOCK_NAME)
    assert not (tmp_path / LOCK_NAME).exists()
    with index_lock(tmp_path, timeout_s=1):  # nothing left blocking
        pass
