"""Frame-level feature sequences ``(frames, dim)`` per utterance (EmotionNAS's second stream), cached.

Three sources (``frames.source``, :class:`~emodarts_tf.config.FramesConfig`):

- ``opensmile`` (default; offline): the low-level descriptors of audEERING's openSMILE,
  ``opensmile.Smile(feature_set=frames.opensmile_set, feature_level=LowLevelDescriptors)``: eGeMAPSv02
  (25 values per 10 ms frame) or ComParE_2016 (65).
- ``model``: a model on disk (``frames.model_path``), a TensorFlow SavedModel folder or a ``.keras`` file,
  that maps a mono float32 waveform at ``frames.sample_rate``, ``(1, samples)`` or ``(samples,)`` (read from
  its input signature), to ``(1, frames, dim)`` or ``(frames, dim)``: e.g. an export of wav2vec 2.0, HuBERT
  or TRILL. It runs once per utterance, in the calling process (one copy of TensorFlow and of the model).
  Nothing is downloaded.
- ``npy``: one precomputed ``(frames, dim)`` array per utterance: the ``features`` column of a CSV manifest
  (``frames.npy_dir`` None), or ``<npy_dir>/<audio path relative to the corpus root, suffix .npy>``
  (``wav/03a01Fa.wav`` -> ``<npy_dir>/wav/03a01Fa.npy``). ``dim`` is ``frames.dim``, else the dimension of
  the arrays already cached, else the most common one among the arrays.

For the audio sources the audio is read (mono, resampled to ``frames.sample_rate``) and cut to
``frames.duration_s`` (its start kept), but not padded: padding happens on the sequence. Every sequence is
then brought to one shape ``(frames, dim)`` (:func:`fixed_length`): cut to ``frames * time_pool`` frames (the
start kept, as MFCCs keep the start of the audio), pooled over windows of ``time_pool`` frames (``max`` or
``mean``; a last, partial window pools the frames it has) and zero-padded at the end to ``frames``.

A file that cannot be used (audio that fails as in :func:`~emodarts_tf.data.features.load_audio`; a missing,
empty, unreadable, non-2-D, empty, non-finite or wrong-dimension ``.npy``; a source that returns non-finite
values or a wrong shape) raises :class:`FrameError` naming the file and the problem; the cache records it,
reports it on every call, skips it and extracts the rest.

The sequences live in the feature cache (:class:`~emodarts_tf.data.cache.FeatureCache`, folder
``<cache_dir>/frames-<source>-<hash>``: sharded, resumable, locked, bad files recorded). The hash covers the
fields of ``frames`` the source reads, the library versions and, for a model, the content of the model
file(s) (:func:`model_identity`).

How the integration calls it (public functions)::

    from emodarts_tf.data.frame_features import corpus_root, frame_cache, load_frames

    paths = [r.path for r in records]               # the corpus's records (audio paths, as the MFCC cache)
    features = {r.path: r.features for r in records}  # the manifest's `features` column ("" where none)
    cache = frame_cache(config.data.cache_dir, config.frames, paths, features, corpus_root(config.data))
    errors = cache.extract(paths, workers=config.data.workers, progress=True,
                           lock_timeout_s=config.data.lock_timeout_s)   # {path: problem}, to report and skip
    x = cache.load([p for p in paths if p not in errors])              # (n, frames, dim) float32
    # later, e.g. for a fold (same arguments; nothing is extracted):
    x = load_frames(config.data.cache_dir, config.frames, fold_paths, features, corpus_root(config.data))

The model source extracts in the calling process whatever ``workers`` says; the others use the workers.

``frame_shape(cache)`` (= ``cache.shape``) is the ``(frames, dim)`` of every row; :func:`validate_frames_config`
checks a config up front.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections import Counter
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from emodarts_tf.config import DataConfig, FramesConfig
from emodarts_tf.data import features as F
from emodarts_tf.data.cache import Extractor, FeatureCache
from emodarts_tf.utils.io import read_json

log = logging.getLogger(__name__)

# Bumped whenever the computation below changes in a way FramesConfig does not capture (part of the key).
FRAMES_VERSION = 1
FRAME_SOURCES = ("opensmile", "model", "npy")
OPENSMILE_SETS = {"eGeMAPSv02": 25, "ComParE_2016": 65}  # feature set -> low-level descriptors per frame
POOL_MODES = ("max", "mean")


class FrameError(ValueError):
    """A file whose frame-level features cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# --------------------------------------------------------------------------------------------- config
def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def validate_frames_config(cfg: FramesConfig) -> None:
    """Raise ``ValueError`` naming the key (``frames.<key>``) and the bad value when ``cfg`` cannot be used."""
    if cfg.source not in FRAME_SOURCES:
        raise ValueError(f"frames.source: expected one of {list(FRAME_SOURCES)}, received {cfg.source!r}")
    for name in ("frames", "time_pool"):
        if not _positive_int(getattr(cfg, name)):
            raise ValueError(f"frames.{name}: expected a positive integer, received {getattr(cfg, name)!r}")
    if cfg.pool not in POOL_MODES:
        raise ValueError(f"frames.pool: expected one of {list(POOL_MODES)}, received {cfg.pool!r}")
    if cfg.dim is not None and not _positive_int(cfg.dim):
        raise ValueError(f"frames.dim: expected a positive integer or null (from the source), received {cfg.dim!r}")
    if cfg.source in ("opensmile", "model"):
        if not _positive_int(cfg.sample_rate):
            raise ValueError(f"frames.sample_rate: expected a positive rate in Hz, received {cfg.sample_rate!r}")
        seconds = cfg.duration_s
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"frames.duration_s: expected a positive duration in seconds, received {seconds!r}")
    if cfg.source == "opensmile":
        if cfg.opensmile_set not in OPENSMILE_SETS:
            raise ValueError(
                f"frames.opensmile_set: expected one of {list(OPENSMILE_SETS)}, received {cfg.opensmile_set!r}"
            )
        expected = OPENSMILE_SETS[cfg.opensmile_set]
        if cfg.dim is not None and cfg.dim != expected:
            raise ValueError(f"frames.dim: {cfg.opensmile_set} has {expected} low-level descriptors, received {cfg.dim}")
    elif cfg.source == "model":
        if not cfg.model_path:
            raise ValueError("frames.model_path: source 'model' needs a TF SavedModel folder or a .keras file, "
                             "received None")  # fmt: skip
        path = Path(cfg.model_path).expanduser()
        if path.is_dir():
            if not (path / "saved_model.pb").is_file():
                raise ValueError(f"frames.model_path {str(path)!r}: a folder without saved_model.pb (not a TF SavedModel)")
        elif not path.is_file():
            raise ValueError(f"frames.model_path {str(path)!r}: no such file or folder")
        elif path.suffix != ".keras":
            raise ValueError(f"frames.model_path {str(path)!r}: expected a SavedModel folder or a .keras file")
    elif cfg.npy_dir is not None and not Path(cfg.npy_dir).expanduser().is_dir():
        raise ValueError(f"frames.npy_dir {cfg.npy_dir!r}: no such folder")


def corpus_root(data: DataConfig) -> Path:
    """The folder the corpus's audio paths are relative to, which ``frames.npy_dir`` mirrors: ``data.root``
    for a corpus folder, the manifest's folder for ``csv``, the generated corpus's folder for ``demo``."""
    if data.root is None:
        from emodarts_tf.data.demo import DEMO_NAME

        return Path(os.path.abspath(Path(data.cache_dir).expanduser() / DEMO_NAME))
    # Absolute with the symbolic links kept, as the readers make the audio paths (a linked manifest's relative
    # paths are read from the link's folder).
    root = Path(os.path.abspath(Path(data.root).expanduser()))
    return root.parent if root.is_file() else root


# ----------------------------------------------------------------------------------- fixed length
def fixed_length(seq: np.ndarray, frames: int, time_pool: int = 1, pool: str = "mean") -> np.ndarray:
    """``(frames, dim)`` float32 from a ``(T, dim)`` sequence.

    Cut to ``frames * time_pool`` frames (the start kept), pooled over consecutive windows of ``time_pool``
    frames (``max`` or ``mean``; a last, partial window pools the frames it has), then zero-padded at the
    end to ``frames`` rows.
    """
    if pool not in POOL_MODES:
        raise ValueError(f"frames.pool: expected one of {list(POOL_MODES)}, received {pool!r}")
    seq = np.asarray(seq, dtype=np.float32)
    if seq.ndim != 2:
        raise ValueError(f"sequence: expected a 2-D (frames, dim) array, received shape {seq.shape}")
    seq = seq[: frames * time_pool]
    if time_pool > 1 and len(seq):
        starts = np.arange(0, len(seq), time_pool)
        if pool == "max":
            seq = np.maximum.reduceat(seq, starts, axis=0)
        else:
            counts = np.diff(np.append(starts, len(seq))).astype(np.float32)
            seq = np.add.reduceat(seq, starts, axis=0) / counts[:, None]
    out = np.zeros((frames, seq.shape[1]), dtype=np.float32)
    out[: len(seq)] = seq
    return out


def _checked(seq, path: str, what: str, dim: Optional[int]) -> np.ndarray:
    """``seq`` as a float32 ``(T, dim)`` array, or :class:`FrameError` saying what ``what`` returned instead."""
    seq = np.asarray(seq)
    if not (np.issubdtype(seq.dtype, np.floating) or np.issubdtype(seq.dtype, np.integer)):
        raise FrameError(path, f"{what}: expected a numeric array, found dtype {seq.dtype}")
    if seq.ndim != 2:
        raise FrameError(path, f"{what}: expected a 2-D (frames, dim) array, found shape {seq.shape}")
    if seq.size == 0:
        raise FrameError(path, f"{what}: empty array (shape {seq.shape})")
    if dim is not None and seq.shape[1] != dim:
        raise FrameError(path, f"{what}: {seq.shape[1]} values per frame, expected {dim}")
    bad = int(np.size(seq) - np.count_nonzero(np.isfinite(seq)))
    if bad:
        raise FrameError(path, f"{what}: {bad} non-finite value(s) (NaN or infinity) in shape {seq.shape}")
    return seq.astype(np.float32, copy=False)


def _audio(path: str, cfg: FramesConfig) -> np.ndarray:
    """Mono float32 audio at ``cfg.sample_rate``, cut to ``cfg.duration_s`` (never padded)."""
    y = F.read_audio(path, cfg.sample_rate)
    return y[: int(round(cfg.sample_rate * cfg.duration_s))]


# ------------------------------------------------------------------------------------------ openSMILE
# One Smile object per process and feature set: it wraps a native library and does not pickle, so each
# extraction worker builds its own on first use (keyed by pid: a forked worker never uses its parent's).
_SMILES: dict = {}


def _smile(feature_set: str):
    key = (os.getpid(), feature_set)
    if key not in _SMILES:
        import opensmile

        _SMILES[key] = opensmile.Smile(
            feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel.LowLevelDescriptors
        )
    return _SMILES[key]


def opensmile_frames(y: np.ndarray, sample_rate: int, feature_set: str) -> np.ndarray:
    """``(T, n_lld)`` low-level descriptors of the waveform ``y`` (10 ms frames), as openSMILE returns them.

    Raises:
        ValueError: openSMILE failed; the message holds its warnings (e.g. "Segment too short").
    """
    smile = _smile(feature_set)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = smile.process_signal(np.asarray(y, dtype=np.float32), sample_rate)
    values = table.to_numpy(dtype=np.float32)
    if caught and not np.all(np.isfinite(values)):
        raise ValueError("; ".join(sorted({str(w.message) for w in caught})))
    return values


def _extract_opensmile(path: str, cfg: FramesConfig) -> np.ndarray:
    _smile(cfg.opensmile_set)  # a library that fails to start stops the extraction instead of failing each file
    y = _audio(path, cfg)
    what = f"openSMILE {cfg.opensmile_set}"
    try:
        seq = opensmile_frames(y, cfg.sample_rate, cfg.opensmile_set)
    except Exception as exc:  # noqa: BLE001 - reported per file
        raise FrameError(path, f"{what} failed on {len(y) / cfg.sample_rate:.3f} s of audio ({exc})") from None
    seq = _checked(seq, path, what, OPENSMILE_SETS[cfg.opensmile_set])
    return fixed_length(seq, cfg.frames, cfg.time_pool, cfg.pool)


# ---------------------------------------------------------------------------------------------- model
def model_identity(model_path: str | os.PathLike) -> str:
    """A content hash of a model on disk: of a ``.keras`` file's bytes; of a SavedModel's ``saved_model.pb``
    and ``variables/variables.index`` (which holds a checksum of every variable) and the sizes of its
    variable shards. A copied or moved model keeps its identity; a retrained one gets another."""
    path = Path(model_path).expanduser()
    digest = hashlib.sha256()
    if path.is_dir():
        files = [path / "saved_model.pb", path / "variables" / "variables.index"]
        for file in files:
            if file.is_file():
                digest.update(file.name.encode() + b"\0" + file.read_bytes())
        shards = sorted((path / "variables").glob("variables.data-*"))
        digest.update(json.dumps([[s.name, s.stat().st_size] for s in shards]).encode())
    else:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


class _ModelRunner:
    """A loaded model: ``runner(y) -> (T, dim)`` for a 1-D waveform; ``dim`` is its static output width or
    None. ``batched``: whether the model reads ``(1, samples)`` rather than ``(samples,)``."""

    def __init__(self, call: Callable, batched: bool, dim: Optional[int], keep: object, select: Callable):
        # `keep`: the loaded object, whose variables the functions of a SavedModel need alive.
        self._call, self.batched, self.dim, self._keep, self._select = call, batched, dim, keep, select

    def __call__(self, y: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        x = tf.constant(np.asarray(y, dtype=np.float32)[None] if self.batched else np.asarray(y, dtype=np.float32))
        out = np.asarray(self._select(self._call(x)))
        if out.ndim == 3 and out.shape[0] == 1:
            out = out[0]
        elif out.ndim != 2:
            raise ValueError(f"the model returned shape {out.shape}; expected (1, frames, dim) or (frames, dim)")
        return out


def _output_selector(names: list, wanted: Optional[str], where: str) -> Callable:
    """A function picking output ``wanted`` (or the only one) from what a model returns (a dict, a list or
    one tensor)."""
    if wanted is None and len(names) > 1:
        raise ValueError(f"{where}: the model has outputs {names}; choose one with frames.model_output")
    if wanted is not None and wanted not in names:
        raise ValueError(f"frames.model_output {wanted!r}: not an output of {where}; expected one of {names}")
    name = wanted if wanted is not None else names[0]
    index = names.index(name)

    def select(out):
        if isinstance(out, dict):
            return out[name]
        if isinstance(out, (list, tuple)):
            return out[index]
        return out

    return select


def _is_batched(shape, where: str) -> bool:
    """True when an input of ``shape`` is batched ``(1, samples)``, False for ``(samples,)``."""
    rank = getattr(shape, "rank", None) if not isinstance(shape, (tuple, list)) else len(shape)
    if rank not in (1, 2):
        raise ValueError(f"{where}: input of shape {shape}; expected a waveform (samples,) or (1, samples)")
    return rank == 2


def _static_dim(shape) -> Optional[int]:
    dims = list(shape) if shape is not None and getattr(shape, "rank", 1) is not None else []
    last = dims[-1] if dims else None
    return int(last) if last is not None else None


def _load_model(path: Path, output: Optional[str]) -> _ModelRunner:
    """Load a SavedModel folder (its ``serving_default`` signature, another signature, or its ``__call__``)
    or a ``.keras`` file, without compiling or downloading anything."""
    where = f"frames.model_path {str(path)!r}"
    if path.is_dir():
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        signatures = dict(loaded.signatures)
        if signatures:
            name = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
            fn = signatures[name]
            _, inputs = fn.structured_input_signature
            if len(inputs) != 1:
                raise ValueError(f"{where}: signature {name!r} takes {sorted(inputs)}; expected one waveform input")
            (arg, spec), = inputs.items()
            outputs = fn.structured_outputs
            names = sorted(outputs) if isinstance(outputs, dict) else ["output_0"]
            select = _output_selector(names, output, where)
            dim = _static_dim(getattr(select(outputs), "shape", None))
            return _ModelRunner(lambda x: fn(**{arg: x}), _is_batched(spec.shape, where), dim, loaded, select)
        concrete = getattr(getattr(loaded, "__call__", None), "concrete_functions", None)
        if not concrete:
            raise ValueError(f"{where}: the SavedModel has no signature and no __call__ to run")
        args, _ = concrete[0].structured_input_signature
        if len(args) != 1:
            raise ValueError(f"{where}: __call__ takes {len(args)} arguments; expected one waveform")
        outputs = concrete[0].structured_outputs
        names = sorted(outputs) if isinstance(outputs, dict) else (
            [f"output_{i}" for i in range(len(outputs))] if isinstance(outputs, (list, tuple)) else ["output_0"])
        select = _output_selector(names, output, where)
        dim = _static_dim(getattr(select(outputs), "shape", None))
        return _ModelRunner(loaded.__call__, _is_batched(args[0].shape, where), dim, loaded, select)
    import keras

    model = keras.saving.load_model(str(path), compile=False)
    if len(model.inputs) != 1:
        raise ValueError(f"{where}: the model has {len(model.inputs)} inputs; expected one waveform")
    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    select = _output_selector(names, output, where)
    dim = _static_dim(select(model.outputs).shape)
    return _ModelRunner(lambda x: model(x, training=False), _is_batched(tuple(model.inputs[0].shape), where),
                        dim, model, select)  # fmt: skip


# One loaded model per process, keyed by its path, output and content hash (TensorFlow objects do not pickle;
# the model source extracts in the calling process).
_MODELS: dict = {}


def _model(cfg: FramesConfig, identity: str) -> _ModelRunner:
    path = Path(cfg.model_path).expanduser().resolve()
    key = (os.getpid(), str(path), cfg.model_output, identity)
    if key not in _MODELS:
        log.info("loading the frame-level feature model %s", path)
        _MODELS[key] = _load_model(path, cfg.model_output)
    return _MODELS[key]


def _model_dim(cfg: FramesConfig, identity: str) -> int:
    """The model's output width: static in its signature, else from one call on a second of faint noise."""
    runner = _model(cfg, identity)
    if runner.dim is not None:
        return runner.dim
    probe = 1e-3 * np.random.default_rng(0).standard_normal(int(cfg.sample_rate)).astype(np.float32)
    out = runner(probe)
    if out.ndim != 2 or out.shape[1] < 1:
        raise ValueError(f"frames.model_path {cfg.model_path!r}: a probe call returned shape {out.shape}")
    return int(out.shape[1])


def _extract_model(path: str, cfg: FramesConfig, identity: str, dim: int) -> np.ndarray:
    runner = _model(cfg, identity)  # a model that does not load stops the extraction instead of failing each file
    y = _audio(path, cfg)
    what = f"model {Path(cfg.model_path).name}"
    try:
        seq = runner(y)
    except Exception as exc:  # noqa: BLE001 - reported per file
        raise FrameError(path, f"{what} failed on {len(y) / cfg.sample_rate:.3f} s of audio "
                               f"({type(exc).__name__}: {exc})") from None  # fmt: skip
    seq = _checked(seq, path, what, dim)
    return fixed_length(seq, cfg.frames, cfg.time_pool, cfg.pool)


# ------------------------------------------------------------------------------------------------ npy
def npy_source(cfg: FramesConfig, features: Optional[Mapping[str, str]] = None,
               audio_root: str | os.PathLike | None = None) -> Callable[[str], Optional[str]]:
    """``source(audio path) -> .npy path`` (None when it has none): the manifest's ``features`` column
    (``features``: audio path -> .npy path) when ``frames.npy_dir`` is None, else the mirrored path
    ``<npy_dir>/<path relative to audio_root>`` with the suffix ``.npy``.

    Raises:
        ValueError: ``frames.npy_dir`` is set but ``audio_root`` is not.
    """
    if cfg.npy_dir is None:
        table = {str(k): str(v) for k, v in (features or {}).items() if v}
        return table.get
    if audio_root is None:
        raise ValueError("frames.npy_dir: mirroring the audio paths needs the corpus root (audio_root)")
    npy_dir = Path(cfg.npy_dir).expanduser().resolve()
    root = Path(audio_root).expanduser()
    # The audio paths are absolute and keep their symbolic links (os.path.abspath), as corpus_root does: an audio
    # path is matched to the root as written first, then with the links of both resolved (a root given resolved).
    roots = ((Path(os.path.abspath(root)), os.path.abspath), (Path(os.path.realpath(root)), os.path.realpath))

    def mirrored(path: str) -> Optional[str]:
        for base, absolute in roots:  # the links resolved only when the path as written is not under the root
            try:
                relative = Path(absolute(path)).relative_to(base)
            except ValueError:
                continue
            return str((npy_dir / relative).with_suffix(".npy"))
        return None

    return mirrored


def _missing_npy(cfg: FramesConfig, audio_root) -> str:
    if cfg.npy_dir is None:
        return "no precomputed .npy for it (empty or missing `features` column in the CSV manifest)"
    return f"not under the corpus root {audio_root}, so there is no mirrored .npy in {cfg.npy_dir}"


def read_npy_frames(npy: str, path: str, dim: Optional[int]) -> np.ndarray:
    """The ``(T, dim)`` array of ``npy`` (the precomputed features of the audio file ``path``), checked.

    Raises:
        FrameError: (for ``path``, naming ``npy``) no such file, an empty file, not a readable ``.npy``, not a
            numeric 2-D array, no frames, another dimension than ``dim``, non-finite values.
    """
    file = Path(npy)
    if not file.is_file():
        raise FrameError(path, f"{npy}: no such file")
    if file.stat().st_size == 0:
        raise FrameError(path, f"{npy}: empty file (0 bytes)")
    try:
        array = np.load(file, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, whatever numpy raises
        raise FrameError(path, f"{npy}: not a readable .npy array ({type(exc).__name__}: {exc})") from None
    if not isinstance(array, np.ndarray):
        raise FrameError(path, f"{npy}: not a single .npy array ({type(array).__name__})")
    return _checked(array, path, npy, dim)


def _extract_npy(path: str, cfg: FramesConfig, source: Callable, dim: int, missing: str) -> np.ndarray:
    npy = source(path)
    if npy is None:
        raise FrameError(path, missing)
    return fixed_length(read_npy_frames(npy, path, dim), cfg.frames, cfg.time_pool, cfg.pool)


def _npy_dims(paths: Sequence[str], source: Callable) -> Counter:
    """How many arrays of ``paths`` have each dimension (readable 2-D arrays with frames; headers only)."""
    dims: Counter = Counter()
    for path in paths:
        npy = source(path)
        if npy is None:
            continue
        try:
            array = np.load(npy, mmap_mode="r", allow_pickle=False)
        except Exception:  # noqa: BLE001 - reported with its reason at extraction
            continue
        if isinstance(array, np.ndarray) and array.ndim == 2 and array.shape[0] > 0 and array.shape[1] > 0:
            dims[int(array.shape[1])] += 1
    return dims


# ------------------------------------------------------------------------------------------ the cache
def _hashed(cfg: FramesConfig, identity: Optional[str] = None) -> dict:
    """The fields of ``cfg`` that its source reads, the versions that shape them, ``FRAMES_VERSION`` and, for a
    model, its :func:`model_identity` (``identity`` when computed already)."""
    keys = ["source", "frames", "time_pool", "dim"] + (["pool"] if cfg.time_pool > 1 else [])
    payload: dict = {"frames_version": FRAMES_VERSION}
    if cfg.source in ("opensmile", "model"):
        import librosa

        keys += ["sample_rate", "duration_s"]
        payload["librosa"] = librosa.__version__
    if cfg.source == "opensmile":
        import opensmile

        keys.append("opensmile_set")
        payload["opensmile"] = opensmile.__version__
    elif cfg.source == "model":
        import keras
        import tensorflow as tf

        keys.append("model_output")
        payload.update(model=identity or model_identity(cfg.model_path), tensorflow=tf.__version__,
                       keras=keras.__version__)  # fmt: skip
    else:
        payload["npy_dir"] = None if cfg.npy_dir is None else str(Path(cfg.npy_dir).expanduser().resolve())
    values = asdict(cfg)
    payload["frames"] = {k: values[k] for k in sorted(keys)}
    return payload


def frames_config_hash(cfg: FramesConfig, identity: Optional[str] = None) -> str:
    """A short, stable hash of everything that determines the sequences (the cache key); ``identity``: the
    model's :func:`model_identity` when computed already."""
    text = json.dumps(_hashed(cfg, identity), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _cached_dim(folder: Path, key: str) -> Optional[int]:
    """The ``dim`` of the sequences already cached in ``folder`` (None when there are none)."""
    try:
        manifest = read_json(folder / "manifest.json")
        if manifest.get("feature_hash") == key and len(manifest.get("shape", [])) == 2:
            return int(manifest["shape"][1])
    except (ValueError, TypeError, AttributeError, OSError):
        pass
    return None


def _config_record(cfg: FramesConfig, dim: int, **extra) -> dict:
    """What the cache manifest records of ``cfg``: its fields, the resolved dim and the source's identity."""
    return {**asdict(cfg), "resolved_dim": dim, **extra}


def frame_extractor(cache_dir: str | os.PathLike, cfg: FramesConfig, paths: Optional[Sequence[str]] = None,
                    features: Optional[Mapping[str, str]] = None,
                    audio_root: str | os.PathLike | None = None) -> Extractor:
    """The :class:`~emodarts_tf.data.cache.Extractor` of ``cfg``'s sequences (folder ``frames-<source>-<hash>``).

    Args:
        cache_dir: the cache root (``data.cache_dir``); read for the ``dim`` of ``.npy`` arrays cached before.
        cfg: the frames config.
        paths: the audio paths to be extracted; source ``npy`` with ``frames.dim`` None and nothing cached yet
            takes the most common dimension among their arrays.
        features: source ``npy`` without ``npy_dir``: audio path -> ``.npy`` path (the manifest's column).
        audio_root: source ``npy`` with ``npy_dir``: the folder the audio paths are relative to
            (:func:`corpus_root`).

    Raises:
        ValueError: a bad config (naming the key), a model that cannot be loaded, or, for ``npy`` without
            ``frames.dim``, no readable array to take the dimension from.
    """
    validate_frames_config(cfg)
    identity = model_identity(cfg.model_path) if cfg.source == "model" else None
    key = frames_config_hash(cfg, identity)
    kind = f"frames-{cfg.source}"
    common = dict(kind=kind, key=key, version=FRAMES_VERSION, label=f"{cfg.source} frame features")
    if cfg.source == "opensmile":
        dim = OPENSMILE_SETS[cfg.opensmile_set]
        extract = partial(_extract_opensmile, cfg=cfg)
        return Extractor(shape=(cfg.frames, dim), config=_config_record(cfg, dim), extract=extract, **common)
    # The width: frames.dim, else that of the sequences cached already, else asked of the source.
    dim = cfg.dim or _cached_dim(Path(cache_dir).expanduser() / f"{kind}-{key}", key)
    if cfg.source == "model":
        dim = dim or _model_dim(cfg, identity)  # loads the model only when the width is not known
        extract = partial(_extract_model, cfg=cfg, identity=identity, dim=dim)
        return Extractor(shape=(cfg.frames, dim), config=_config_record(cfg, dim, model=identity),
                         extract=extract, in_process=True, **common)  # fmt: skip
    source = npy_source(cfg, features, audio_root)
    if dim is None:
        dims = _npy_dims(list(paths or []), source)
        if not dims:
            where = f"frames.npy_dir {cfg.npy_dir!r}" if cfg.npy_dir else "the manifest's `features` column"
            raise ValueError(
                f"frames.dim: no readable 2-D .npy array among the {len(paths or [])} file(s) named by {where} "
                "to take the dimension from; check the paths, or set frames.dim"
            )
        dim = min(dims, key=lambda d: (-dims[d], d))
        others = {d: n for d, n in dims.items() if d != dim}
        log.info("frames.dim: %d, the dimension of %d of the .npy arrays%s", dim, dims[dim],
                 f" (other dimensions, reported per file: {others})" if others else "")  # fmt: skip
    extract = partial(_extract_npy, cfg=cfg, source=source, dim=dim, missing=_missing_npy(cfg, audio_root))
    return Extractor(shape=(cfg.frames, dim), config=_config_record(cfg, dim), extract=extract, in_process=True,
                     source=source, **common)  # fmt: skip


def frame_cache(cache_dir: str | os.PathLike, cfg: FramesConfig, paths: Optional[Sequence[str]] = None,
                features: Optional[Mapping[str, str]] = None,
                audio_root: str | os.PathLike | None = None) -> FeatureCache:
    """The :class:`~emodarts_tf.data.cache.FeatureCache` of ``cfg``'s sequences under ``cache_dir``; its
    ``extract(paths, ...)`` returns ``{path: problem}`` for every file skipped, ``load(paths)`` the
    ``(n, frames, dim)`` float32 sequences. Arguments as :func:`frame_extractor`."""
    return FeatureCache(cache_dir, frame_extractor(cache_dir, cfg, paths, features, audio_root))


def frame_shape(cache: FeatureCache) -> tuple[int, int]:
    """``(frames, dim)`` of every sequence of ``cache``."""
    return tuple(cache.shape)


def load_frames(cache_dir: str | os.PathLike, cfg: FramesConfig, paths: Sequence[str],
                features: Optional[Mapping[str, str]] = None,
                audio_root: str | os.PathLike | None = None) -> np.ndarray:
    """``(n, frames, dim)`` float32 sequences of ``paths``, read from the cache (like ``PreparedCorpus.features``;
    extracted before by ``frame_cache(...).extract``). Arguments as :func:`frame_extractor`.

    Raises:
        ValueError: a path without cached features (naming it and the problem recorded for it).
    """
    paths = [str(p) for p in paths]
    return frame_cache(cache_dir, cfg, paths, features, audio_root).load(paths)
