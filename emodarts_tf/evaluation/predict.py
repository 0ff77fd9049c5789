"""Predicting the emotion of audio files with a trained fold directory or an exported SavedModel.

:func:`load_predictor` opens either kind of model:

- a trained fold directory of ``cli/train.py`` (``model_info.json``, ``model.keras``,
  ``normalization.npz``): :func:`emodarts_tf.evaluation.model_dir.load_model_dir`;
- an export of ``cli/export.py``, ``<serving_dir>/<version>/`` (``saved_model.pb`` and
  ``assets.extra/{feature_config.json,classes.json}``), called through its ``serving_default`` signature on
  raw MFCCs (:class:`emodarts_tf.export.client.ServedModel`); a serving directory holding numbered versions
  uses the highest one, as TF Serving does.

:func:`predict_files` computes each file's feature map with the model's own feature config through
:func:`emodarts_tf.data.features.extract_features`, the function that fills the feature cache, so the
probabilities equal those ``cli/evaluate.py`` computes for the same files. Files that cannot be used
(missing, unreadable, empty, silent, truncated, not audio) are skipped with their reason; very short ones
are kept and reported (:func:`emodarts_tf.data.features.find_short_audio`).

A model trained with ``data.normalize: speaker`` expects each speaker's features z-scored with that
speaker's own statistics: here ALL the files given are taken as ONE speaker's utterances
(:func:`emodarts_tf.data.pipeline.speaker_statistics` over all of them); predict one speaker at a time.

A two-stream (EmotionNAS) model directory also gets each file's frame-level sequence, computed with the
model's own ``frames`` config by the function that fills the frame cache (openSMILE or a model on disk;
precomputed ``.npy`` arrays are a corpus's, not an audio file's, and are refused), normalised the same way.
Its SavedModel export takes both streams as inputs (``serving_default``); call that signature directly.
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emodarts_tf.config import FeatureConfig
from emodarts_tf.utils.io import atomic_write_text, read_json, write_json

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
OUTPUT_FORMATS = (".csv", ".json")


@dataclass
class Predictor:
    """A loaded model: ``probabilities(x)`` of raw MFCCs ``x`` ``(n, n_mfcc, frames)`` -> ``(n, classes)``."""

    path: Path
    kind: str  # "model_dir" or "saved_model"
    classes: list
    feature_config: FeatureConfig
    normalize: str | None  # the training run's data.normalize; "speaker" changes what predict feeds
    # (x (n, n_mfcc, frames, 1) raw, batch_size, speaker (mean, std) (n_mfcc, 1) or None) -> probabilities;
    # two-stream models also take frames (n, T, D) raw and frames_speaker (mean, std) (1, D) or None
    _run: object = field(repr=False, default=None)
    frames_config: object = None  # FramesConfig of a two-stream model directory, else None

    def probabilities(self, x, batch_size: int = 64, speaker=None, frames=None, frames_speaker=None) -> np.ndarray:
        """Probabilities of raw MFCCs (the image); ``speaker`` = ``(mean, std)`` of their speaker for a
        speaker-normalised model; ``frames`` the raw frame-level sequences of a two-stream model."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., np.newaxis]
        if len(x) == 0:  # nothing to run (an export without the empty-batch guard fails on it)
            return np.zeros((0, len(self.classes)), np.float32)
        if self.frames_config is not None:
            return np.asarray(self._run(x, batch_size, speaker, frames, frames_speaker), dtype=np.float32)
        return np.asarray(self._run(x, batch_size, speaker), dtype=np.float32)


def _normalize_of(info: dict) -> str | None:
    return info.get("normalize") or (info.get("data") or {}).get("normalize")


def _version_dir(path: Path) -> Path | None:
    """``path`` itself when it holds ``saved_model.pb``, else its highest numbered version that does."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted(
        (int(p.name), p) for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()
    )
    if not versions:
        return None
    chosen = versions[-1][1]
    log.info("%s: a serving directory with version(s) %s; using %s (the highest, as TF Serving does)",
             path, [v for v, _ in versions], chosen.name)  # fmt: skip
    return chosen


def _load_saved_model(version_dir: Path) -> Predictor:
    from emodarts_tf.evaluation.model_dir import INFO_FILE, feature_config_from_dict
    from emodarts_tf.export.client import ServedModel
    from emodarts_tf.export.saved_model import EXTRA_DIR, read_classes

    extra = version_dir / EXTRA_DIR
    config_file = extra / "feature_config.json"
    if not config_file.is_file():
        raise ValueError(f"{version_dir}: no {EXTRA_DIR}/feature_config.json; not a SavedModel written by cli/export.py")
    feature_config = feature_config_from_dict(read_json(config_file), source=str(config_file))
    classes = read_classes(version_dir)
    export_info = read_json(extra / "export_info.json") if (extra / "export_info.json").is_file() else {}
    normalize = _normalize_of(export_info)
    source = export_info.get("source_model")
    if normalize is None and source and (Path(source) / INFO_FILE).is_file():
        # An export_info without `normalize`: the source model directory says it.
        normalize = _normalize_of(read_json(Path(source) / INFO_FILE))
        if normalize:
            log.info("normalisation %r: from the export's source model %s", normalize, source)
    if export_info.get("two_stream"):
        raise ValueError(f"{version_dir}: a two-stream (EmotionNAS) export takes the frame-level stream as an input; "
                         f"predict with its model directory ({source or 'the fold folder of cli/train.py'}), or call "
                         "its serving_default signature with both inputs")
    try:
        served = ServedModel(version_dir)
    except Exception as exc:  # tf.saved_model.load raises OSError/ValueError/TF errors for broken exports
        raise ValueError(f"{version_dir}: cannot load the SavedModel ({type(exc).__name__}: {exc})") from exc

    def run(x, batch_size, speaker):
        # A speaker-normalised export takes raw MFCCs and the speaker's statistics as inputs.
        extra = {} if speaker is None else {"speaker_mean": speaker[0][:, 0], "speaker_std": speaker[1][:, 0]}
        rows = []
        for i in range(0, len(x), batch_size):
            rows += served.predict_mfcc(x[i : i + batch_size], **extra)
        return np.asarray([r["probabilities"] for r in rows], dtype=np.float32)

    return Predictor(version_dir, "saved_model", classes, feature_config, normalize, run)


def load_predictor(path: str | Path) -> Predictor:
    """A trained fold directory or an exported SavedModel (a version directory, or a serving directory whose
    highest version is used).

    Raises:
        ValueError: nothing usable at ``path`` (the message says what was expected).
    """
    from emodarts_tf.evaluation.model_dir import INFO_FILE, load_model_dir

    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"--model {path}: no such file or directory")
    if path.is_file() and path.name == "saved_model.pb":
        path = path.parent
    if path.is_dir() and not (path / INFO_FILE).is_file():
        version_dir = _version_dir(path)
        if version_dir is not None:
            return _load_saved_model(version_dir)
    try:
        trained = load_model_dir(path)  # its errors name a run directory passed by mistake, or what is missing
    except ValueError as exc:
        if "not a trained model directory" in str(exc):
            raise ValueError(f"{exc}; nor an export of cli/export.py (<serving_dir>/<version>/saved_model.pb)") from None
        raise
    def z(a, statistics):
        return a if statistics is None else (a - statistics[0]) / statistics[1]

    if trained.two_stream:
        return Predictor(
            trained.path, "model_dir", list(trained.classes), trained.feature_config, _normalize_of(trained.info),
            lambda x, batch_size, speaker, frames, frames_speaker: trained.probabilities(
                z(x, None if speaker is None else (speaker[0][..., np.newaxis], speaker[1][..., np.newaxis])),
                batch_size=batch_size, frames=z(frames, frames_speaker)),
            frames_config=trained.frames_config,
        )  # fmt: skip
    return Predictor(
        trained.path, "model_dir", list(trained.classes), trained.feature_config, _normalize_of(trained.info),
        lambda x, batch_size, speaker: trained.probabilities(
            x if speaker is None else (x - speaker[0][..., np.newaxis]) / speaker[1][..., np.newaxis], batch_size=batch_size
        ),
    )  # fmt: skip


def collect_audio_files(inputs) -> tuple[list, list]:
    """``(files, problems)`` for the command-line ``inputs``: a file is taken as it is (its reading says whether
    it is audio); a folder is walked recursively for ``AUDIO_EXTENSIONS`` (any case), in sorted order. The same
    file reached twice is kept once. ``problems`` are ``(path, reason)`` of inputs that do not exist or folders
    without audio files."""
    files, problems, seen = [], [], set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(str(p))

    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                problems.append((str(p), f"folder without audio files ({', '.join(AUDIO_EXTENSIONS)})"))
            for q in found:
                add(q)
        elif p.is_file():
            add(p)
        else:
            problems.append((str(p), "no such file or directory"))
    return files, problems


@dataclass
class Predictions:
    model: str
    classes: list
    normalize: str | None
    paths: list  # the predicted files, in input order
    probabilities: np.ndarray  # (n, classes)
    skipped: list  # (path, reason)
    short: dict  # path -> seconds, among ``paths``
    feature_config: FeatureConfig | None = None

    @property
    def predicted(self) -> list:
        return [self.classes[int(k)] for k in self.probabilities.argmax(axis=1)] if len(self.paths) else []

    def lines(self) -> list:
        """One line per file: ``path<TAB>class<TAB>name=p<TAB>...`` (probabilities to 4 decimals)."""
        return [
            "\t".join([path, name, *(f"{c}={v:.4f}" for c, v in zip(self.classes, p))])
            for path, name, p in zip(self.paths, self.predicted, self.probabilities)
        ]

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "predicted", *[f"p_{c}" for c in self.classes]])
        for path, name, p in zip(self.paths, self.predicted, self.probabilities):
            writer.writerow([path, name, *[f"{v:.6f}" for v in p]])
        return buf.getvalue()

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "classes": list(self.classes),
            "normalize": self.normalize,
            "speaker_normalisation": (
                "all the predicted files taken as one speaker's utterances" if self.normalize == "speaker" else None
            ),
            "predictions": [
                {"path": path, "predicted": name, "probabilities": {c: float(v) for c, v in zip(self.classes, p)}}
                for path, name, p in zip(self.paths, self.predicted, self.probabilities)
            ],
            "skipped": [{"path": path, "problem": reason} for path, reason in self.skipped],
            "short_audio": {path: round(seconds, 4) for path, seconds in self.short.items()},
        }

    def write(self, out: str | Path) -> Path:
        """``out`` as CSV or JSON, by its extension."""
        out = Path(out)
        suffix = out.suffix.lower()
        if suffix == ".csv":
            atomic_write_text(out, self.to_csv())
        elif suffix == ".json":
            write_json(out, self.to_dict())
        else:
            raise ValueError(f"--out {out}: expected a .csv or .json file name (the extension picks the format)")
        return out


def _frames_function(frames_config):
    """``path -> (frames, dim)`` raw frame-level sequence with a two-stream model's frames config, as the frame
    cache computes it; None for a one-stream model."""
    if frames_config is None:
        return None
    if frames_config.source == "npy":
        raise ValueError("frames.source npy: the model reads precomputed arrays of its corpus, which audio files "
                         "given to predict do not have; evaluate the corpus with cli/evaluate.py instead")
    import tempfile

    from emodarts_tf.data.frame_features import frame_extractor

    return frame_extractor(tempfile.gettempdir(), frames_config).extract


def predict_files(predictor: Predictor, files: list, batch_size: int = 64, problems: list = ()) -> Predictions:
    """MFCCs of ``files`` with the model's feature config, then the model's probabilities.

    Bad files are skipped (``skipped``: path and reason, after the ``problems`` already found, e.g. by
    :func:`collect_audio_files`; all logged); very short files are kept and listed in ``short``.
    With ``predictor.normalize == "speaker"`` the features of ALL the usable files are z-scored with their
    joint statistics, as one speaker's utterances.
    """
    from emodarts_tf.data.features import AudioError, extract_features, find_short_audio, short_audio_message

    cfg = predictor.feature_config
    frames_of = _frames_function(predictor.frames_config)
    rows, frame_rows, paths, skipped = [], [], [], list(problems)
    for path in files:
        try:
            image = extract_features(path, cfg)
            if frames_of is not None:
                frame_rows.append(frames_of(str(Path(path).resolve())))
            rows.append(image)
            paths.append(path)
        except AudioError as exc:
            skipped.append((path, exc.problem))
        except ValueError as exc:  # a frame source's error (FrameError) names the file and the problem
            skipped.append((path, getattr(exc, "problem", None) or str(exc)))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others (as in the cache)
            skipped.append((path, f"feature extraction failed ({type(exc).__name__}: {exc})"))
    for path, reason in skipped:
        log.warning("%s: skipped: %s", path, reason)
    short = find_short_audio(paths, cfg)
    for line in short_audio_message(short, cfg):
        log.warning("%s", line)
    probabilities = np.zeros((0, len(predictor.classes)), np.float32)
    if rows:
        x = np.stack(rows).astype(np.float32)
        speaker = None
        if predictor.normalize == "speaker":
            from emodarts_tf.data.pipeline import speaker_statistics

            speaker = speaker_statistics(x)
            log.info(
                "speaker normalisation (the model was trained with data.normalize: speaker): the %d file(s) are "
                "taken as ONE speaker's utterances, z-scored with their joint statistics; run predict once per speaker",
                len(paths),
            )
            if len(paths) == 1:
                log.warning("speaker normalisation from a single file: its own statistics; predictions are less reliable")
        frames = frames_speaker = None
        if frames_of is not None:
            frames = np.stack(frame_rows).astype(np.float32)
            if speaker is not None:  # per dimension over every frame of the files, as the image per coefficient
                from emodarts_tf.data.pipeline import as_coefficient_layout, speaker_statistics

                mean, std = speaker_statistics(as_coefficient_layout(frames))
                frames_speaker = (mean.T, std.T)
        probabilities = predictor.probabilities(x, batch_size=batch_size, speaker=speaker, frames=frames,
                                                frames_speaker=frames_speaker)
    return Predictions(
        model=str(predictor.path),
        classes=list(predictor.classes),
        normalize=predictor.normalize,
        paths=paths,
        probabilities=probabilities,
        skipped=skipped,
        short=short,
        feature_config=cfg,
    )
