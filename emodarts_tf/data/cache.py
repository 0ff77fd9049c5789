"""The feature cache: shards of extracted features plus a JSON manifest, keyed by what was extracted.

What a cache folder holds is described by an :class:`Extractor`: a kind (the folder's prefix), a hash of
everything that determines the features (the key), the shape of one utterance's array, and the function
that computes it from a file. :func:`feature_extractor` describes the 2-D maps of a :class:`FeatureConfig`
(``mfcc-<hash>``, ``spectrogram-<hash>``); :mod:`emodarts_tf.data.frame_features` describes the frame-level
sequences (``frames-<source>-<hash>``).

Layout (``<cache_dir>/<kind>-<hash>/``, e.g. ``mfcc-<hash>``)::

    manifest.json        extractor config, its hash, shape, and for each audio file (absolute path) its size,
                         mtime and either the shard/row of its features or the error it raised (and, when
                         the features are read from another file, that file: ``source``)
    manifest.journal     one JSON line per shard finished since the manifest was last written (its rows and its
                         files' entries), applied on top of the manifest when read
    shard-00000.npy      float32 (rows, *shape), e.g. (rows, n_mfcc, frames)
    shard-00001.npy      ...

- The same extractor finds the same folder and reuses it; another config hashes to another folder.
- Extraction runs in parallel (``concurrent.futures.ProcessPoolExecutor``), one chunk of files per task;
  each finished chunk becomes a shard written atomically, then one line appended to the journal and flushed
  to disk. The manifest is rewritten atomically (and the journal removed) when there is none yet, when the
  journal has grown as large as it, and when an extraction finishes; during an extraction each rewrite at least
  doubles what the manifest holds, so the bytes written stay a small multiple of the final manifest's, however
  many shards (a 150k-file corpus makes about 1,200). An interrupted extraction keeps its finished shards (a line
  cut off by a kill loses only its own shard), and the next run extracts only what is missing.
- A file whose size or mtime changed is extracted again (for features read from another file, e.g. a
  precomputed ``.npy``: when that file changed, or another one is named).
- A file that failed (unreadable, empty, silent, truncated, not audio) is recorded with its error, so it
  is reported again next time without being read again.
- Old rows are never overwritten: :meth:`FeatureCache.prune` (``cli/prepare.py --prune``) deletes the shards
  that no entry reads any more (all their files extracted again), unrecorded shards and temporary files.
- Concurrent extractions into the same folder are serialised by a lock file (``.lock``, a POSIX record
  lock, which the kernel releases when its process dies and which forked children never inherit). Its
  holder writes ``.lock.info`` (pid, host, since when, command); a process that has to wait logs whose
  lock it waits for and gives up after ``lock_timeout_s`` (``data.lock_timeout_s``) with an error naming
  the holder.
- The extraction workers hold no lock and die with the process that started them (``PR_SET_PDEATHSIG`` on
  Linux, and a watch of the parent pid everywhere), so a killed extraction leaves no process behind that
  would keep the cache busy.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from emodarts_tf.config import FeatureConfig
from emodarts_tf.data import features as F
from emodarts_tf.utils.io import append_durably, atomic_write_bytes, read_json, write_json
from emodarts_tf.utils.open_files import raise_open_file_limit
from emodarts_tf.utils.threads import usable_cores

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
JOURNAL_NAME = "manifest.journal"
_READ_ATTEMPTS = 5  # reads of manifest + journal when a writer replaces the manifest meanwhile
SHARD_SIZE = 128  # utterances per shard at most (8 MB at the paper's 128 x 128 float32)
OPEN_FILES_MARGIN = 1024  # descriptors left for what a run opens besides the mapped shards
LOCK_TIMEOUT_S = 300.0  # the default of data.lock_timeout_s
_LOCK_POLL_S = 0.25  # how often a waiting process tries the lock again
_LOCK_LOG_EVERY_S = 60.0  # how often it says again that it is still waiting
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.npy$")
# Temporary files of utils.io.atomic_path (".<name>.<random>.tmp") beside a shard, the manifest or the lock's holder
# information, left by a kill.
_TEMP_RE = re.compile(r"^\.(shard-\d{5,}\.npy|manifest\.json|lock\.info)\..+\.tmp$")


def _file_identity(path: Path) -> Optional[tuple]:
    """(device, inode) of ``path``; None when it does not exist or cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _signature(path: Optional[str]) -> Optional[tuple]:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class Extractor:
    """What one cache folder holds and how to compute it.

    Args:
        kind: the folder's prefix and the name in logs: ``mfcc``, ``spectrogram``, ``frames-opensmile``, ...
        key: a short hash of everything that determines the features; the folder is ``<kind>-<key>``.
        shape: the shape of one utterance's float32 array.
        config: JSON-able description written to the manifest (``feature_config``).
        extract: ``extract(path) -> array`` of ``shape``. A file that cannot be used raises an exception
            with a ``problem`` attribute (e.g. :class:`~emodarts_tf.data.features.AudioError`), whose text is
            recorded; any other exception is recorded with its type. It is sent to worker processes, so it
            must pickle (a module-level function, or a ``functools.partial`` of one), unless ``in_process``.
        version: the computation's version, written to the manifest.
        in_process: extract in the calling process only (e.g. a TensorFlow model: one copy, not one per
            worker).
        source: ``source(path) -> file`` whose size and mtime date a cached entry (features read from
            another file than ``path``, e.g. a precomputed ``.npy``); None: ``path`` itself. Called in this
            process only.
        label: what the logs call the features (``MFCCs``); empty: ``<kind> features``.
    """

    kind: str
    key: str
    shape: tuple
    config: dict
    extract: Callable[[str], np.ndarray]
    version: int = 1
    in_process: bool = False
    source: Optional[Callable[[str], Optional[str]]] = None
    label: str = ""

    @property
    def folder(self) -> str:
        return f"{self.kind}-{self.key}"

    @property
    def name(self) -> str:
        return self.label or f"{self.kind} features"


def feature_extractor(cfg: FeatureConfig) -> Extractor:
    """The :class:`Extractor` of the 2-D feature maps of ``cfg`` (``features.kind``: mfcc, logmel or spectrogram)."""
    return Extractor(
        kind=cfg.kind,
        key=F.feature_config_hash(cfg),
        shape=tuple(F.feature_shape(cfg)),
        config=asdict(cfg),
        extract=partial(F.extract_features, cfg=cfg),
        version=F.FEATURE_VERSION,
        label=F.feature_extractor_label(cfg),
    )


def _extract_chunk(paths: list, extract: Callable[[str], np.ndarray], shape: tuple) -> tuple:
    """Worker task: features of the files that succeed, and an error message for each that fails."""
    rows, ok, errors = [], [], {}
    for path in paths:
        try:
            row = extract(path)
            if tuple(row.shape) != tuple(shape):
                raise ValueError(f"features of shape {tuple(row.shape)}, expected {tuple(shape)}")
            rows.append(row)
            ok.append(path)
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the extraction
            problem = getattr(exc, "problem", None)
            errors[path] = problem if isinstance(problem, str) else (
                f"feature extraction failed ({type(exc).__name__}: {exc})")
    array = np.stack(rows).astype(np.float32) if rows else np.zeros((0, *shape), np.float32)
    return ok, array, errors


class CacheLockTimeout(ValueError):
    """Another process held the feature cache's lock for longer than the wait allowed."""


# One lock per lock file within this process: POSIX record locks belong to a process, so two threads (or
# two FeatureCache objects) of one process would not exclude each other through the file alone.
_PROCESS_LOCKS: dict = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(lock_path: Path) -> threading.Lock:
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(str(lock_path.resolve()), threading.Lock())


def _info_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".info")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _describe_holder(lock_path: Path) -> str:
    """Who holds the lock, from the ``.lock.info`` its holder wrote: pid, host, since when, command."""
    try:
        info = read_json(_info_path(lock_path))
        pid, host, since = int(info["pid"]), str(info["host"]), str(info["since"])
    except (ValueError, KeyError, TypeError):
        return f"a process that left no holder information in {_info_path(lock_path).name}"
    age = ""
    if isinstance(info.get("since_unix"), (int, float)):
        age = f", {time.time() - float(info['since_unix']):.0f} s ago"
    text = f"pid {pid} on host {host} since {since}{age}"
    if info.get("command"):
        text += f" (command: {info['command']})"
    if host == socket.gethostname() and not _pid_running(pid):
        # The kernel drops a record lock with its process, so someone else holds it now.
        text += f"; pid {pid} is no longer running, so the lock is held by another process (see `fuser {lock_path}`)"
    return text


def _write_holder_info(lock_path: Path) -> None:
    try:
        write_json(_info_path(lock_path), {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
            "since_unix": time.time(),
            "command": " ".join(sys.argv)[:500],
        })  # fmt: skip
    except OSError as exc:  # the information is a courtesy to waiting processes; never fail on it
        log.debug("%s: could not write the lock holder information (%s)", lock_path, exc)


def _remove_holder_info(lock_path: Path) -> None:
    path = _info_path(lock_path)
    try:
        if int(read_json(path).get("pid", -1)) == os.getpid():
            path.unlink()
    except (ValueError, OSError, AttributeError, TypeError):
        pass


def _lock_timeout_error(lock_path: Path, waited: float, timeout_s: float) -> CacheLockTimeout:
    return CacheLockTimeout(
        f"{lock_path}: the feature cache is still locked after {waited:.0f} s (data.lock_timeout_s="
        f"{timeout_s:g}), held by {_describe_holder(lock_path)}. Wait for that extraction to finish and run "
        "again, or raise data.lock_timeout_s"
    )


def _check_lock_timeout(timeout_s) -> None:
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                  or timeout_s < 0):
        raise ValueError(f"data.lock_timeout_s: expected a number of seconds >= 0, received {timeout_s!r}")


@contextlib.contextmanager
def _locked(lock_path: Path, timeout_s: Optional[float] = LOCK_TIMEOUT_S):
    """An exclusive lock on ``lock_path`` (POSIX); yields its file descriptor (None where ``fcntl`` does not
    exist, and then nothing is locked).

    ``fcntl.lockf`` takes a POSIX record lock: it belongs to this process, a forked child does not
    inherit it, and the kernel releases it when the process dies however it dies (``flock`` locks, by
    contrast, live as long as any forked copy of the descriptor does). While another process holds it,
    this one logs who (:func:`_describe_holder`), tries again every ``_LOCK_POLL_S`` seconds, and raises
    :class:`CacheLockTimeout` after ``timeout_s`` seconds (None: waits for good).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield None
        return
    _check_lock_timeout(timeout_s)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    deadline = None if timeout_s is None else started + float(timeout_s)
    in_process = _process_lock(lock_path)
    if not in_process.acquire(timeout=-1 if deadline is None else float(timeout_s)):
        raise _lock_timeout_error(lock_path, time.monotonic() - started, float(timeout_s))
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            last_log = None
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EAGAIN):  # not "held by another process"
                        raise ValueError(f"{lock_path}: cannot lock the feature cache ({exc})") from exc
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        raise _lock_timeout_error(lock_path, now - started, float(timeout_s)) from None
                    if last_log is None or now - last_log >= _LOCK_LOG_EVERY_S:
                        limit = "for good" if deadline is None else f"up to {timeout_s:g} s (data.lock_timeout_s)"
                        log.warning("%s: waiting %s for the lock of the feature cache, held by %s",
                                    lock_path, limit, _describe_holder(lock_path))  # fmt: skip
                        last_log = now
                    time.sleep(_LOCK_POLL_S if deadline is None else max(0.0, min(_LOCK_POLL_S, deadline - now)))
            if last_log is not None:
                log.info("%s: lock acquired after %.0f s", lock_path, time.monotonic() - started)
            _write_holder_info(lock_path)
            try:
                yield fd
            finally:
                _remove_holder_info(lock_path)
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        in_process.release()


def _mp_context():
    # fork is cheap and needs no importable __main__; the workers only use numpy and librosa.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker process end when ``parent_pid`` (the process that started the pool) ends.

    On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); everywhere, a
    daemon thread checks every second that the parent is still this process's parent (an orphan is
    re-parented). Either way an extraction killed with ``kill -9`` leaves no worker behind.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
                log.debug("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())
        except (OSError, AttributeError) as exc:
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable (%s)", exc)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_init(parent_pid: int, lock_fd: Optional[int]) -> None:
    """Initializer of the extraction workers: drop the inherited descriptor of the cache lock (a fork copies
    every descriptor; the record lock itself stays the parent's) and die with the parent."""
    if lock_fd is not None:
        with contextlib.suppress(OSError):
            os.close(lock_fd)
    _die_with_parent(parent_pid)


@dataclass(frozen=True)
class PruneReport:
    """What :meth:`FeatureCache.prune` deleted from ``folder``, and the stale rows it had to keep."""

    folder: Path
    removed: tuple  # file names deleted: unread and unrecorded shards, temporary files of killed writes
    freed_bytes: int
    stale_rows: int  # rows of kept shards that no entry reads (their files were extracted again)
    stale_bytes: int

    def describe(self) -> str:
        kept = (f"; {self.stale_rows} stale row(s) ({self.stale_bytes / 1e6:.1f} MB) stay in shards that still hold "
                f"live rows (delete the folder to rebuild it without them)" if self.stale_rows else "")
        return f"{self.folder}: pruned {len(self.removed)} file(s), {self.freed_bytes / 1e6:.1f} MB freed{kept}"


class FeatureCache:
    """Cached features of one :class:`FeatureConfig` (or any :class:`Extractor`) under ``cache_dir``.

    Args:
        cache_dir: the cache root (``data.cache_dir``); this config's folder is ``<kind>-<hash>`` inside it
            (``mfcc-<hash>`` for MFCCs).
        cfg: the feature config, or an extractor (e.g. from :mod:`emodarts_tf.data.frame_features`).

    Example:
        >>> cache = FeatureCache("cache", FeatureConfig())          # doctest: +SKIP
        >>> errors = cache.extract(paths, workers=0)                 # doctest: +SKIP
        >>> x = cache.load([p for p in paths if p not in errors])    # doctest: +SKIP
    """

    def __init__(self, cache_dir: str | os.PathLike, cfg: Union[FeatureConfig, Extractor]):
        self.cfg = cfg
        self.extractor = cfg if isinstance(cfg, Extractor) else feature_extractor(cfg)
        self.shape = tuple(self.extractor.shape)
        self.key = self.extractor.key
        self.dir = Path(cache_dir).expanduser() / self.extractor.folder
        self.manifest_path = self.dir / "manifest.json"
        self.journal_path = self.dir / JOURNAL_NAME
        self._files: dict = {}
        self._shards: dict = {}  # shard name -> rows
        self._arrays: dict = {}  # shard name -> loaded array (memory-mapped)
        self._manifest_bytes = 0  # size of manifest.json as last read or written (0: none usable)
        self._journal_bytes = 0  # size of the journal as last read or appended to
        self._journal_dirty = False  # it was unreadable, or held a cut-off or unusable line, when read
        self._journal_unreadable = False  # reading it raised an OSError (its records may still be good)
        self._next_shard = 0  # no shard number below it is given out again (manifest "next_shard")
        self._read_manifest()

    # ----------------------------------------------------------------------------------- manifest
    def _read_manifest(self) -> None:
        """The state: manifest.json, then the journal's records in the order they were appended.

        Read without the lock: a writer replaces manifest.json before it removes the journal whose records the
        new manifest holds, so a manifest that is still the same file after the journal was read makes a state
        the writer had; when it was replaced meanwhile, both are read again. The manifest stays open until that
        comparison, so that its inode cannot be reused by a newer file in between."""
        for attempt in range(1, _READ_ATTEMPTS + 1):
            try:
                handle = self.manifest_path.open("rb")
            except FileNotFoundError:
                handle = None
            except OSError as exc:
                log.warning("%s: unreadable cache manifest (%s); extracting again", self.manifest_path, exc)
                handle = None
            with handle if handle is not None else contextlib.nullcontext():
                shards, files, identity, usable = self._read_snapshot(handle)
                if usable:
                    for record in self._journal_records():
                        shards.update(record["shards"])
                        files.update(record["files"])
                same = identity == _file_identity(self.manifest_path)
            if same:
                break
            if attempt == _READ_ATTEMPTS:
                log.warning("%s was rewritten during each of %d reads; the state read may lack the latest shards, "
                            "whose files then count as not extracted", self.manifest_path, _READ_ATTEMPTS)
                break
            log.debug("%s was rewritten while it was read; reading it again", self.manifest_path)
        self._arrays = {}
        # Entries whose shard went missing are dropped, and their files extracted again.
        present = {name for name in shards if (self.dir / name).is_file()}
        for name in sorted(set(shards) - present):
            log.warning("%s: shard %s is missing; its files will be extracted again", self.dir, name)
        self._shards = {name: shards[name]["rows"] for name in present}
        self._files = {p: e for p, e in files.items() if "error" in e or e.get("shard") in present}

    def _read_snapshot(self, handle) -> tuple:
        """``(shards, files, identity, usable)`` of manifest.json open as ``handle`` (None: none could be opened):
        ``identity`` (device, inode) of the file read, or of whatever is at its path when none was opened; not
        ``usable``: no entries, and the journal, which only extends a manifest, is not read."""
        self._manifest_bytes, self._journal_bytes, self._journal_dirty = 0, 0, False
        self._journal_unreadable, self._next_shard = False, 0
        if handle is None:
            if self.journal_path.exists():
                log.warning("%s: no manifest to extend; not read, and its files will be extracted again",
                            self.journal_path)
            return {}, {}, _file_identity(self.manifest_path), False
        try:
            st = os.fstat(handle.fileno())
            raw = handle.read()
        except OSError as exc:
            log.warning("%s: unreadable cache manifest (%s); extracting again", self.manifest_path, exc)
            return {}, {}, _file_identity(self.manifest_path), False
        try:
            data = json.loads(raw.decode("utf-8"))
            if data.get("feature_hash") != self.key or data.get("format") != MANIFEST_FORMAT:
                raise ValueError("feature hash or format differs from this folder's")
            if "shape" in data and list(data["shape"]) != list(self.shape):
                raise ValueError(f"its shape {data['shape']} differs from this extractor's {list(self.shape)}")
            shards = {str(name): {"rows": int(v["rows"])} for name, v in dict(data["shards"]).items()}
            files = dict(data["files"])
            next_shard = int(data.get("next_shard", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON and UTF-8 errors are ValueErrors
            journal = f"; {self.journal_path.name} is not read either" if self.journal_path.exists() else ""
            log.warning("%s: unusable cache manifest (%s); extracting again%s", self.manifest_path, exc, journal)
            return {}, {}, (st.st_dev, st.st_ino), False
        self._manifest_bytes, self._next_shard = len(raw), next_shard
        return shards, files, (st.st_dev, st.st_ino), True

    def _journal_records(self) -> list:
        """The journal's usable records (``{"shards": ..., "files": ...}``), in order; none when there is none."""
        try:
            raw = self.journal_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._journal_dirty = self._journal_unreadable = True
            log.warning("%s: unreadable (%s); the files it records will be extracted again", self.journal_path, exc)
            return []
        self._journal_bytes = len(raw)
        lines = raw.split(b"\n")
        if lines[-1]:
            self._journal_dirty = True
            log.info("%s: its last record is cut off (still being written, or its writer was killed); until it is "
                     "complete, that shard's files count as not extracted", self.journal_path)
        records = []
        for number, line in enumerate(lines[:-1], start=1):
            try:
                record = json.loads(line)
                if record.get("feature_hash") != self.key:
                    raise ValueError(f"feature hash {record.get('feature_hash')!r}, expected {self.key!r}")
                shards = {str(name): {"rows": int(v["rows"])} for name, v in dict(record["shards"]).items()}
                records.append({"shards": shards, "files": dict(record["files"])})
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self._journal_dirty = True
                log.warning("%s: record %d is unusable (%s); its files will be extracted again",
                            self.journal_path, number, exc)
        return records

    def _append_journal(self, shards: dict, files: dict) -> None:
        """One finished shard's record (or a chunk's errors alone), appended to the journal and flushed."""
        line = json.dumps({"feature_hash": self.key, "shards": shards, "files": files}, separators=(",", ":"))
        self._journal_bytes = append_durably(self.journal_path, (line + "\n").encode("utf-8"))

    def _write_manifest(self) -> None:
        """The whole state as manifest.json (atomically), then the journal dropped: its records are in it now. A
        kill between the two leaves a journal whose records the manifest holds already; reading it again
        changes nothing."""
        write_json(
            self.manifest_path,
            {
                "format": MANIFEST_FORMAT,
                "feature_hash": self.key,
                "kind": self.extractor.kind,
                "feature_config": self.extractor.config,
                "feature_version": self.extractor.version,
                "shape": list(self.shape),
                "dtype": "float32",
                "shards": {name: {"rows": rows} for name, rows in sorted(self._shards.items())},
                "next_shard": self._next_shard_index(),
                "files": self._files,
            },
        )
        self._manifest_bytes = self.manifest_path.stat().st_size
        self._journal_bytes, self._journal_dirty = 0, False
        try:
            self.journal_path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s: could not remove it (%s); the manifest holds its records, so reading them again "
                        "changes nothing", self.journal_path, exc)

    # -------------------------------------------------------------------------------------- state
    def _source(self, path: str) -> Optional[str]:
        """The file the features of ``path`` are computed from (``path`` itself unless the extractor says)."""
        return path if self.extractor.source is None else self.extractor.source(path)

    def _fresh(self, path: str) -> Optional[dict]:
        """The manifest entry of ``path`` if it still describes the file on disk."""
        entry = self._files.get(path)
        if entry is None:
            return None
        source = self._source(path)
        if entry.get("source", path) != source:
            return None
        sig = _signature(source)
        stored = (entry.get("size"), entry.get("mtime_ns"))
        if sig is None:
            return entry if stored == (None, None) else None
        return entry if tuple(sig) == stored else None

    def status(self, paths) -> tuple:
        """``(cached paths, {path: error}, paths still to extract)`` for ``paths``."""
        cached, errors, todo = [], {}, []
        for path in paths:
            entry = self._fresh(path)
            if entry is None:
                todo.append(path)
            elif "error" in entry:
                errors[path] = entry["error"]
            else:
                cached.append(path)
        return cached, errors, todo

    def errors(self, paths) -> dict:
        """``{path: error}`` for those of ``paths`` that failed (fresh entries only)."""
        return self.status(paths)[1]

    # --------------------------------------------------------------------------------- extraction
    def _next_shard_index(self) -> int:
        """The number of the next shard: above every shard recorded or on disk, and never below the manifest's
        ``next_shard``, so that a number :meth:`prune` freed is not given to other rows."""
        indices = [int(m.group(1)) for name in self._shards if (m := _SHARD_RE.match(name))]
        if self.dir.is_dir():
            indices += [int(m.group(1)) for p in self.dir.iterdir() if (m := _SHARD_RE.match(p.name))]
        return max(max(indices, default=-1) + 1, self._next_shard)

    def _store(self, ok: list, array: np.ndarray, errors: dict, shard_index: int) -> None:
        """Write one chunk's shard, then record it: in the journal, or by rewriting the manifest when there is
        none yet or the journal has grown as large as it (so the bytes written stay proportional to the
        corpus: each rewrite at least doubles what the manifest holds since the previous one)."""
        shards, files = {}, {}
        if ok:
            name = f"shard-{shard_index:05d}.npy"
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(array, dtype=np.float32))
            atomic_write_bytes(self.dir / name, buf.getvalue())
            shards[name] = {"rows": len(ok)}
            for row, path in enumerate(ok):
                files[path] = {**self._dated(path), "shard": name, "row": row}
        for path, problem in errors.items():
            files[path] = {**self._dated(path), "error": problem}
        for name, info in shards.items():
            self._shards[name] = info["rows"]
            self._arrays.pop(name, None)
        self._files.update(files)
        if not self._manifest_bytes:
            self._write_manifest()
            return
        self._append_journal(shards, files)
        if self._journal_bytes >= self._manifest_bytes:
            self._write_manifest()

    def _dated(self, path: str) -> dict:
        """Size and mtime of the file behind ``path`` (and that file, when it is another one)."""
        source = self._source(path)
        size, mtime_ns = _signature(source) or (None, None)
        entry = {"size": size, "mtime_ns": mtime_ns}
        if source != path:
            entry["source"] = source
        return entry

    def extract(self, paths, workers: int = 0, progress: bool = True, shard_size: int = SHARD_SIZE,
                lock_timeout_s: Optional[float] = LOCK_TIMEOUT_S) -> dict:
        """Extract the features of ``paths`` not cached yet; returns ``{path: error}`` for every failure.

        Args:
            paths: absolute audio paths.
            workers: processes; 0 = the usable cores (the CPU affinity); 1 = in this process (always, for an
                extractor that runs ``in_process``).
            progress: show a tqdm progress bar.
            shard_size: utterances per shard at most.
            lock_timeout_s: longest wait for another process's extraction into this folder
                (``data.lock_timeout_s``); None waits for good.

        Raises:
            CacheLockTimeout: (a ValueError) the folder stayed locked for ``lock_timeout_s`` seconds; the
                message names the holder.
        """
        from tqdm.auto import tqdm

        if shard_size < 1:
            raise ValueError(f"shard_size: expected a positive integer, received {shard_size!r}")
        _check_lock_timeout(lock_timeout_s)
        paths = list(dict.fromkeys(str(p) for p in paths))
        self.dir.mkdir(parents=True, exist_ok=True)
        # Everything cached already (the manifest is replaced atomically, the journal appended to, and
        # _read_manifest reads a state some writer had): no lock, so a run on cached files does
        # not wait for another process's extraction of other files into the same folder.
        self._read_manifest()
        _, errors, todo = self.status(paths)
        if not todo:
            return errors
        with _locked(self.dir / ".lock", lock_timeout_s) as lock_fd:
            self._read_manifest()  # another process may have extracted meanwhile
            _, _, todo = self.status(paths)
            if todo:
                if self._journal_dirty or (self.journal_path.exists() and not self._manifest_bytes):
                    # A killed extraction's cut-off line (under the lock, nobody is writing it), an unusable or
                    # unreadable journal, or one that extends no usable manifest: the state is written anew
                    # before anything is appended, so that no reader warns about them again.
                    self._write_manifest()
                workers = workers or usable_cores()
                if workers < 0:
                    raise ValueError(f"data.workers: expected 0 (all cores) or more, received {workers}")
                # Enough chunks to keep every worker busy to the end, none larger than a shard.
                chunk = max(1, min(shard_size, math.ceil(len(todo) / (4 * workers))))
                chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
                extractor = self.extractor
                serial = workers == 1 or len(chunks) == 1 or extractor.in_process
                log.info(
                    "extracting %s of %d file(s) into %s (%d worker(s), %d chunk(s))",
                    extractor.name, len(todo), self.dir, 1 if serial else min(workers, len(chunks)), len(chunks),
                )
                bar = tqdm(total=len(todo), unit="file", desc=extractor.name, disable=not progress, leave=False)
                next_index = self._next_shard_index()
                try:
                    if serial:
                        for part in chunks:
                            ok, array, errors = _extract_chunk(part, extractor.extract, self.shape)
                            self._store(ok, array, errors, next_index)
                            next_index += 1
                            bar.update(len(part))
                    else:
                        context = _mp_context()
                        # A forked worker gets a copy of the lock's descriptor: the initializer closes it
                        # (a spawned one starts without it) and ties the worker's life to this process.
                        inherited = lock_fd if context.get_start_method() == "fork" else None
                        pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context,
                                                   initializer=_worker_init, initargs=(os.getpid(), inherited))
                        try:
                            pending = {pool.submit(_extract_chunk, part, extractor.extract, self.shape): part
                                       for part in chunks}
                            while pending:
                                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                                for future in done:
                                    part = pending.pop(future)
                                    ok, array, errors = future.result()
                                    self._store(ok, array, errors, next_index)
                                    next_index += 1
                                    bar.update(len(part))
                        except BaseException:
                            # Interrupted: the finished shards are recorded; drop the rest quickly.
                            pool.shutdown(wait=False, cancel_futures=True)
                            raise
                        pool.shutdown(wait=True)
                finally:
                    bar.close()
                if self._journal_bytes:
                    # A finished extraction leaves one manifest (one more write per extraction), which is also
                    # what a reader that knows no journal reads.
                    self._write_manifest()
        return self.errors(paths)

    # ------------------------------------------------------------------------------------ pruning
    def prune(self, lock_timeout_s: Optional[float] = LOCK_TIMEOUT_S) -> PruneReport:
        """Delete what no entry of this folder reads any more; returns a :class:`PruneReport`.

        A file extracted again (its size or mtime changed, e.g. a corpus copied anew) gets a row in a new shard,
        and its old row stays where it was; a shard all of whose rows were replaced that way is read by nothing.
        Those shards go, and so do the shard files that no usable record names (written by an extraction killed
        before it recorded them, named by an unusable journal line, or left behind when an unusable manifest was
        replaced; only when the manifest is usable) and the temporary files of killed writes. A shard that still
        holds one live row is kept whole: its stale rows are counted in the report (deleting the folder rebuilds
        it without them). The numbers of deleted shards are not given out again (the manifest's
        ``next_shard``).

        Runs under the folder's lock, so no extraction into it runs meanwhile. A run that read this folder's
        state before some of its files were extracted again, and has not yet opened their old shard, would not
        find it: prune when no other run reads the folder.

        Raises:
            CacheLockTimeout: (a ValueError) the folder stayed locked for ``lock_timeout_s`` seconds.
            ValueError: the journal could not be read (its shards would count as unrecorded); nothing is deleted.
        """
        _check_lock_timeout(lock_timeout_s)
        if not self.dir.is_dir():
            log.info("%s: no such cache folder; nothing to prune", self.dir)
            return PruneReport(self.dir, (), 0, 0, 0)
        with _locked(self.dir / ".lock", lock_timeout_s):
            self._read_manifest()
            if self._journal_unreadable:
                raise ValueError(f"{self.journal_path}: unreadable, so the shards it records cannot be told from "
                                 f"unrecorded ones; nothing pruned (make it readable, then prune again)")
            live = Counter(entry["shard"] for entry in self._files.values() if "shard" in entry)  # rows per shard
            unread = sorted(name for name in self._shards if name not in live)
            on_disk = sorted(p.name for p in self.dir.iterdir())
            # Without a usable manifest nothing says which shard files are recorded: those are left alone.
            unrecorded = ([n for n in on_disk if _SHARD_RE.match(n) and n not in self._shards]
                          if self._manifest_bytes else [])
            leftovers = [n for n in on_disk if _TEMP_RE.match(n)]
            row_bytes = 4 * math.prod(self.shape)
            stale_rows = sum(rows - live[name] for name, rows in self._shards.items() if name in live)
            if unread or self._journal_bytes or self._journal_dirty:
                for name in unread:
                    del self._shards[name]
                    self._arrays.pop(name, None)
                self._write_manifest()  # first, so that no manifest names a deleted shard
            removed, freed = [], 0
            for name in unread + unrecorded + leftovers:
                path = self.dir / name
                try:
                    size = path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed.append(name)
                freed += size
        report = PruneReport(self.dir, tuple(removed), freed, stale_rows, stale_rows * row_bytes)
        log.info("%s", report.describe())
        return report

    # ------------------------------------------------------------------------------------ loading
    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            if not self._arrays:  # every shard may be mapped, and each mapping holds a file descriptor
                raise_open_file_limit(len(self._shards) + OPEN_FILES_MARGIN,
                                      f"{len(self._shards)} shards of {self.dir}")
            array = np.load(self.dir / name, mmap_mode="r")
            expected = (self._shards[name], *self.shape)
            if array.shape != expected or array.dtype != np.float32:
                raise ValueError(
                    f"{self.dir / name}: expected float32 {expected}, found {array.dtype} {array.shape}; "
                    f"delete {self.dir} to rebuild the cache"
                )
            self._arrays[name] = array
        return self._arrays[name]

    def load(self, paths) -> np.ndarray:
        """``(n, *shape)`` float32 features of ``paths``, e.g. ``(n, n_mfcc, frames)`` (all must be cached and
        fresh)."""
        paths = [str(p) for p in paths]
        out = np.empty((len(paths), *self.shape), dtype=np.float32)
        by_shard: dict = {}
        for i, path in enumerate(paths):
            entry = self._files.get(path)
            if entry is None or "shard" not in entry:
                reason = entry["error"] if entry else "not extracted"
                raise ValueError(f"{path}: no cached features in {self.dir} ({reason})")
            by_shard.setdefault(entry["shard"], ([], []))
            by_shard[entry["shard"]][0].append(i)
            by_shard[entry["shard"]][1].append(entry["row"])
        for name, (positions, rows) in by_shard.items():
            array = self._array(name)
            order = np.argsort(rows)  # sorted reads from the memory map
            out[np.asarray(positions)[order]] = array[np.asarray(rows)[order]]
        return out
