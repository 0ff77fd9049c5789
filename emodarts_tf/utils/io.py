"""Atomic file writes: a reader never sees half a file, and a kill never leaves one behind; and the
recognition of writes that failed because the disk (or the user's quota) is full."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

# The errnos of a full disk, with the words the commands report them in.
DISK_FULL_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# strerror() of those errnos, as TensorFlow's file system writes them after the file name:
# "<path>; No space left on device" (TensorFlow raises them as ResourceExhaustedError).
_DISK_FULL_TEXT = re.compile(r"no space left on device|disk quota exceeded", re.IGNORECASE)


class DiskFullError(OSError):
    """A write that failed because the disk or the quota is full; ``filename`` names what was being written."""


@dataclass(frozen=True)
class DiskFull:
    """What :func:`find_disk_full` found: the errno, its words and the file (None when the error names none)."""

    errno: int
    reason: str
    path: str | None


def _path_before(text: str, start: int) -> str | None:
    """The file name in front of the disk-full words at ``start`` of a TensorFlow message (its last
    whitespace-separated token, e.g. ``/out/1/variables/variables.data-00000-of-00001.tempstate7``), or None."""
    head = text[:start].rstrip().rstrip(";:,").rstrip()
    token = head.split()[-1] if head.split() else ""
    token = token.strip("'\"").rstrip(":;,")
    return token if "/" in token or "\\" in token else None


def find_disk_full(exc: BaseException | None) -> DiskFull | None:
    """The disk-full failure in ``exc`` or in the exceptions it was raised from or while handling
    (``__cause__``, ``__context__``); None when there is none.

    Recognised: an OSError whose errno is ENOSPC or EDQUOT (its ``filename`` is the path); an OSError
    without errno (h5py) or a TensorFlow error (file-system errors with these errnos are
    ``ResourceExhaustedError``) whose message says "No space left on device" or "Disk quota exceeded"
    (the path: the file name in front of those words). A ResourceExhaustedError for memory ("OOM when
    allocating tensor") is not a full disk.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            path = exc.filename if exc.filename is not None else exc.filename2
            name = None if path is None else os.fsdecode(path) if isinstance(path, bytes) else str(path)
            return DiskFull(exc.errno, DISK_FULL_ERRNOS[exc.errno], name)
        tensorflow_error = type(exc).__module__.startswith("tensorflow")
        if (isinstance(exc, OSError) and exc.errno is None) or tensorflow_error:
            text = str(getattr(exc, "message", None) or exc)
            found = _DISK_FULL_TEXT.search(text)
            if found:
                code = errno.EDQUOT if found.group(0).lower().startswith("disk") else errno.ENOSPC
                return DiskFull(code, DISK_FULL_ERRNOS[code], _path_before(text, found.start()))
        exc = exc.__cause__ or exc.__context__
    return None


def _raise_named_disk_full(exc: BaseException, path: Path) -> None:
    """Raise :class:`DiskFullError` naming ``path`` when ``exc`` is (or was raised from) a full disk; else return.
    Named after the file being written, not a temporary name (a write() or fsync() error names no file at all)."""
    full = find_disk_full(exc) if isinstance(exc, Exception) else None
    if full is not None:
        raise DiskFullError(full.errno, full.reason, str(path)) from exc


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, on failure it
    is removed. For writers that need a file name (``model.save``) rather than bytes.

    Raises:
        DiskFullError: (an OSError) the disk or quota filled up while writing; ``filename`` is ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        _raise_named_disk_full(exc, path)  # ``path`` itself is untouched
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def append_durably(path: str | Path, data: bytes) -> int:
    """Append ``data`` to ``path`` (created when missing), flushed to disk; returns the file's size after it. A
    reader sees the whole of ``data`` or a prefix of it (a process killed mid-write). Writes are appended with
    ``O_APPEND``; callers serialise writers (the feature cache holds its lock).

    Raises:
        DiskFullError: (an OSError) the disk or quota filled up; ``filename`` is ``path``.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)
    except OSError as exc:
        _raise_named_disk_full(exc, path)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
