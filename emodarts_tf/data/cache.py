"""The MFCC feature cache: shards of extracted features plus a JSON manifest, keyed by the feature config.

Layout (``<cache_dir>/mfcc-<hash>/``)::

    manifest.json        feature config, its hash, shape, and for each audio file (absolute path) its size,
                         mtime and either the shard/row of its features or the error it raised
    shard-00000.npy      float32 (rows, n_mfcc, frames)
    shard-00001.npy      ...

- The same feature config finds the same folder and reuses it; another config hashes to another folder.
- Extraction runs in parallel (``concurrent.futures.ProcessPoolExecutor``), one chunk of files per task;
  each finished chunk becomes a shard written atomically, then the manifest is rewritten atomically. An
  interrupted extraction keeps its finished shards, and the next run extracts only what is missing.
- A file whose size or mtime changed is extracted again.
- A file that failed (unreadable, empty, silent, truncated, not audio) is recorded with its error, so it
  is reported again next time without being read again.
- Concurrent extractions into the same folder are serialised by a lock file.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import multiprocessing
import os
import re
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np

from emodarts_tf.config import FeatureConfig
from emodarts_tf.data import features as F
from emodarts_tf.utils.io import atomic_write_bytes, read_json, write_json

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
SHARD_SIZE = 128  # utterances per shard at most (8 MB at the paper's 128 x 128 float32)
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.npy$")


def _signature(path: str) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _extract_chunk(paths: list, cfg: FeatureConfig) -> tuple:
    """Worker task: features of the files that succeed, and an error message for each that fails."""
    rows, ok, errors = [], [], {}
    for path in paths:
        try:
            rows.append(F.extract_mfcc(path, cfg))
            ok.append(path)
        except F.AudioError as exc:
            errors[path] = exc.problem
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the extraction
            errors[path] = f"feature extraction failed ({type(exc).__name__}: {exc})"
    n_mfcc, frames = F.feature_shape(cfg)
    array = np.stack(rows).astype(np.float32) if rows else np.zeros((0, n_mfcc, frames), np.float32)
    return ok, array, errors


@contextlib.contextmanager
def _locked(lock_path: Path):
    """An exclusive advisory lock (POSIX); a no-op where ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _mp_context():
    # fork is cheap and needs no importable __main__; the workers only use numpy and librosa.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


class FeatureCache:
    """Cached MFCCs for one :class:`FeatureConfig` under ``cache_dir``.

    Args:
        cache_dir: the cache root (``data.cache_dir``); this config's folder is ``mfcc-<hash>`` inside it.
        cfg: the feature config.

    Example:
        >>> cache = FeatureCache("cache", FeatureConfig())          # doctest: +SKIP
        >>> errors = cache.extract(paths, workers=0)                 # doctest: +SKIP
        >>> x = cache.load([p for p in paths if p not in errors])    # doctest: +SKIP
    """

    def __init__(self, cache_dir: str | os.PathLike, cfg: FeatureConfig):
        self.cfg = cfg
        self.shape = F.feature_shape(cfg)
        self.key = F.feature_config_hash(cfg)
        self.dir = Path(cache_dir).expanduser() / f"mfcc-{self.key}"
        self.manifest_path = self.dir / "manifest.json"
        self._files: dict = {}
        self._shards: dict = {}  # shard name -> rows
        self._arrays: dict = {}  # shard name -> loaded array (memory-mapped)
        self._read_manifest()

    # ----------------------------------------------------------------------------------- manifest
    def _read_manifest(self) -> None:
        self._files, self._shards, self._arrays = {}, {}, {}
        if not self.manifest_path.is_file():
            return
        try:
            data = read_json(self.manifest_path)
            if data.get("feature_hash") != self.key or data.get("format") != MANIFEST_FORMAT:
                raise ValueError("feature hash or format differs from this folder's")
            shards, files = dict(data["shards"]), dict(data["files"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: unusable cache manifest (%s); extracting again", self.manifest_path, exc)
            return
        # Entries whose shard went missing are dropped, and their files extracted again.
        present = {name for name in shards if (self.dir / name).is_file()}
        for name in sorted(set(shards) - present):
            log.warning("%s: shard %s is missing; its files will be extracted again", self.dir, name)
        self._shards = {name: int(shards[name]["rows"]) for name in present}
        self._files = {p: e for p, e in files.items() if "error" in e or e.get("shard") in present}

    def _write_manifest(self) -> None:
        write_json(
            self.manifest_path,
            {
                "format": MANIFEST_FORMAT,
                "feature_hash": self.key,
                "feature_config": asdict(self.cfg),
                "feature_version": F.FEATURE_VERSION,
                "shape": list(self.shape),
                "dtype": "float32",
                "shards": {name: {"rows": rows} for name, rows in sorted(self._shards.items())},
                "files": self._files,
            },
        )

    # -------------------------------------------------------------------------------------- state
    def _fresh(self, path: str) -> Optional[dict]:
        """The manifest entry of ``path`` if it still describes the file on disk."""
        entry = self._files.get(path)
        if entry is None:
            return None
        sig = _signature(path)
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
        indices = [int(m.group(1)) for name in self._shards if (m := _SHARD_RE.match(name))]
        if self.dir.is_dir():
            indices += [int(m.group(1)) for p in self.dir.iterdir() if (m := _SHARD_RE.match(p.name))]
        return max(indices, default=-1) + 1

    def _store(self, ok: list, array: np.ndarray, errors: dict, shard_index: int) -> None:
        if ok:
            name = f"shard-{shard_index:05d}.npy"
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(array, dtype=np.float32))
            atomic_write_bytes(self.dir / name, buf.getvalue())
            self._shards[name] = len(ok)
            self._arrays.pop(name, None)
            for row, path in enumerate(ok):
                size, mtime_ns = _signature(path) or (None, None)
                self._files[path] = {"size": size, "mtime_ns": mtime_ns, "shard": name, "row": row}
        for path, problem in errors.items():
            size, mtime_ns = _signature(path) or (None, None)
            self._files[path] = {"size": size, "mtime_ns": mtime_ns, "error": problem}
        self._write_manifest()

    def extract(self, paths, workers: int = 0, progress: bool = True, shard_size: int = SHARD_SIZE) -> dict:
        """Extract the features of ``paths`` not cached yet; returns ``{path: error}`` for every failure.

        Args:
            paths: absolute audio paths.
            workers: processes; 0 = ``os.cpu_count()``; 1 = in this process.
            progress: show a tqdm progress bar.
            shard_size: utterances per shard at most.
        """
        from tqdm.auto import tqdm

        if shard_size < 1:
            raise ValueError(f"shard_size: expected a positive integer, received {shard_size!r}")
        paths = list(dict.fromkeys(str(p) for p in paths))
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir / ".lock"):
            self._read_manifest()  # another process may have extracted meanwhile
            _, _, todo = self.status(paths)
            if todo:
                workers = workers or os.cpu_count() or 1
                if workers < 0:
                    raise ValueError(f"data.workers: expected 0 (all cores) or more, received {workers}")
                # Enough chunks to keep every worker busy to the end, none larger than a shard.
                chunk = max(1, min(shard_size, math.ceil(len(todo) / (4 * workers))))
                chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
                log.info(
                    "extracting MFCCs of %d file(s) into %s (%d worker(s), %d chunk(s))",
                    len(todo), self.dir, min(workers, len(chunks)), len(chunks),
                )
                bar = tqdm(total=len(todo), unit="file", desc="MFCC", disable=not progress, leave=False)
                next_index = self._next_shard_index()
                try:
                    if workers == 1 or len(chunks) == 1:
                        for part in chunks:
                            ok, array, errors = _extract_chunk(part, self.cfg)
                            self._store(ok, array, errors, next_index)
                            next_index += 1
                            bar.update(len(part))
                    else:
                        pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=_mp_context())
                        try:
                            pending = {pool.submit(_extract_chunk, part, self.cfg): part for part in chunks}
                            while pending:
                                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                                for future in done:
                                    part = pending.pop(future)
                                    ok, array, errors = future.result()
                                    self._store(ok, array, errors, next_index)
                                    next_index += 1
                                    bar.update(len(part))
                        except BaseException:
                            # Interrupted: the finished shards are in the manifest; drop the rest quickly.
                            pool.shutdown(wait=False, cancel_futures=True)
                            raise
                        pool.shutdown(wait=True)
                finally:
                    bar.close()
        return self.errors(paths)

    # ------------------------------------------------------------------------------------ loading
    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
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
        """``(n, n_mfcc, frames)`` float32 features of ``paths`` (all must be cached and fresh)."""
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
