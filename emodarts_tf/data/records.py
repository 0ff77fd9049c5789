"""Utterance records and speaker-independent folds as data (``records.csv`` and ``folds.json``)."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from emodarts_tf.utils.io import atomic_write_text, read_json, write_json

# `gender` (M, F or empty when unknown) follows the five columns path, label, speaker, session, split;
# readers that know only those five ignore it, and it lets validation speakers be chosen gender-balanced from a
# records file alone.
RECORD_COLUMNS = ("path", "label", "speaker", "session", "split", "gender")
# `features` (a precomputed (frames, dim) .npy of the utterance, from a CSV manifest's optional column) is
# written only when some record has one: a corpus without precomputed features has exactly RECORD_COLUMNS.
FEATURES_COLUMN = "features"


@dataclass(frozen=True)
class Record:
    """One utterance: its audio file, emotion label, speaker, session (or group), official split and gender."""

    path: str
    label: str
    speaker: str
    session: str = ""
    split: str = ""
    gender: str = ""  # "M", "F" or "" (unknown)
    features: str = ""  # absolute path of a precomputed (frames, dim) .npy, or "" (none)


@dataclass
class Fold:
    """One speaker-independent fold: which speakers and which record paths train and test."""

    index: int  # 1-based
    name: str
    train_speakers: list = field(default_factory=list)
    test_speakers: list = field(default_factory=list)
    train: list = field(default_factory=list)  # record paths
    test: list = field(default_factory=list)  # record paths

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "train": {"speakers": list(self.train_speakers), "paths": list(self.train)},
            "test": {"speakers": list(self.test_speakers), "paths": list(self.test)},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Fold":
        try:
            return cls(
                index=int(d["index"]),
                name=str(d["name"]),
                train_speakers=list(d["train"]["speakers"]),
                test_speakers=list(d["test"]["speakers"]),
                train=list(d["train"]["paths"]),
                test=list(d["test"]["paths"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"fold entry {d!r}: missing or malformed field ({exc})") from exc


def write_records(path: str | Path, records: list[Record]) -> Path:
    """Write ``records.csv``: the columns :data:`RECORD_COLUMNS`, plus ``features`` when a record has one."""
    with_features = any(rec.features for rec in records)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(RECORD_COLUMNS + ((FEATURES_COLUMN,) if with_features else ()))
    for rec in records:
        row = [rec.path, rec.label, rec.speaker, rec.session, rec.split, rec.gender]
        writer.writerow(row + ([rec.features] if with_features else []))
    return atomic_write_text(path, buf.getvalue())


def read_records(path: str | Path) -> list[Record]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such records file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("path", "label", "speaker") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        return [
            Record(
                path=row["path"],
                label=row["label"],
                speaker=row["speaker"],
                session=row.get("session") or "",
                split=row.get("split") or "",
                gender=row.get("gender") or "",
                features=row.get(FEATURES_COLUMN) or "",
            )
            for row in reader
        ]


def write_folds(path: str | Path, folds: list[Fold]) -> Path:
    return write_json(path, [f.to_dict() for f in folds])


def read_folds(path: str | Path) -> list[Fold]:
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of folds")
    return [Fold.from_dict(d) for d in data]
