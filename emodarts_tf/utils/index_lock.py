"""Run indexes shared by several processes and hosts: a lock file that works on network file systems, and
the rebuild of an index from the finished folds that stays complete even when two hosts finish at once.

Several hosts may run ``cli/search.py --fold k`` (or ``cli/train.py --folds k``, ``cli/baseline.py --folds
k``) into one shared ``--out`` on NFS. Each fold writes only into its own ``fold<k>/`` and marks itself
finished by a last per-fold file written atomically (``search.json`` of a search, ``metrics.json`` of a
retraining). The per-run indexes (``genotypes.json``, ``summary.json`` / ``summary.md``) are never patched
with "my fold": they are rebuilt from the finished folds found on disk (:func:`rebuild_index`):

1. take the lock of the run folder (:func:`index_lock`);
2. scan the fold folders and write the index atomically (temporary file + ``rename``, ``utils.io``), so a
   reader sees the old or the new index, never half of one;
3. re-check: read the index back and scan the folds again; when they disagree (a fold finished meanwhile,
   or a writer that did not hold the lock replaced the index with an older scan), go back to 2.

Why a lock file created with ``O_CREAT | O_EXCL``, not ``fcntl``: POSIX record locks (``fcntl``/``lockf``,
which the feature cache uses on its local folder) go through NFS's lock manager (NLM, or NFSv4 leases),
which is often absent, disabled (``nolock`` mounts) or silently local-only; ``flock`` is not forwarded to
the server at all on many NFS clients. An exclusive create is atomic on the server on NFSv3 and v4 (and
on every local file system). Its drawback, that the file outlives a killed holder, is handled by stale-lock
breaking: a lock is stale when the pid it names is not running on this host (same host name), or when its
content stayed unchanged for ``stale_s`` seconds while we waited (measured on our own monotonic clock, so
clock skew between hosts does not matter; holders keep the lock for milliseconds, only to scan and write
small JSON files). A stale lock is renamed aside (atomic) and removed only if what was renamed is the
stale lock that was judged (otherwise it is put back with ``link``, which fails rather than overwrite).

The lock is an optimisation, not what correctness rests on: step 3 makes the last writer's index hold every
finished fold even if a lock was broken wrongly or could not be taken within ``timeout_s`` (then the rebuild
runs unlocked, with a warning, instead of failing a finished search or training).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import random
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from emodarts_tf.utils.io import DiskFullError, find_disk_full

log = logging.getLogger(__name__)

LOCK_NAME = ".index.lock"
LOCK_TIMEOUT_S = 120.0  # how long a writer waits for the lock before rebuilding without it
STALE_S = 60.0  # a lock whose content did not change for this long while we waited is taken as stale
_POLL_S = 0.05  # between tries (plus up to as much again of random jitter)
_MAX_ROUNDS = 20  # rebuilds in a row while folds keep finishing during the check


class IndexLockTimeout(TimeoutError):
    """The run folder's index lock was held by another process for longer than the wait allowed."""


def _host() -> str:
    return socket.gethostname()


def _read(path: Path) -> str | None:
    """The lock file's text ('' while its creator has not written it yet), or None when there is none."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""


def _info(text: str | None) -> dict:
    try:
        info = json.loads(text or "")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return True
    return True


def _stale_reason(text: str, unchanged_s: float, stale_s: float) -> str | None:
    """Why the lock with content ``text`` (unchanged for ``unchanged_s`` s while we waited) is stale, or None."""
    info = _info(text)
    pid = info.get("pid")
    if info.get("host") == _host() and isinstance(pid, int) and pid != os.getpid() and not _pid_running(pid):
        return f"its holder, pid {pid} on this host ({info['host']}), is no longer running"
    if unchanged_s >= stale_s:
        return f"it has not changed for {unchanged_s:.0f} s (stale after {stale_s:g} s)"
    return None


def _describe(text: str | None) -> str:
    info = _info(text)
    if not info:
        return "a process that has not written its name into the lock"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} ({info.get('command', '?')})"


def _remove_if(path: Path, expected: str) -> bool:
    """Remove the lock file at ``path`` if its content is ``expected``: it is renamed aside first (atomic), and
    put back when what was renamed turns out to be another lock (a holder that took it meanwhile)."""
    aside = path.with_name(f"{path.name}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.removed")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = _read(aside)
    if moved == expected:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)
        return True
    try:
        os.link(aside, path)  # put the other holder's lock back; fails (keeps a newer one) if one exists
    except OSError:
        pass
    with contextlib.suppress(FileNotFoundError):
        os.unlink(aside)
    return False


@contextlib.contextmanager
def index_lock(directory: str | Path, timeout_s: float | None = LOCK_TIMEOUT_S, stale_s: float = STALE_S,
               name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold ``<directory>/<name>`` (created with ``O_CREAT | O_EXCL``) for the ``with`` block; see the module
    docstring for why and for what makes a lock stale.

    Raises:
        IndexLockTimeout: another process held the lock for ``timeout_s`` seconds (None: wait for good), and
            it never looked stale.
    """
    if timeout_s is not None and timeout_s < 0:
        raise ValueError(f"timeout_s: expected a number of seconds >= 0 or None, received {timeout_s!r}")
    if not stale_s > 0:
        raise ValueError(f"stale_s: expected a number of seconds > 0, received {stale_s!r}")
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = json.dumps({
        "pid": os.getpid(),
        "host": _host(),
        "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
        "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:4])),
    })
    started = time.monotonic()
    seen, seen_since = None, started
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o644)
        except FileExistsError:
            text = _read(path)
            now = time.monotonic()
            if text is None:  # released between our try and our read
                continue
            if text != seen:
                seen, seen_since = text, now
            reason = _stale_reason(text, now - seen_since, stale_s)
            if reason is not None:
                if _remove_if(path, text):
                    log.warning("%s: removed a stale index lock of %s: %s", path, _describe(text), reason)
                seen = None
                continue
            if timeout_s is not None and now - started >= timeout_s:
                raise IndexLockTimeout(f"{path}: still locked after {now - started:.0f} s, by {_describe(text)}")
            time.sleep(_POLL_S * (1.0 + random.random()))
            continue
        try:
            try:
                os.write(fd, mine.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException as exc:  # e.g. a full disk: leave no lock behind, and name the file
            with contextlib.suppress(OSError):
                os.unlink(path)
            full = find_disk_full(exc) if isinstance(exc, Exception) else None
            if full is not None:
                raise DiskFullError(full.errno, full.reason, str(path)) from exc
            raise
        break
    try:
        yield path
    finally:
        if not _remove_if(path, mine):
            log.warning("%s: our index lock had been taken as stale by another process before we released it",
                        path)


def rebuild_index(directory: str | Path, write: Callable[[], Any], finished: Callable[[], Any],
                  indexed: Callable[[], Any], *, what: str = "index", timeout_s: float | None = LOCK_TIMEOUT_S,
                  stale_s: float = STALE_S) -> Any:
    """Rebuild an index of the run folder ``directory`` from its finished folds, under :func:`index_lock`.

    Args:
        write: scans the fold folders and writes the index (atomically); returns what it wrote (or None).
        finished: what the index must hold now, from a fresh scan (e.g. the set of finished folds).
        indexed: the same, read back from the index file on disk (None when there is none).
        what: the index's name, for the log.

    ``write`` runs again while ``indexed()`` differs from ``finished()`` after it (a fold finished during the
    write, or another writer replaced the index), at most ``_MAX_ROUNDS`` times. Returns ``write``'s last
    result. When the lock cannot be had within ``timeout_s``, the rebuild runs without it (a warning).
    """
    directory = Path(directory)

    def rebuild():
        result = None
        for _ in range(_MAX_ROUNDS):
            result = write()
            if indexed() == finished():
                return result
        log.warning("%s: %s still differs from the finished folds after %d rebuilds (folds finishing "
                    "continuously?); the next fold to finish rebuilds it again", directory, what, _MAX_ROUNDS)
        return result

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(index_lock(directory, timeout_s=timeout_s, stale_s=stale_s))
        except IndexLockTimeout as exc:
            log.warning("%s; rebuilding %s without it (the check after the write keeps it complete)", exc, what)
        return rebuild()
