"""``cli/export.py`` on a full disk: the SavedModel writer fails at its end (TensorFlow's ResourceExhaustedError
"<file>; No space left on device", after it wrote some files); the command logs one line naming the version
it could not write and exits 2, and the base path holds neither that version nor a temporary directory."""
from __future__ import annotations

import errno
import logging
import os

import pytest
import tensorflow as tf

ENOSPC_TEXT = os.strerror(errno.ENOSPC)


@pytest.fixture
def full_disk(monkeypatch):
    """``tf.saved_model.save`` (what ``ExportArchive.write_out`` calls) writes the SavedModel, then fails as a
    full disk would on its variables."""
    real_save = tf.saved_model.save
    failed = []

    def save(obj, export_dir, *args, **kwargs):
        real_save(obj, export_dir, *args, **kwargs)
        failed.append(str(export_dir))
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{export_dir}/variables/variables.data-00000-of-00001.tempstate1234; {ENOSPC_TEXT}"
        )

    monkeypatch.setattr(tf.saved_model, "save", save)
    return failed


def test_export_on_a_full_disk_is_one_line(exported, tmp_path, full_disk, caplog, capsys):
    from emodarts_tf.commands.export import main

    serving = tmp_path / "serving"
    with caplog.at_level(logging.INFO, logger="emodarts_tf"):
        assert main(["--model", str(exported.model_dir), "--out", str(serving), "--version", "2"]) == 2
    assert len(full_disk) == 1 and os.path.basename(full_disk[0]).startswith(".export-2-")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"export: no space left on device while writing {serving / '2'}; free some space, then rerun: nothing was "
        "written (a version directory appears only when complete)"
    ]
    assert "Traceback" not in capsys.readouterr().err
    assert list(serving.iterdir()) == []  # no version, no half-written temporary directory


def test_export_model_raises_a_disk_full_error_naming_the_version(exported, tmp_path, full_disk):
    from emodarts_tf.export.saved_model import export_model
    from emodarts_tf.utils.io import DiskFullError

    with pytest.raises(DiskFullError) as info:
        export_model(exported.model_dir, tmp_path / "serving", 1)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "serving" / "1")
    assert isinstance(info.value.__cause__, tf.errors.ResourceExhaustedError)  # the original, for -v
    assert list((tmp_path / "serving").iterdir()) == []
