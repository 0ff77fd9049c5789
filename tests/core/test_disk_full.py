"""A full disk: which errors count as one (``utils.io.find_disk_full``), the atomic writers name the file they
could not write and leave the old one intact, and a command wrapped in ``exits_on_full_disk`` ends with one
error line and exit status 2 instead of a traceback."""
from __future__ import annotations

import errno
import logging
import os

import pytest

from emodarts_tf.utils.io import DiskFullError, atomic_write_text, find_disk_full, write_json

ENOSPC_TEXT = os.strerror(errno.ENOSPC)  # "No space left on device"


def _tf_error(cls_name: str, message: str):
    import tensorflow as tf

    return getattr(tf.errors, cls_name)(None, None, message)


def test_find_disk_full_recognises_the_kinds_of_full_disk():
    full = find_disk_full(OSError(errno.ENOSPC, ENOSPC_TEXT, "/out/fold1/search.json"))
    assert (full.errno, full.reason, full.path) == (errno.ENOSPC, "no space left on device", "/out/fold1/search.json")
    full = find_disk_full(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
    assert (full.reason, full.path) == ("disk quota exceeded", None)
    # TensorFlow's file system: "<file>; No space left on device", as a ResourceExhaustedError.
    path = "/srv/serving/.export-1-abc/variables/variables.data-00000-of-00001.tempstate1234"
    full = find_disk_full(_tf_error("ResourceExhaustedError", f"{path}; {ENOSPC_TEXT} [Op:SaveV2]"))
    assert (full.errno, full.path) == (errno.ENOSPC, path)
    # h5py: an OSError without errno whose text says it.
    full = find_disk_full(OSError(f"Can't write data (file write failed: errno = 28, error message = '{ENOSPC_TEXT}')"))
    assert full is not None and full.reason == "no space left on device"
    # Raised from one (a wrapper's ValueError) or while handling one (a failed clean-up).
    try:
        try:
            raise OSError(errno.ENOSPC, ENOSPC_TEXT, "/out/a.json")
        except OSError as exc:
            raise ValueError("could not save the genotype") from exc
    except ValueError as wrapped:
        assert find_disk_full(wrapped).path == "/out/a.json"


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOENT, "No such file or directory", "/x"),
        OSError(errno.EACCES, "Permission denied", "/x"),
        ValueError(f"a message that mentions '{ENOSPC_TEXT}' but is no OSError"),
        "oom",
    ],
    ids=["enoent", "eacces", "valueerror", "gpu-oom"],
)
def test_find_disk_full_ignores_other_errors(exc):
    if exc == "oom":  # also a ResourceExhaustedError, for memory
        exc = _tf_error("ResourceExhaustedError", "OOM when allocating tensor with shape[64,128,128,16]")
    assert find_disk_full(exc) is None


def test_atomic_writer_names_the_target_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "fold1" / "search.json"
    write_json(target, {"epochs_done": 2})
    before = target.read_text()

    def full_fsync(fd):  # as write()/fsync() on a full disk: an errno, no file name
        raise OSError(errno.ENOSPC, ENOSPC_TEXT)

    monkeypatch.setattr(os, "fsync", full_fsync)
    with pytest.raises(DiskFullError) as info:
        write_json(target, {"epochs_done": 3})
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert info.value.filename == str(target)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.filename is None
    assert target.read_text() == before  # the reader still sees the complete old file
    assert sorted(p.name for p in target.parent.iterdir()) == ["search.json"]  # no temporary left
    monkeypatch.undo()
    atomic_write_text(target, "x")  # other errors and later writes are unaffected
    assert target.read_text() == "x"


def test_disk_full_message_is_one_line():
    from emodarts_tf.commands.common import disk_full_message

    exc = OSError(errno.ENOSPC, ENOSPC_TEXT, "/out/fold1/genotype.json")
    assert disk_full_message("search", exc, "free some space") == (
        "search: no space left on device while writing /out/fold1/genotype.json; free some space"
    )
    unnamed = disk_full_message("export", OSError(errno.ENOSPC, ENOSPC_TEXT))
    assert unnamed.startswith("export: no space left on device while writing (the error names no file: OSError: ")
    assert "\n" not in unnamed
    assert disk_full_message("search", ValueError("bad")) is None


def test_the_wrapped_main_exits_2_with_one_error_line(caplog, capsys):
    from emodarts_tf.commands.common import exits_on_full_disk

    calls = []

    @exits_on_full_disk("search", "free some space, then rerun with --resume")
    def main(argv=None):
        calls.append(argv)
        if argv == ["full"]:
            raise _tf_error("ResourceExhaustedError", f"/runs/s/fold1/checkpoints/ckpt-3_temp/part-0.index; {ENOSPC_TEXT}")
        if argv == ["other"]:
            raise RuntimeError("not a disk problem")
        return 0

    with caplog.at_level(logging.INFO, logger="emodarts_tf"):
        assert main(["full"]) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "search: no space left on device while writing /runs/s/fold1/checkpoints/ckpt-3_temp/part-0.index; "
        "free some space, then rerun with --resume"
    ]
    assert errors[0].name == "emodarts_tf.search" and errors[0].exc_info is None  # no traceback at INFO level
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="not a disk problem"):
        main(["other"])
    assert main() == 0 and calls == [["full"], ["other"], None]
