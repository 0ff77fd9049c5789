"""Corpus loaders: one design, parametrised per corpus through a registry.

Each corpus contributes a *reader* that follows its real layout and yields :class:`Utterance` entries
(audio path, raw label code, speaker, session, official split, gender, improvised/scripted kind) plus the
problems it met, and a :class:`CorpusSpec` that maps its label codes to class names and names its default
classes and fold protocol. :func:`load_corpus` does the rest the same way for every corpus: label mapping,
unknown labels, class and selection filters, duplicate files, and the summary.

Speaker ids are unique corpus-wide (IEMOCAP ``Ses01_M``, MSP-IMPROV ``F05``, EmoDB ``03``). Class names are
the IEMOCAP-style three-letter codes (``ang``, ``hap``, ``neu``, ``sad``, ...).

Corpora (layouts in ``../shared/docs/background.md``):

- ``iemocap``: ``Session{1..5}/sentences/wav/<dialog>/<utt>.wav``; labels from the summary lines of the
  top-level ``Session{n}/dialog/EmoEvaluation/<dialog>.txt`` files. Speaker = session + the gender letter
  of the utterance name's last field. ``data.selection`` improvised | scripted | all; ``data.merge_exc``.
- ``msp-improv``: ``Evaluation.txt`` (consensus letters) and ``session*/<S08A>/<P|R|S|T>/MSP-IMPROV-*.wav``;
  ``data.msp_improv_labels`` consensus | target (the acted target letter of the file name).
- ``msp-podcast``: ``Audios/*.wav`` and ``Labels/labels_consensus.csv`` (``labels_concensus.csv`` in older
  releases) with the official ``Split_Set``.
- ``emodb``: file-name codes (``03a01Fa.wav``: speaker ``03``, emotion letter ``F``).
- ``csv``: a manifest with columns ``path,label,speaker`` and optional ``session``, ``split``, ``gender`` and
  ``features`` (a precomputed ``(frames, dim)`` ``.npy`` per utterance for the frame-level stream,
  :mod:`emodarts_tf.data.frame_features`; relative paths from the manifest's folder, like ``path``).
  Its labels are class names as written, normalised (stripped, lower-cased): ``Ang`` and ``ang`` are one
  class ``ang`` (the merge is logged with the count of each spelling); ``data.classes`` is normalised too.
- ``demo``: the built-in synthetic corpus (:mod:`emodarts_tf.data.demo`).
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from emodarts_tf.config import DataConfig
from emodarts_tf.data.records import Record

log = logging.getLogger(__name__)

STANDARD_CLASSES = ("ang", "hap", "neu", "sad")
# The emoDARTS paper's IEMOCAP protocol: improvised dialogs, these four classes, no exc merge.
EMODARTS_CLASSES = STANDARD_CLASSES


@dataclass(frozen=True)
class Problem:
    """A file (or label line) reported and skipped, with the reason."""

    path: str
    problem: str

    def to_dict(self) -> dict:
        return {"path": self.path, "problem": self.problem}

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class Utterance:
    """What a corpus reader yields: a raw label code, before mapping and selection."""

    path: str
    code: str
    speaker: str
    session: str = ""
    split: str = ""
    gender: str = ""
    kind: str = ""  # IEMOCAP: improvised | scripted
    features: str = ""  # csv: the manifest's optional `features` column (absolute path of a .npy), or ""


@dataclass
class CorpusData:
    """The selected utterances of a corpus, with what was dropped and why."""

    name: str
    root: Optional[str]
    records: list  # list[Record], sorted by path, labels are class names
    classes: list  # the selected classes, in label-id order
    protocol: str  # the resolved protocol name
    problems: list = field(default_factory=list)  # list[Problem]
    dropped: dict = field(default_factory=dict)  # reason -> count (labels not selected, selection)
    synthetic: bool = False
    selection: str = "all"  # the IEMOCAP selection applied (improvised under the emodarts protocol)


@dataclass(frozen=True)
class CorpusSpec:
    """How one corpus differs from the others; everything else is shared."""

    name: str
    reader: Callable[[Optional[Path], DataConfig], tuple]  # -> (list[Utterance], list[Problem])
    codes: Optional[dict]  # raw code -> class name; None: the labels are class names already (csv)
    default_classes: tuple
    default_protocol: str
    protocols: tuple
    synthetic: bool = False


def _skip_hidden(path: Path) -> bool:
    """AppleDouble (``._x.wav``) and other dot files shipped with some corpus copies."""
    return path.name.startswith(".")


def _require_dir(root: Optional[Path], corpus: str) -> Path:
    if root is None:
        raise ValueError(f"data.root: corpus {corpus!r} needs the corpus folder (--root)")
    if not root.is_dir():
        raise ValueError(f"data.root {str(root)!r}: no such folder (corpus {corpus!r})")
    return root


# --------------------------------------------------------------------------------------------- IEMOCAP
_IEMOCAP_UTT = re.compile(r"^Ses(\d{2})[MF]_(.+)_([MF])\d+$")


def read_iemocap(root: Optional[Path], data: DataConfig) -> tuple:
    root = _require_dir(root, "iemocap")
    if (root / "IEMOCAP_full_release").is_dir():
        root = root / "IEMOCAP_full_release"
    sessions = sorted(p for p in root.glob("Session[0-9]") if p.is_dir())
    if not sessions:
        raise ValueError(f"{root}: not an IEMOCAP root (no Session1..Session5 folders)")
    label_files = []
    for session in sessions:
        emo_dir = session / "dialog" / "EmoEvaluation"
        # Top-level files only: the sub-folders (Categorical/, Attribute/, Self-evaluation/) are per rater.
        label_files += sorted(p for p in emo_dir.glob("*.txt") if p.is_file() and not _skip_hidden(p))
    if not label_files:
        raise ValueError(
            f"{root}: no IEMOCAP label files (expected Session*/dialog/EmoEvaluation/<dialog>.txt)"
        )
    problems: list = []
    labels: dict = {}
    for label_file in label_files:
        for line_no, line in enumerate(label_file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.startswith("["):
                continue  # blank lines, C- (categorical) and A- (dimensional) rater lines
            parts = line.split("\t")
            if len(parts) < 3:
                problems.append(Problem(f"{label_file}:{line_no}", f"malformed summary line {line!r}"))
                continue
            labels[parts[1].strip()] = (parts[2].strip().lower(), f"{label_file}:{line_no}")
    wavs: dict = {}
    for session in sessions:
        for wav in sorted((session / "sentences" / "wav").glob("*/*.wav")):
            if not _skip_hidden(wav):
                wavs[wav.stem] = wav
    if not wavs:
        raise ValueError(f"{root}: no IEMOCAP audio (expected Session*/sentences/wav/<dialog>/<utt>.wav)")
    utterances = []
    for utt, wav in sorted(wavs.items()):
        match = _IEMOCAP_UTT.match(utt)
        if not match:
            problems.append(Problem(str(wav), "file name does not follow Ses<nn><F|M>_<dialog>_<F|M><nnn>"))
            continue
        if utt not in labels:
            problems.append(Problem(str(wav), "no summary line in the EmoEvaluation files"))
            continue
        session, dialog, gender = match.groups()
        utterances.append(
            Utterance(
                path=os.path.abspath(wav),
                code=labels[utt][0],
                speaker=f"Ses{session}_{gender}",
                session=session,
                gender=gender,
                kind="improvised" if dialog.startswith("impro") else "scripted",
            )
        )
    for utt, (_, where) in sorted(labels.items()):
        if utt not in wavs:
            problems.append(Problem(where, f"labelled utterance {utt} has no audio file"))
    return utterances, problems


# ------------------------------------------------------------------------------------------ MSP-IMPROV
_MSP_IMPROV_NAME = re.compile(r"^MSP-IMPROV-([A-Z]\d+)([A-Z])-([MF])(\d{2})-([PRST])-(\w+)$")
_MSP_IMPROV_EVAL = re.compile(r"^UTD-IMPROV-(\S+?)\.avi\s*;\s*([A-Za-z])\s*;")


def read_msp_improv(root: Optional[Path], data: DataConfig) -> tuple:
    root = _require_dir(root, "msp-improv")
    mode = data.msp_improv_labels
    if mode not in ("consensus", "target"):
        raise ValueError(f"data.msp_improv_labels: expected 'consensus' or 'target', received {mode!r}")
    consensus: dict = {}
    if mode == "consensus":
        # The release spells it `Evalution.txt`; accept both spellings.
        names = ("Evaluation.txt", "Evalution.txt")
        candidates = [root / n for n in names] + sorted(p for n in names for p in root.glob(f"*/{n}"))
        label_file = next((p for p in candidates if p.is_file()), None)
        if label_file is None:
            raise ValueError(
                f"{root}: no MSP-IMPROV label file (expected {candidates[0]}); "
                "use data.msp_improv_labels=target for the acted target emotion of the file names"
            )
        for line in label_file.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _MSP_IMPROV_EVAL.match(line.strip())
            if match:
                consensus["MSP-IMPROV-" + match.group(1)] = match.group(2).upper()
    wavs = sorted(p for p in root.rglob("MSP-IMPROV-*.wav") if not _skip_hidden(p))
    if not wavs:
        raise ValueError(
            f"{root}: no MSP-IMPROV audio (expected session*/<sentence>/<P|R|S|T>/MSP-IMPROV-*.wav)"
        )
    utterances, problems = [], []
    for wav in wavs:
        match = _MSP_IMPROV_NAME.match(wav.stem)
        if not match:
            problems.append(
                Problem(str(wav), "file name does not follow MSP-IMPROV-<sentence><target>-<speaker>-<type>-<id>")
            )
            continue
        _, target, gender, session, _, _ = match.groups()
        if mode == "consensus":
            if wav.stem not in consensus:
                problems.append(Problem(str(wav), "no line for this utterance in Evaluation.txt"))
                continue
            code = consensus[wav.stem]
        else:
            code = target
        utterances.append(
            Utterance(
                path=os.path.abspath(wav),
                code=code,
                speaker=f"{gender}{session}",
                session=session,
                gender=gender,
            )
        )
    return utterances, problems


# ----------------------------------------------------------------------------------------- MSP-Podcast
_PODCAST_COLUMNS = ("FileName", "EmoClass", "SpkrID", "Gender", "Split_Set")


def read_msp_podcast(root: Optional[Path], data: DataConfig) -> tuple:
    root = _require_dir(root, "msp-podcast")
    candidates = [root / "Labels" / "labels_consensus.csv", root / "Labels" / "labels_concensus.csv"]
    label_file = next((p for p in candidates if p.is_file()), None)
    if label_file is None:
        raise ValueError(f"{root}: no MSP-Podcast label file (expected {candidates[0]} or {candidates[1].name})")
    audio_dir = root / "Audios"
    if not audio_dir.is_dir():
        raise ValueError(f"{root}: no MSP-Podcast audio folder (expected {audio_dir})")
    utterances, problems = [], []
    with label_file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fieldnames = [f.strip() for f in (reader.fieldnames or [])]
        missing = [c for c in _PODCAST_COLUMNS if c not in fieldnames]
        if missing:
            raise ValueError(f"{label_file}: missing column(s) {missing}; found {fieldnames}")
        for row in reader:
            row, problem = _clean_row(row, len(fieldnames))
            if problem:
                problems.append(Problem(f"{label_file}:{reader.line_num}", problem))
                continue
            name, split = row["FileName"], row["Split_Set"]
            if not name or not row["EmoClass"]:
                problems.append(Problem(f"{label_file}:{reader.line_num}", "empty FileName or EmoClass"))
                continue
            speaker = unknown_speaker_group(row["SpkrID"] or "Unknown", split)
            gender = {"male": "M", "female": "F", "m": "M", "f": "F"}.get(row["Gender"].lower(), "")
            utterances.append(
                Utterance(
                    path=os.path.abspath(audio_dir / name),
                    code=row["EmoClass"].upper(),
                    speaker=speaker,
                    split=split,
                    gender=gender,
                )
            )
    return utterances, problems


# ---------------------------------------------------------------------------------------------- EmoDB
_EMODB_NAME = re.compile(r"^(\d{2})([a-z]\d{2})([A-Z])([a-z])$")
EMODB_GENDERS = {
    "03": "M", "10": "M", "11": "M", "12": "M", "15": "M",
    "08": "F", "09": "F", "13": "F", "14": "F", "16": "F",
}  # fmt: skip


def read_emodb(root: Optional[Path], data: DataConfig) -> tuple:
    root = _require_dir(root, "emodb")
    wav_dir = root / "wav" if (root / "wav").is_dir() else root
    wavs = sorted(p for p in wav_dir.glob("*.wav") if not _skip_hidden(p))
    if not wavs:
        raise ValueError(f"{root}: no EmoDB audio (expected wav/<speaker><text><emotion><version>.wav)")
    utterances, problems = [], []
    for wav in wavs:
        match = _EMODB_NAME.match(wav.stem)
        if not match:
            problems.append(Problem(str(wav), "file name does not follow <speaker><text><emotion><version>, e.g. 03a01Fa"))
            continue
        speaker, _, letter, _ = match.groups()
        utterances.append(
            Utterance(path=os.path.abspath(wav), code=letter, speaker=speaker, gender=EMODB_GENDERS.get(speaker, ""))
        )
    return utterances, problems


# ------------------------------------------------------------------------------------------------ CSV
def _clean_row(row: dict, columns: int) -> tuple:
    """``(row, problem)``: a ``csv.DictReader`` row with stripped names and cells, and a description when the row
    has more non-empty cells than the header has columns (the reader keeps them under the key ``None``; empty
    ones, as from a trailing comma, are ignored), else ``""``."""
    extra = [c for c in row.pop(None, None) or [] if (c or "").strip()]
    if extra:
        return row, (f"{len(extra)} cell(s) more than the header's {columns} columns (an unquoted comma in a "
                     "path or name?)")
    return {(k or "").strip(): (v or "").strip() for k, v in row.items()}, ""


def unknown_speaker_group(speaker: str, split: str) -> str:
    """``speaker``, or for MSP-Podcast's ``Unknown`` (any case) one group per split, ``Unknown-<split>``: the
    utterances of unknown speakers are not one person's, and one group across splits would tie training to test
    (the official protocol would then drop every unknown speaker's training utterances)."""
    return f"Unknown-{split or 'none'}" if speaker.lower() == "unknown" else speaker


def read_manifest(manifest: Path, encoding: str = "utf-8-sig") -> tuple:
    """Rows of a ``path,label,speaker[,session,split,gender,features]`` CSV; relative paths (of ``path`` and
    ``features``) from its folder.

    Raises:
        ValueError: no such file, an unknown ``encoding``, or bytes that are not text in it (naming the file,
            line and byte), missing columns.
    """
    if manifest.is_dir():
        raise ValueError(f"data.root {str(manifest)!r} is a folder; corpus 'csv' reads a CSV manifest file")
    if not manifest.is_file():
        raise ValueError(f"data.root {str(manifest)!r}: no such CSV manifest")
    raw = manifest.read_bytes()
    try:
        # A byte-order mark is not part of the header, whatever the spelling of UTF-8 asked for.
        decode_as = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
        text = raw.decode(decode_as)
    except LookupError:
        raise ValueError(f"data.encoding {encoding!r}: unknown text encoding (e.g. utf-8, latin-1, cp1252)") from None
    except UnicodeDecodeError as exc:
        decoded = exc.object  # the bytes after a byte-order mark, which exc.start counts in
        line = decoded[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{manifest}: line {line} is not {encoding} text (byte 0x{decoded[exc.start]:02x}); pass the file's "
            "encoding with --encoding (e.g. --encoding latin-1)"
        ) from None
    utterances, problems = [], []
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        fieldnames = [f.strip() for f in (reader.fieldnames or [])]
        missing = [c for c in ("path", "label", "speaker") if c not in fieldnames]
        if missing:
            raise ValueError(f"{manifest}: missing column(s) {missing}; found {fieldnames}")
        for row in reader:
            row, problem = _clean_row(row, len(fieldnames))
            if not problem and not (row["path"] and row["label"] and row["speaker"]):
                problem = "empty path, label or speaker"
            if problem:
                problems.append(Problem(f"{manifest}:{reader.line_num}", problem))
                continue
            path = Path(row["path"]).expanduser()
            if not path.is_absolute():
                path = manifest.parent / path
            features = row.get("features", "")
            if features:  # optional: a precomputed .npy of the utterance
                npy = Path(features).expanduser()
                features = os.path.abspath(npy if npy.is_absolute() else manifest.parent / npy)
            utterances.append(
                Utterance(
                    path=os.path.abspath(path),
                    code=row["label"],
                    speaker=row["speaker"],
                    session=row.get("session", ""),
                    split=row.get("split", ""),
                    gender=row.get("gender", "").upper()[:1],
                    features=features,
                )
            )
    return utterances, problems


def _group_unknown_per_split(manifest: Optional[Path], utterances: list) -> list:
    """A CSV manifest under the ``official`` protocol: its ``Unknown`` speakers (any case) one group per split, as
    the MSP-Podcast reader does (:func:`unknown_speaker_group`), counted in a warning. Under ``official`` one group
    across splits would sit on both sides, and the fold would drop all its training utterances. Other protocols
    keep the manifest's speakers: there, unknown speakers of different splits may be the same people."""
    counts = Counter()
    out = []
    for utt in utterances:
        speaker = unknown_speaker_group(utt.speaker, utt.split)
        if speaker != utt.speaker:
            counts[speaker] += 1
            utt = dataclasses.replace(utt, speaker=speaker)
        out.append(utt)
    if counts:
        log.warning(
            "%s: %d row(s) of speaker 'Unknown' grouped per split for protocol official (%s), as for MSP-Podcast: "
            "one group across splits would tie training to test",
            manifest, sum(counts.values()), ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
        )  # fmt: skip
    return out


def read_csv(root: Optional[Path], data: DataConfig) -> tuple:
    if root is None:
        raise ValueError("data.root: corpus 'csv' needs the CSV manifest (--root)")
    return read_manifest(root, data.encoding)


def read_demo(root: Optional[Path], data: DataConfig) -> tuple:
    from emodarts_tf.data.demo import ensure_demo_corpus

    manifest = ensure_demo_corpus(data.cache_dir)
    return read_manifest(manifest)


# ------------------------------------------------------------------------------------------- registry
_IEMOCAP_CODES = {c: c for c in ("ang", "hap", "sad", "neu", "exc", "fru", "fea", "sur", "dis", "oth", "xxx")}
_MSP_CODES = {"A": "ang", "H": "hap", "S": "sad", "N": "neu", "O": "oth", "X": "xxx"}
_PODCAST_CODES = {
    "A": "ang", "H": "hap", "S": "sad", "N": "neu", "U": "sur",
    "F": "fea", "D": "dis", "C": "con", "O": "oth", "X": "xxx",
}  # fmt: skip
EMODB_CODES = {"W": "ang", "L": "bor", "N": "neu", "F": "hap", "A": "fea", "T": "sad", "E": "dis"}

CORPORA: dict = {
    spec.name: spec
    for spec in (
        CorpusSpec("iemocap", read_iemocap, _IEMOCAP_CODES, STANDARD_CLASSES, "emodarts",
                   ("emodarts", "loso", "loso-session")),
        CorpusSpec("msp-improv", read_msp_improv, _MSP_CODES, STANDARD_CLASSES, "loso-session",
                   ("loso-session", "loso")),
        CorpusSpec("msp-podcast", read_msp_podcast, _PODCAST_CODES, STANDARD_CLASSES, "official",
                   ("official", "loso")),
        CorpusSpec("emodb", read_emodb, EMODB_CODES, STANDARD_CLASSES, "emodb5", ("emodb5", "loso")),
        CorpusSpec("csv", read_csv, None, (), "loso", ("loso", "loso-session", "official")),
        CorpusSpec("demo", read_demo, None, STANDARD_CLASSES, "loso", ("loso", "loso-session"), synthetic=True),
    )
}  # fmt: skip


def corpus_spec(name: str) -> CorpusSpec:
    if name not in CORPORA:
        raise ValueError(f"data.corpus: unknown corpus {name!r}; expected one of {sorted(CORPORA)}")
    return CORPORA[name]


def resolve_protocol(corpus: str, protocol: str) -> str:
    """``default`` -> the corpus's standard protocol; an unsupported one is a ``ValueError``."""
    spec = corpus_spec(corpus)
    name = spec.default_protocol if protocol in (None, "", "default") else protocol
    if name not in spec.protocols:
        raise ValueError(
            f"data.protocol: {name!r} does not apply to corpus {corpus!r}; expected one of {list(spec.protocols)}"
        )
    return name


def _select_classes(spec: CorpusSpec, data: DataConfig, protocol: str, utterances: list) -> list:
    if protocol == "emodarts":
        if data.classes and sorted(data.classes) != sorted(EMODARTS_CLASSES):
            log.warning(
                "protocol emodarts uses the paper's classes %s; data.classes=%s ignored",
                list(EMODARTS_CLASSES), data.classes,
            )
        return list(EMODARTS_CLASSES)
    known = sorted(set(spec.codes.values())) if spec.codes is not None else sorted({u.code for u in utterances})
    if data.classes:
        classes = [str(c) for c in data.classes]
        if spec.codes is None and classes != ["all"]:
            classes = [normalise_label(c) for c in classes]  # spelled like the corpus's normalised labels
        if classes == ["all"]:
            return list(dict.fromkeys(spec.codes.values())) if spec.codes is not None else known
        unknown = [c for c in classes if c not in known]
        if unknown:
            raise ValueError(f"data.classes: {unknown} not in corpus {spec.name!r}; expected some of {known}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"data.classes: expected distinct class names, received {classes}")
        return classes
    return list(spec.default_classes) if spec.default_classes else known


def normalise_label(label: str) -> str:
    """A class name as written in a manifest, stripped and lower-cased (``" Ang"`` -> ``"ang"``)."""
    return str(label).strip().lower()


def _normalise_labels(corpus: str, utterances: list) -> list:
    """``utterances`` with normalised labels (:func:`normalise_label`); logs each class whose spelling
    changed, with the count of every spelling merged into it."""
    spellings: dict = {}
    out = []
    for utt in utterances:
        label = normalise_label(utt.code)
        spellings.setdefault(label, Counter())[utt.code] += 1
        out.append(utt if label == utt.code else dataclasses.replace(utt, code=label))
    for label, counts in sorted(spellings.items()):
        if set(counts) == {label}:
            continue
        listing = ", ".join(f"{spelling!r} ({n})" for spelling, n in sorted(counts.items()))
        verb = "merged spellings" if len(counts) > 1 else "normalised the spelling"
        log.info("%s: %s of class %r (stripped, lower-cased): %s -> %r (%d utterances)",
                 corpus, verb, label, listing, label, sum(counts.values()))  # fmt: skip
    return out


def drop_rare_classes(records: list, classes: list, min_speakers: int, corpus: str) -> tuple:
    """Leave out the classes spoken by fewer than ``min_speakers`` speakers (``data.min_speakers_per_class``),
    and those with no utterance left.

    Such a class is missing from the training part of every fold that holds all its speakers out (with one
    speaker: its own leave-one-speaker-out fold, whose test scores a class it never trained on), so the
    folds would not learn and score the same classes. Each dropped class is logged with its speakers and
    utterance count.

    Returns:
        ``(records, classes, dropped)``: the records and classes kept (in their order), and ``{reason:
        utterances}`` for the dropped classes, the same kind of counts as :attr:`CorpusData.dropped`.

    Raises:
        ValueError: ``min_speakers`` is not a positive integer, or no class is left.
    """
    if isinstance(min_speakers, bool) or not isinstance(min_speakers, int) or min_speakers < 1:
        raise ValueError(f"data.min_speakers_per_class: expected an integer >= 1, received {min_speakers!r}")
    speakers: dict = {c: set() for c in classes}
    counts: Counter = Counter()
    for r in records:
        speakers.setdefault(r.label, set()).add(r.speaker)
        counts[r.label] += 1
    empty = [c for c in classes if not counts[c]]
    if empty and len(empty) < len(classes):
        # A class with no utterance (none in the corpus, or every file of it failed extraction) would be an
        # output that no fold trains.
        log.warning("%s: class(es) %s dropped: no utterance left", corpus, empty)
    rare = [c for c in classes if counts[c] and len(speakers[c]) < min_speakers]
    kept = [c for c in classes if counts[c] and c not in rare]
    if not rare:
        return records, kept or classes, {}
    dropped = {}
    for c in rare:
        who = sorted(speakers[c])
        log.warning(
            "%s: class %r dropped: %d utterance(s) from %d speaker(s) (%s), fewer than "
            "data.min_speakers_per_class=%d, so that every fold trains and scores the same classes",
            corpus, c, counts[c], len(who), ", ".join(who), min_speakers,
        )  # fmt: skip
        dropped[f"class {c}: fewer than {min_speakers} speakers"] = counts[c]
    if not kept:
        raise ValueError(
            f"corpus {corpus!r}: every class has fewer than data.min_speakers_per_class={min_speakers} speakers "
            f"({', '.join(f'{c}: {len(speakers[c])}' for c in classes if counts[c])}); lower it or add speakers"
        )
    wanted = set(kept)
    return [r for r in records if r.label in wanted], kept, dropped


def load_corpus(data: DataConfig) -> CorpusData:
    """Read the corpus of ``data.corpus`` at ``data.root`` and apply label mapping and selection.

    Raises:
        ValueError: unknown corpus or protocol, a wrong root, or missing label files of the whole corpus.
    """
    spec = corpus_spec(data.corpus)
    protocol = resolve_protocol(data.corpus, data.protocol)
    root = Path(data.root).expanduser() if data.root else None
    utterances, problems = spec.reader(root, data)
    if spec.name == "csv" and protocol == "official":
        utterances = _group_unknown_per_split(root, utterances)
    if spec.codes is None:
        # Labels written by hand (a CSV manifest): `Ang`, `ang ` and `ANG` are one class.
        utterances = _normalise_labels(spec.name, utterances)
    selection, merge_exc = data.selection, data.merge_exc
    if protocol == "emodarts":
        if selection != "improvised" or merge_exc:
            log.info("protocol emodarts: the paper's selection (improvised dialogs, no exc merge)")
        selection, merge_exc = "improvised", False
    if selection not in ("improvised", "scripted", "all"):
        raise ValueError(f"data.selection: expected improvised, scripted or all, received {selection!r}")
    if spec.name != "iemocap" and selection != "all":
        log.info("data.selection=%s applies to IEMOCAP only; corpus %s keeps every utterance", selection, spec.name)
        selection = "all"
    codes = dict(spec.codes) if spec.codes is not None else None
    if merge_exc:
        if spec.name != "iemocap":
            log.info("data.merge_exc applies to IEMOCAP only; ignored for %s", spec.name)
        else:
            codes["exc"] = "hap"
    classes = _select_classes(spec, data, protocol, utterances)
    wanted = set(classes)
    dropped: Counter = Counter()
    records, seen = [], set()
    for utt in utterances:
        label = utt.code if codes is None else codes.get(utt.code)
        if label is None:
            expected = sorted(codes)
            problems.append(Problem(utt.path, f"unknown label {utt.code!r} (expected one of {expected})"))
            continue
        if selection != "all" and utt.kind and utt.kind != selection:
            dropped[f"not {selection}"] += 1
            continue
        if label not in wanted:
            dropped[f"label {label}"] += 1
            continue
        if utt.path in seen:
            problems.append(Problem(utt.path, "listed more than once; the first entry is kept"))
            continue
        seen.add(utt.path)
        records.append(Record(utt.path, label, utt.speaker, utt.session, utt.split, utt.gender, utt.features))
    records.sort(key=lambda r: r.path)
    for problem in problems:
        log.warning("%s: skipped: %s", spec.name, problem)
    if not records:
        raise ValueError(
            f"corpus {spec.name!r} at {data.root!r}: no utterances left after selecting classes {classes} "
            f"(selection {selection}); dropped {dict(dropped)}, {len(problems)} problem(s)"
        )
    missing = [c for c in classes if not any(r.label == c for r in records)]
    if missing:
        log.warning("%s: no utterances of class(es) %s", spec.name, missing)
    if spec.synthetic:
        log.info("corpus %s is SYNTHETIC (generated speech-like audio, not real emotional speech)", spec.name)
    return CorpusData(
        name=spec.name,
        root=str(root) if root is not None else None,
        records=records,
        classes=classes,
        protocol=protocol,
        problems=problems,
        dropped=dict(sorted(dropped.items())),
        synthetic=spec.synthetic,
        selection=selection,
    )
