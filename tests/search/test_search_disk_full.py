"""``cli/search.py`` on a full disk: one error line naming the file that could not be written, exit status 2, no
traceback; the run then resumes from its last checkpoint once there is space again. The full disk is
simulated where the writes happen: ``os.fsync`` of the atomic writers (an OSError ENOSPC without a file
name, as the kernel reports it) and TensorFlow's checkpoint writer (a ResourceExhaustedError
"<file>; No space left on device", as TensorFlow's file system reports it)."""
from __future__ import annotations

import errno
import json
import logging
import os
import re
from pathlib import Path

import tensorflow as tf
from search_helpers import MICRO

ENOSPC_TEXT = os.strerror(errno.ENOSPC)
MESSAGE = re.compile(r"^search: no space left on device while writing (?P<path>\S+); free some space, then rerun "
                     r"with --resume: each fold continues from its last checkpoint$")  # fmt: skip


def _args(out, cache, *extra):
    args = ["--data", "demo", "--cache", str(cache), "--out", str(out), "--fold", "1", "--set", "search.warmup_epochs=0",
            "--set", "search.steps_per_epoch=1", *extra]  # fmt: skip
    for item in MICRO:
        args += ["--set", item]
    return args


def _errors(caplog):
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_full_disk_in_an_atomic_write_is_one_line(tmp_path, demo_cache, demo_prepared, monkeypatch, caplog, capsys):
    from emodarts_tf.commands.search import main

    def full_fsync(fd):
        raise OSError(errno.ENOSPC, ENOSPC_TEXT)

    out = tmp_path / "search"
    monkeypatch.setattr(os, "fsync", full_fsync)
    with caplog.at_level(logging.INFO, logger="emodarts_tf"):
        assert main(_args(out, demo_cache, "--epochs", "1")) == 2
    monkeypatch.undo()
    errors = _errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    found = MESSAGE.match(errors[0].getMessage())
    assert found, errors[0].getMessage()
    # The file named is one the search writes (its first: the prepared corpus in <out>/data or the cache).
    path = Path(found["path"])
    assert path.is_relative_to(out) or path.is_relative_to(demo_cache), path
    assert not path.exists() or path.stat().st_size > 0  # never a half-written file
    assert "Traceback" not in capsys.readouterr().err


def test_a_full_disk_at_a_checkpoint_is_one_line_and_resumes(tmp_path, demo_cache, demo_prepared, monkeypatch, caplog):
    from emodarts_tf.commands.search import main

    real_save = tf.train.CheckpointManager.save
    tried = []

    def save(self, checkpoint_number=None, **kwargs):
        tried.append(checkpoint_number)
        if checkpoint_number == 2:  # the disk fills up during the second epoch's checkpoint
            raise tf.errors.ResourceExhaustedError(
                None, None, f"{self.directory}/ckpt-2_temp/part-00000-of-00001.data-00000-of-00001.tempstate8817; "
                f"{ENOSPC_TEXT}",
            )  # fmt: skip
        return real_save(self, checkpoint_number=checkpoint_number, **kwargs)

    out = tmp_path / "search"
    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    with caplog.at_level(logging.INFO, logger="emodarts_tf"):
        assert main(_args(out, demo_cache, "--epochs", "2")) == 2
    monkeypatch.undo()
    assert tried == [1, 2]
    errors = _errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    found = MESSAGE.match(errors[0].getMessage())
    assert found, errors[0].getMessage()
    checkpoints = out / "fold1" / "checkpoints"
    assert found["path"] == f"{checkpoints}/ckpt-2_temp/part-00000-of-00001.data-00000-of-00001.tempstate8817"
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-1")

    # Space again: --resume continues from the epoch-1 checkpoint and finishes.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emodarts_tf"):
        assert main(_args(out, demo_cache, "--epochs", "2", "--resume")) == 0
    assert any("resuming after epoch 1" in r.getMessage() for r in caplog.records)
    summary = json.loads((out / "fold1" / "search.json").read_text())
    assert summary["epochs_done"] == 2
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-2")
