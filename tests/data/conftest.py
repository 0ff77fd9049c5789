"""Fixtures of the data tests: tiny synthetic audio and miniature corpus trees with the real layouts."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from emodarts_tf.config import ExperimentConfig, FeatureConfig


def write_wav(path: Path, seed: int = 0, sr: int = 16000, seconds: float = 0.3, f0: float = 150.0) -> Path:
    """A short harmonic tone with noise (PCM 16), distinct per seed."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f = f0 * (1 + 0.3 * rng.random())
    y = sum(np.sin(2 * np.pi * k * f * t) / k for k in range(1, 6)) * 0.2
    y = y * np.hanning(len(t)) + 0.01 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
    return path


@pytest.fixture
def tiny_features() -> FeatureConfig:
    """A small, fast feature preset: 13 MFCCs x 16 pooled frames."""
    return FeatureConfig(
        sample_rate=8000, duration_s=0.5, n_mfcc=13, n_fft=256, hop_length=128, n_mels=26, time_pool=2
    )


@pytest.fixture
def make_config(tmp_path, tiny_features):
    """``make_config(corpus, root, **data_fields)`` -> an ExperimentConfig with the tiny preset and a tmp cache."""

    def build(corpus: str, root=None, **data_fields) -> ExperimentConfig:
        config = ExperimentConfig()
        config.features = tiny_features
        config.data.corpus = corpus
        config.data.root = str(root) if root is not None else None
        config.data.cache_dir = str(tmp_path / "cache")
        config.data.workers = 1
        for key, value in data_fields.items():
            setattr(config.data, key, value)
        return config

    return build


# ------------------------------------------------------------------------------------------- IEMOCAP
# (utterance, code) per session n (Ses0n). Dialog letter and speaker letter differ on purpose: the speaker
# is the gender letter of the LAST field.
def _iemocap_utterances(n: int) -> list:
    s = f"Ses0{n}"
    return [
        (f"{s}F_impro01", f"{s}F_impro01_F000", "hap"),
        (f"{s}F_impro01", f"{s}F_impro01_F001", "sad"),
        (f"{s}F_impro01", f"{s}F_impro01_M000", "ang"),
        (f"{s}F_impro01", f"{s}F_impro01_M001", "neu"),
        (f"{s}M_impro02", f"{s}M_impro02_F000", "ang"),
        (f"{s}M_impro02", f"{s}M_impro02_M000", "exc"),
        (f"{s}M_impro02", f"{s}M_impro02_M001", "xxx"),
        (f"{s}M_impro02", f"{s}M_impro02_F001", "neu"),
        (f"{s}F_script01_1", f"{s}F_script01_1_F000", "sad"),
        (f"{s}F_script01_1", f"{s}F_script01_1_M000", "fru"),
    ]


@pytest.fixture
def iemocap_root(tmp_path) -> Path:
    """IEMOCAP_full_release/ with 5 sessions, summary + C-/A- lines, and a per-rater sub-folder to skip."""
    root = tmp_path / "IEMOCAP_full_release"
    seed = 0
    for n in range(1, 6):
        session = root / f"Session{n}"
        by_dialog: dict = {}
        for dialog, utt, code in _iemocap_utterances(n):
            by_dialog.setdefault(dialog, []).append((utt, code))
            seed += 1
            write_wav(session / "sentences" / "wav" / dialog / f"{utt}.wav", seed=seed)
        emo = session / "dialog" / "EmoEvaluation"
        emo.mkdir(parents=True)
        for dialog, utts in by_dialog.items():
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            for i, (utt, code) in enumerate(utts):
                lines.append(f"[{i * 3 + 1.5:.4f} - {i * 3 + 3.2:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 2.5000]")
                lines.append(f"C-E2:\tNeutral state;\t()")
                lines.append(f"C-E3:\tFrustration;\t()")
                lines.append(f"A-E1:\tval 3; act 2; dom  3;\t()")
                lines.append("")
            (emo / f"{dialog}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        # A per-rater file in a sub-folder, with a summary-like line that would relabel an utterance.
        rater = emo / "Categorical"
        rater.mkdir()
        (rater / f"Ses0{n}F_impro01_e2_cat.txt").write_text(
            f"[1.5000 - 3.2000]\tSes0{n}F_impro01_F000\tsad\t[1.0, 1.0, 1.0]\n", encoding="utf-8"
        )
    # A labelled utterance without audio.
    with (root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt").open("a") as handle:
        handle.write("[30.0000 - 31.0000]\tSes01F_impro01_M099\tang\t[2.0000, 2.0000, 2.0000]\n")
    return root


# ---------------------------------------------------------------------------------------- MSP-IMPROV
# (sentence+target, type, consensus letter) per speaker.
_IMPROV_UTTS = [("S01A", "P", "A"), ("S02H", "T", "H"), ("S03S", "R", "S"), ("S04N", "S", "N"), ("S05A", "P", "O"),
                ("S06H", "T", "X"), ("S07S", "P", "N")]  # fmt: skip


@pytest.fixture
def msp_improv_root(tmp_path) -> Path:
    root = tmp_path / "MSP-IMPROV"
    lines = []
    seed = 100
    for n in range(1, 7):
        for gender in "FM":
            speaker = f"{gender}0{n}"
            for sent, kind, letter in _IMPROV_UTTS:
                stem = f"MSP-IMPROV-{sent}-{speaker}-{kind}-FM0{n}"
                seed += 1
                write_wav(root / f"session{n}" / sent / kind / f"{stem}.wav", seed=seed)
                lines.append(f"UTD-IMPROV-{sent}-{speaker}-{kind}-FM0{n}.avi; {letter}; A:3.0; V:3.0; D:3.0; N:1.0;")
                lines.append("mturk_rater_01; Angry; Other; A:3.0; V:2.0; D:3.0; N:1.0;")
                lines.append("mturk_rater_02; Neutral; Other; A:3.0; V:2.0; D:3.0; N:1.0;")
                lines.append("")
    (root / "Evaluation.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# --------------------------------------------------------------------------------------- MSP-Podcast
_PODCAST_ROWS = [
    # FileName, EmoClass, SpkrID, Gender, Split_Set
    ("MSP-PODCAST_0001_0001.wav", "A", "127", "Male", "Train"),
    ("MSP-PODCAST_0001_0002.wav", "H", "127", "Male", "Train"),
    ("MSP-PODCAST_0001_0003.wav", "S", "128", "Female", "Train"),
    ("MSP-PODCAST_0001_0004.wav", "N", "128", "Female", "Train"),
    ("MSP-PODCAST_0002_0001.wav", "U", "129", "Male", "Train"),
    ("MSP-PODCAST_0002_0002.wav", "N", "Unknown", "Unknown", "Train"),
    ("MSP-PODCAST_0003_0001.wav", "A", "200", "Female", "Development"),
    ("MSP-PODCAST_0003_0002.wav", "S", "201", "Male", "Development"),
    ("MSP-PODCAST_0004_0001.wav", "H", "300", "Female", "Test1"),
    ("MSP-PODCAST_0004_0002.wav", "N", "301", "Male", "Test1"),
    ("MSP-PODCAST_0004_0003.wav", "X", "301", "Male", "Test1"),
    ("MSP-PODCAST_0004_0004.wav", "S", "Unknown", "Unknown", "Test1"),
    ("MSP-PODCAST_0005_0001.wav", "A", "400", "Male", "Test2"),
]


@pytest.fixture
def msp_podcast_root(tmp_path):
    """``build(labels_name="labels_consensus.csv")`` -> an MSP-Podcast root."""

    def build(labels_name: str = "labels_consensus.csv") -> Path:
        root = tmp_path / f"MSP-Podcast-{labels_name}"
        for i, row in enumerate(_PODCAST_ROWS):
            write_wav(root / "Audios" / row[0], seed=300 + i)
        (root / "Labels").mkdir(parents=True)
        with (root / "Labels" / labels_name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"])
            for name, cls, spk, gender, split in _PODCAST_ROWS:
                writer.writerow([name, cls, "4.2", "3.8", "4.0", spk, gender, split])
        return root

    return build


# ------------------------------------------------------------------------------------------------ CSV
@pytest.fixture
def csv_corpus(tmp_path):
    """``build(n_speakers=4, per_class=3, classes=("ang","hap","neu","sad"))`` -> manifest path.

    Speakers alternate gender; each class has its own base pitch so that the corpus is learnable.
    """

    def build(n_speakers: int = 4, per_class: int = 3, classes=("ang", "hap", "neu", "sad"), name="corpus") -> Path:
        root = tmp_path / name
        rows = []
        seed = 1000
        for s in range(n_speakers):
            gender = "F" if s % 2 else "M"
            for c, label in enumerate(classes):
                for u in range(per_class):
                    seed += 1
                    rel = f"audio/spk{s}/{label}_{u}.wav"
                    write_wav(root / rel, seed=seed, f0=110.0 + 60.0 * c)
                    rows.append([rel, label, f"spk{s}", f"{s // 2 + 1}", "", gender])
        with (root / "manifest.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "speaker", "session", "split", "gender"])
            writer.writerows(rows)
        return root / "manifest.csv"

    return build


@pytest.fixture
def wav_writer():
    """``write_wav(path, seed=0, sr=16000, seconds=0.3, f0=150.0)`` for tests that make their own files."""
    return write_wav
