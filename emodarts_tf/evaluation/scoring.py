"""Scoring a trained model directory on a corpus split, including corpora it never saw.

The corpus is read with the model's feature config (so its MFCCs match what the model was trained on),
normalised with the model's statistics, and its labels are mapped to the model's classes by name. A corpus
label the model does not know is an error naming it, unless ``ignore_unknown`` drops those utterances
(they are counted in the report).
"""
from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emodarts_tf.evaluation.metrics import classification_metrics
from emodarts_tf.utils.io import atomic_write_text, write_json

log = logging.getLogger(__name__)

SPLITS = ("test", "train", "all")


class UnknownClassError(ValueError):
    """The corpus holds labels that the model was not trained on."""


@dataclass
class CorpusSplit:
    """Records of one split of a corpus and access to their cached features."""

    records: list
    features: object  # (paths) -> (n, n_mfcc, frames) float32 raw MFCCs
    input_shape: tuple
    corpus: str
    protocol: str
    synthetic: bool = False
    problems: list = field(default_factory=list)
    frames: object = None  # two-stream models: (paths) -> (n, frames, dim) float32 raw frame-level sequences


def load_split(config, split: str, fold_index: int | None, progress: bool = True,
               two_stream: bool = False) -> CorpusSplit:
    """The utterances of ``split`` with features extracted (or reused) under ``config.features`` (and, with
    ``two_stream``, the frame-level sequences under ``config.frames``).

    ``all`` needs no fold protocol (a corpus of one speaker works); ``test`` and ``train`` are the parts
    of fold ``fold_index`` of the corpus's protocol.
    """
    from emodarts_tf.data.features import feature_shape

    if split not in SPLITS:
        raise ValueError(f"--split: expected one of {list(SPLITS)}, received {split!r}")
    if split != "all":
        from emodarts_tf.data.prepare import prepare

        prepared = prepare(config, progress=progress, two_stream=two_stream)
        return CorpusSplit(
            records=select_records(prepared, split, fold_index),
            features=prepared.features,
            frames=prepared.frames_features if two_stream else None,
            input_shape=tuple(prepared.input_shape),
            corpus=prepared.corpus,
            protocol=prepared.protocol,
            synthetic=bool(prepared.synthetic),
            problems=list(prepared.problems),
        )
    from emodarts_tf.data.corpora import load_corpus
    from emodarts_tf.data.prepare import extract_streams

    corpus = load_corpus(config.data)
    cache, frames, errors, records = extract_streams(config, corpus, two_stream, progress)
    n_mfcc, n_frames = feature_shape(config.features)
    return CorpusSplit(
        records=records,
        features=cache.load,
        frames=None if frames is None else frames.load,
        input_shape=(n_mfcc, n_frames, 1),
        corpus=corpus.name,
        protocol=corpus.protocol,
        synthetic=bool(corpus.synthetic),
        problems=list(corpus.problems) + [f"{p}: {e}" for p, e in sorted(errors.items())],
    )


@dataclass
class Scored:
    metrics: dict
    paths: list
    speakers: list
    labels: list  # corpus label names
    predicted: np.ndarray  # model class ids
    probabilities: np.ndarray
    ignored: dict = field(default_factory=dict)  # label -> count of dropped utterances


def select_records(prepared, split: str, fold_index: int | None) -> list:
    """The records of ``split``: every record, or the train/test part of fold ``fold_index``."""
    if split not in SPLITS:
        raise ValueError(f"--split: expected one of {list(SPLITS)}, received {split!r}")
    if split == "all":
        return list(prepared.records)
    if fold_index is None:
        raise ValueError(
            f"--split {split} needs --fold (this corpus's protocol {prepared.protocol!r} has folds "
            f"{[f.index for f in prepared.folds]})"
        )
    fold = prepared.fold(int(fold_index))
    paths = set(fold.test if split == "test" else fold.train)
    return [r for r in prepared.records if r.path in paths]


def map_labels(labels: list, classes: list, ignore_unknown: bool) -> tuple[np.ndarray, dict]:
    """Model class ids of corpus ``labels`` (names) and, with ``ignore_unknown``, what was dropped.

    Returns ``(ids, ignored)``; ``ids`` holds -1 for dropped utterances.
    """
    index = {c: i for i, c in enumerate(classes)}
    unknown = Counter(label for label in labels if label not in index)
    if unknown and not ignore_unknown:
        listing = ", ".join(f"{label!r} ({n} utterance{'s' if n != 1 else ''})" for label, n in sorted(unknown.items()))
        raise UnknownClassError(
            f"the corpus has class(es) the model does not know: {listing}; the model knows {classes}. "
            "Pass --ignore-unknown to leave those utterances out, or select classes with --set data.classes=[...]"
        )
    ids = np.asarray([index.get(label, -1) for label in labels], dtype=np.int64)
    return ids, dict(sorted(unknown.items()))


def speaker_normalise(x: np.ndarray, speakers: list, data: CorpusSplit, records: list) -> np.ndarray:
    """``x`` z-scored per speaker, with each speaker's statistics over all of its utterances in ``records``
    (labels unused), as a model trained with ``data.normalize: speaker`` expects."""
    from emodarts_tf.data.pipeline import normalise_per_speaker, per_speaker_statistics

    statistics = per_speaker_statistics(records, data.features, speakers)
    log.info("speaker normalisation: statistics of %d speaker(s) from their own utterances", len(statistics))
    return normalise_per_speaker(x, speakers, statistics)


def score(trained, data: CorpusSplit, ignore_unknown: bool = False, batch_size: int = 64) -> Scored:
    """Predict the utterances of ``data`` (a :class:`CorpusSplit` read with the model's feature config)."""
    if tuple(data.input_shape) != tuple(trained.input_shape):
        raise ValueError(
            f"features: the corpus was read as {tuple(data.input_shape)} maps but the model expects "
            f"{tuple(trained.input_shape)}; read it with the model's feature config"
        )
    records = data.records
    if not records:
        raise ValueError("the split holds no utterances")
    labels = [r.label for r in records]
    ids, ignored = map_labels(labels, trained.classes, ignore_unknown)
    keep = ids >= 0
    if ignored:
        log.warning("left out %d utterance(s) of unknown class(es) %s", int((~keep).sum()), ignored)
    kept = [r for r, k in zip(records, keep) if k]
    if not kept:
        raise ValueError(f"the split holds no utterance of a class the model knows ({trained.classes})")
    x = data.features([r.path for r in kept])
    speaker_norm = trained.info.get("normalize") == "speaker"
    if speaker_norm:
        x = speaker_normalise(x, [r.speaker for r in kept], data, records)
    x = x[..., np.newaxis]
    frames = None
    if trained.two_stream:
        if data.frames is None:
            raise ValueError("a two-stream model: read the corpus with its frame-level stream (two_stream=True)")
        frames = data.frames([r.path for r in kept])
        if speaker_norm:  # per speaker and dimension, as the image per coefficient
            from emodarts_tf.data.pipeline import normalise_frames_per_speaker, per_speaker_frame_statistics

            speakers = [r.speaker for r in kept]
            frames = normalise_frames_per_speaker(frames, speakers,
                                                  per_speaker_frame_statistics(records, data.frames, speakers))
    probabilities = trained.probabilities(x, batch_size=batch_size, frames=frames)
    predicted = probabilities.argmax(axis=1)
    y = ids[keep]
    metrics = classification_metrics(y, predicted, len(trained.classes))
    metrics["classes"] = list(trained.classes)
    metrics["per_class_recall"] = {
        c: (float(np.mean(predicted[y == i] == i)) if np.any(y == i) else None) for i, c in enumerate(trained.classes)
    }
    metrics["ignored"] = ignored
    return Scored(
        metrics=metrics,
        paths=[r.path for r in kept],
        speakers=[r.speaker for r in kept],
        labels=[r.label for r in kept],
        predicted=predicted,
        probabilities=probabilities,
        ignored=ignored,
    )


def trained_speakers(trained) -> set:
    fold = trained.info.get("fold") or {}
    return {str(s) for s in (fold.get("train_speakers") or []) + (fold.get("val_speakers") or [])}


def markdown_report(metrics: dict, title: str) -> str:
    classes = metrics["classes"]
    lines = [f"### {title}", "", "| n | UA | WA | macro F1 |", "|---|---|---|---|",
             f"| {metrics['n']} | {metrics['ua']:.4f} | {metrics['wa']:.4f} | {metrics['f1']:.4f} |", "",
             "Confusion matrix (rows: true, columns: predicted):", "",
             "| | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]  # fmt: skip
    for c, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"| **{c}** | " + " | ".join(str(v) for v in row) + " |")
    if metrics.get("ignored"):
        lines += ["", f"Left out (classes unknown to the model): {metrics['ignored']}"]
    for note in metrics.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, scored: Scored, title: str) -> Path:
    from emodarts_tf.evaluation.plots import plot_confusion_matrix

    out_dir = Path(out_dir)
    write_json(out_dir / "metrics.json", scored.metrics)
    atomic_write_text(out_dir / "metrics.md", markdown_report(scored.metrics, title))
    plot_confusion_matrix(scored.metrics["confusion_matrix"], scored.metrics["classes"], out_dir / "confusion_matrix.png",
                          title=f"{title}: UA {scored.metrics['ua']:.3f}, WA {scored.metrics['wa']:.3f}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    classes = scored.metrics["classes"]
    writer.writerow(["path", "speaker", "label", "predicted", *[f"p_{c}" for c in classes]])
    for path, speaker, label, k, p in zip(scored.paths, scored.speakers, scored.labels, scored.predicted, scored.probabilities):
        writer.writerow([path, speaker, label, classes[int(k)], *[f"{v:.6f}" for v in p]])
    atomic_write_text(out_dir / "predictions.csv", buf.getvalue())
    return out_dir / "metrics.json"
