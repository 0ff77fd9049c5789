"""Prepare a corpus for every later stage: records, folds and cached MFCCs.

:func:`prepare` loads the corpus (``config.data``), applies the class selection, extracts the MFCCs not yet
in the cache, drops the files that failed (each reported with its reason) and the classes spoken by fewer
than ``data.min_speakers_per_class`` speakers (logged, counted under ``dropped``), builds the folds of
``config.data.protocol`` and, with an ``out_dir``, writes::

    <out_dir>/records.csv     path,label,speaker,session,split,gender (one row per kept utterance)
    <out_dir>/folds.json      a list of folds, each with the speakers and record paths of train and test
    <out_dir>/prepared.json   corpus, protocol, classes, feature config and cache, counts, problems

Example:

>>> from emodarts_tf.config import load_config
>>> prepared = prepare(load_config("demo"), out_dir="runs/demo-data")    # doctest: +SKIP
>>> x = prepared.features(prepared.fold(1).train)                         # doctest: +SKIP
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from emodarts_tf.config import ExperimentConfig, FeatureConfig, FramesConfig
from emodarts_tf.data.cache import FeatureCache
from emodarts_tf.data.corpora import CorpusData, Problem, drop_rare_classes, load_corpus
from emodarts_tf.data.features import feature_shape
from emodarts_tf.data.protocols import check_protocol_size, make_folds
from emodarts_tf.data.records import Fold, Record, read_folds, read_records, write_folds, write_records
from emodarts_tf.utils.io import read_json, write_json

# Config keys (dotted prefixes) that decide which utterances and features a prepared corpus holds: runs that
# share one prepared corpus (the benchmarks' variants and arms) cannot differ in them.
PREPARE_KEYS = ("features.", "frames.", "data.corpus", "data.root", "data.classes", "data.protocol", "data.selection",
                "data.merge_exc", "data.msp_improv_labels", "data.cache_dir", "data.min_speakers_per_class",
                "data.encoding")

log = logging.getLogger(__name__)


@dataclass
class PreparedCorpus:
    """A corpus ready for training: kept records, folds, classes and access to the cached features."""

    out_dir: Optional[Path]
    records: list  # list[Record], the kept utterances
    folds: list  # list[Fold]
    classes: list  # label id -> class name
    feature_config: FeatureConfig
    input_shape: tuple  # (n_mfcc, frames, 1)
    problems: list  # list[Problem]: files reported and skipped, with reasons
    corpus: str = ""
    protocol: str = ""
    synthetic: bool = False
    cache_dir: Optional[Path] = None  # the feature cache folder of this feature config
    dropped: dict = field(default_factory=dict)  # utterances not selected, by reason
    _cache: Optional[FeatureCache] = field(default=None, repr=False)
    # Two-stream corpora (EmotionNAS): the frame-level stream's config and cache (None: one stream).
    frames_config: Optional[FramesConfig] = None
    _frames_cache: Optional[FeatureCache] = field(default=None, repr=False)

    def __post_init__(self):
        self._by_path = {r.path: r for r in self.records}
        self._class_ids = {c: i for i, c in enumerate(self.classes)}

    @property
    def cache(self) -> FeatureCache:
        if self._cache is None:
            self._cache = FeatureCache(self.cache_dir.parent, self.feature_config)
        return self._cache

    def caches(self) -> list:
        """The feature caches this corpus reads: the maps', then the frame-level stream's (two streams)."""
        return [self.cache] + ([self._frames_cache] if self._frames_cache is not None else [])

    def record(self, path: str) -> Record:
        try:
            return self._by_path[path]
        except KeyError:
            raise ValueError(f"{path}: not a record of this prepared corpus") from None

    def features(self, paths) -> np.ndarray:
        """``(n, n_mfcc, frames)`` float32 features of ``paths``, read from the cache."""
        return self.cache.load(list(paths))

    @property
    def map_kind(self) -> str:
        """``features.kind`` of the maps: ``"mfcc"``, ``"logmel"`` or ``"spectrogram"``."""
        return getattr(self.feature_config, "kind", "mfcc")

    @property
    def image_name(self) -> str:
        """The model input name of the image stream: ``"mfcc"`` (MFCC and log-mel maps) or ``"spectrogram"``."""
        return "spectrogram" if self.map_kind == "spectrogram" else "mfcc"

    @property
    def frames_shape(self) -> Optional[tuple]:
        """``(frames, dim)`` of the frame-level stream; None for a one-stream corpus."""
        return None if self._frames_cache is None else tuple(self._frames_cache.shape)

    def frames_features(self, paths) -> np.ndarray:
        """``(n, frames, dim)`` float32 frame-level sequences of ``paths`` (two-stream corpora)."""
        if self._frames_cache is None:
            raise ValueError("frames: this prepared corpus has one stream; prepare it with two_stream=True")
        return self._frames_cache.load(list(paths))

    def labels(self, paths) -> np.ndarray:
        """int32 class ids (indices into :attr:`classes`) of ``paths``."""
        return np.asarray([self._class_ids[self.record(p).label] for p in paths], dtype=np.int32)

    def fold(self, k: int) -> Fold:
        """The fold with 1-based index ``k``."""
        for fold in self.folds:
            if fold.index == k:
                return fold
        raise ValueError(f"fold {k}: no such fold; this protocol has folds {[f.index for f in self.folds]}")

    def summary(self) -> dict:
        """Counts for logs and ``prepared.json``."""
        return {
            "utterances": len(self.records),
            "per_class": dict(sorted(Counter(r.label for r in self.records).items())),
            "per_speaker": dict(sorted(Counter(r.speaker for r in self.records).items())),
            "speakers": len({r.speaker for r in self.records}),
            "folds": [
                {"index": f.index, "name": f.name, "train": len(f.train), "test": len(f.test),
                 "test_speakers": f.test_speakers}
                for f in self.folds
            ],
            "problems": len(self.problems),
            "dropped": self.dropped,
        }  # fmt: skip

    @classmethod
    def load(cls, out_dir: str | Path) -> "PreparedCorpus":
        """Reopen what :func:`prepare` wrote to ``out_dir`` (the cache must still exist)."""
        out_dir = Path(out_dir)
        meta = read_json(out_dir / "prepared.json")
        cfg = FeatureConfig(**meta["feature_config"])
        prepared = cls(
            out_dir=out_dir,
            records=read_records(out_dir / "records.csv"),
            folds=read_folds(out_dir / "folds.json"),
            classes=list(meta["classes"]),
            feature_config=cfg,
            input_shape=tuple(meta["input_shape"]),
            problems=[Problem(**p) for p in meta.get("problem_list", [])],
            corpus=meta.get("corpus", ""),
            protocol=meta.get("protocol", ""),
            synthetic=bool(meta.get("synthetic", False)),
            cache_dir=Path(meta["cache_dir"]),
            dropped=dict(meta.get("summary", {}).get("dropped", {})),
        )
        if meta.get("frames_config"):
            from emodarts_tf.data.frame_features import frame_cache

            frames_cfg = FramesConfig(**meta["frames_config"])
            root = meta.get("root")
            audio_root = Path(root).parent if root and Path(root).is_file() else root
            prepared.frames_config = frames_cfg
            prepared._frames_cache = frame_cache(Path(meta["frames_cache_dir"]).parent, frames_cfg,
                                                 [r.path for r in prepared.records],
                                                 {r.path: r.features for r in prepared.records}, audio_root)
        _, errors, todo = prepared.cache.status([r.path for r in prepared.records])
        if todo or errors:
            raise ValueError(
                f"{out_dir}: {len(todo) + len(errors)} record(s) have no cached features in {prepared.cache_dir}; "
                "run prepare again"
            )
        return prepared


def _log_summary(prepared: PreparedCorpus) -> None:
    s = prepared.summary()
    tag = " (SYNTHETIC)" if prepared.synthetic else ""
    log.info(
        "%s%s: %d utterances, %d speakers, classes %s, protocol %s with %d fold(s), features %s %s%s",
        prepared.corpus, tag, s["utterances"], s["speakers"], prepared.classes, prepared.protocol,
        len(prepared.folds), prepared.map_kind, prepared.input_shape,
        "" if prepared.frames_shape is None else f" (input {prepared.image_name!r}) and frames {prepared.frames_shape} "
        f"({prepared.frames_config.source}{'' if prepared.frames_config.source != 'opensmile' else ' ' + prepared.frames_config.opensmile_set})",
    )  # fmt: skip
    log.info("per class: %s", s["per_class"])
    log.info("per speaker: %s", s["per_speaker"])
    for f in s["folds"]:
        log.info("fold %d %s: train %d, test %d (test speakers %s)", f["index"], f["name"], f["train"], f["test"],
                 "+".join(f["test_speakers"]))  # fmt: skip
    if prepared.dropped:
        log.info("not selected: %s", prepared.dropped)
    if prepared.problems:
        log.warning("%d file(s) reported and skipped:", len(prepared.problems))
        for problem in prepared.problems[:20]:
            log.warning("  %s", problem)
        if len(prepared.problems) > 20:
            log.warning("  ... and %d more (all listed in prepared.json)", len(prepared.problems) - 20)


def _resume_advice(out_dir: Path) -> str:
    return (f"the run in {out_dir.parent} was prepared from another corpus or split: choose another --out, or remove "
            "that folder to start over (cli/train.py --restart removes its run)")


def _first_folds(out_dir: str | Path) -> Optional[list]:
    """The folds of ``<out_dir>/folds.json`` as the run's first preparation wrote them; None when there are none."""
    path = Path(out_dir) / "folds.json"
    if not path.is_file():
        return None
    try:
        return read_folds(path)
    except ValueError as exc:
        log.warning("%s: unreadable (%s); not compared with this preparation", path, exc)
        return None


def check_same_speakers(out_dir: str | Path, speakers) -> None:
    """Before any extraction: every speaker of the run's first preparation must be in the corpus now (the
    cheap half of :func:`check_same_folds`, so that a wrong ``--root`` is refused before hours of extraction).

    Raises:
        ValueError: speakers of ``<out_dir>/folds.json`` missing from ``speakers``; the message names some.
    """
    folds = _first_folds(out_dir)
    if folds is None:
        return
    before = {s for f in folds for s in (*f.train_speakers, *f.test_speakers)}
    missing = sorted(before - set(speakers))
    if missing:
        raise ValueError(f"{Path(out_dir) / 'folds.json'}: {len(missing)} of its {len(before)} speakers are not in "
                         f"the corpus now ({missing[:6]}); {_resume_advice(Path(out_dir))}")


def check_same_folds(out_dir: str | Path, folds: list) -> None:
    """Refuse to resume a run whose first preparation (``<out_dir>/folds.json``) dealt other speakers to its
    folds: another corpus (``data.root`` may change between a run and its resumption, since a corpus may move)
    would mix its results with the finished folds'. Speakers are compared, not paths, so a moved corpus passes;
    the same speakers with other utterance counts (a file fixed or newly unreadable) pass with a warning.

    Raises:
        ValueError: the fold count or a fold's training or test speakers differ; the message names the fold.
    """
    out_dir = Path(out_dir)
    first = _first_folds(out_dir)
    if first is None:
        return
    path = out_dir / "folds.json"
    before = {f.index: f for f in first}
    now = {f.index: f for f in folds}
    if sorted(before) != sorted(now):
        raise ValueError(f"{path}: folds {sorted(before)} there, {sorted(now)} now; {_resume_advice(out_dir)}")
    for k in sorted(now):
        for part in ("train", "test"):
            old = set(getattr(before[k], f"{part}_speakers"))
            new = set(getattr(now[k], f"{part}_speakers"))
            if old != new:
                raise ValueError(f"{path}: fold {k}'s {part} speakers differ (only there: {sorted(old - new)[:6]}, "
                                 f"only now: {sorted(new - old)[:6]}); {_resume_advice(out_dir)}")
            counts = len(getattr(before[k], part)), len(getattr(now[k], part))
            if counts[0] != counts[1]:
                log.warning("fold %d: %d %s utterances now, %d when this run was first prepared (%s); the finished "
                            "folds keep what they were trained on", k, counts[1], part, counts[0], path)


def _warn_missing_training_classes(folds: list, records: list, classes: list) -> None:
    """Name each fold whose training part has no utterance of a class that the corpus has.

    ``data.min_speakers_per_class`` (2) rules this out for leave-one-speaker-out folds; protocols that hold
    out several speakers at once (``emodb5``, ``loso-session``, ``emodarts``) can still leave a class only
    in a fold's test speakers.
    """
    label_of = {r.path: r.label for r in records}
    present = {r.label for r in records}
    for fold in folds:
        trained = {label_of[p] for p in fold.train}
        missing = [c for c in classes if c in present and c not in trained]
        if missing:
            log.warning(
                "fold %d (%s): no training utterance of class(es) %s (only its test speakers %s have them); "
                "its model cannot learn them; raise data.min_speakers_per_class or drop them with data.classes",
                fold.index, fold.name, missing, "+".join(fold.test_speakers),
            )  # fmt: skip


def extract_streams(config: ExperimentConfig, corpus: CorpusData, two_stream: bool = False,
                    progress: bool = True) -> tuple:
    """Extract (or reuse) the MFCCs of ``corpus.records`` and, with ``two_stream``, their frame-level stream
    (``config.frames``, EmotionNAS) into the feature cache; log each file that failed (named, skipped).

    Returns:
        ``(cache, frames_cache or None, errors, records)``: ``errors`` ``{path: problem}`` (a frame-stream
        problem as ``frames: ...``), ``records`` those whose every stream was computed.

    Raises:
        ValueError: no file could be extracted.
    """
    data = config.data
    paths = [r.path for r in corpus.records]
    cache = FeatureCache(data.cache_dir, config.features)
    errors = cache.extract(paths, workers=data.workers, progress=progress, lock_timeout_s=data.lock_timeout_s)
    frames_cache = None
    if two_stream:
        from emodarts_tf.data.frame_features import corpus_root, frame_cache

        frames_cache = frame_cache(data.cache_dir, config.frames, paths,
                                   {r.path: getattr(r, "features", "") for r in corpus.records}, corpus_root(data))
        for path, problem in frames_cache.extract(paths, workers=data.workers, progress=progress,
                                                  lock_timeout_s=data.lock_timeout_s).items():
            errors[path] = f"{errors[path]}; frames: {problem}" if path in errors else f"frames: {problem}"
    for path, problem in sorted(errors.items()):
        log.warning("%s: skipped: %s", path, problem)
    records = [r for r in corpus.records if r.path not in errors]
    if not records:
        raise ValueError(f"corpus {corpus.name!r}: every selected file failed feature extraction ({len(errors)})")
    return cache, frames_cache, errors, records


def prepare(config: ExperimentConfig, out_dir: str | Path | None = None, progress: bool = True,
            two_stream: bool = False, resuming: bool = False) -> PreparedCorpus:
    """Load the corpus, extract or reuse the cached MFCCs, build the folds, and write the tables.

    Args:
        config: the experiment config (``config.data`` and ``config.features`` are used).
        out_dir: where ``records.csv``, ``folds.json`` and ``prepared.json`` go; None writes only the cache.
        progress: show a progress bar during extraction.
        two_stream: also extract the frame-level stream (``config.frames``, EmotionNAS); an utterance is
            kept only when both streams could be computed.
        resuming: the tables in ``out_dir`` belong to a run being resumed: its speakers must all be in the
            corpus before extraction (:func:`check_same_speakers`), and its folds must deal the same speakers
            (:func:`check_same_folds`) before the tables are written again.

    Raises:
        ValueError: wrong corpus root, missing label files, unknown protocol or classes, no usable
            utterance, or (``resuming``) other speakers than the run's first preparation. Bad single files are
            not errors: they are reported, skipped and listed in ``problems``.
    """
    data, fcfg = config.data, config.features
    n_mfcc, frames = feature_shape(fcfg)
    corpus: CorpusData = load_corpus(data)
    check_protocol_size(corpus.records, corpus.protocol, corpus.name)  # before hours of extraction
    if resuming and out_dir is not None:
        check_same_speakers(out_dir, {r.speaker for r in corpus.records})
    cache, frames_cache, errors, records = extract_streams(config, corpus, two_stream, progress)
    problems = list(corpus.problems) + [Problem(path, problem) for path, problem in sorted(errors.items())]
    # After the failed files are gone: a class must still have enough speakers for every fold to train it.
    records, classes, rare = drop_rare_classes(records, list(corpus.classes), data.min_speakers_per_class,
                                               corpus.name)  # fmt: skip
    dropped = dict(sorted({**corpus.dropped, **rare}.items()))
    folds = make_folds(records, corpus.protocol, corpus.name)
    _warn_missing_training_classes(folds, records, classes)
    prepared = PreparedCorpus(
        out_dir=Path(out_dir) if out_dir is not None else None,
        records=records,
        folds=folds,
        classes=classes,
        feature_config=fcfg,
        input_shape=(n_mfcc, frames, 1),
        problems=problems,
        corpus=corpus.name,
        protocol=corpus.protocol,
        synthetic=corpus.synthetic,
        cache_dir=cache.dir.resolve(),
        dropped=dropped,
        _cache=cache,
        frames_config=config.frames if two_stream else None,
        _frames_cache=frames_cache,
    )
    if out_dir is not None:
        out = Path(out_dir)
        if resuming:
            check_same_folds(out, folds)
        write_records(out / "records.csv", records)
        write_folds(out / "folds.json", folds)
        write_json(
            out / "prepared.json",
            {
                "corpus": corpus.name,
                "synthetic": corpus.synthetic,
                "root": corpus.root,
                "protocol": corpus.protocol,
                "classes": list(classes),
                "selection": corpus.selection,
                "input_shape": list(prepared.input_shape),
                "feature_config": asdict(fcfg),
                "feature_hash": cache.key,
                "cache_dir": str(prepared.cache_dir),
                **({"frames_config": asdict(config.frames), "frames_shape": list(prepared.frames_shape),
                    "frames_cache_dir": str(frames_cache.dir.resolve())} if two_stream else {}),
                "summary": prepared.summary(),
                "problem_list": [p.to_dict() for p in problems],
            },
        )
    _log_summary(prepared)
    return prepared
