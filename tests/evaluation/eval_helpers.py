"""Shared pieces of the evaluation tests: a mini EmoDB manifest, a tiny config, tiny models."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

EMODB_LABELS = {"W": "ang", "F": "hap", "T": "sad", "N": "neu"}

# Small MFCCs at 16 kHz: 16 coefficients x 31 frames (1 s, hop 256, max-pool 2).
TINY_FEATURES = [
    "features.sample_rate=16000",
    "features.duration_s=1.0",
    "features.n_mfcc=16",
    "features.n_fft=512",
    "features.hop_length=256",
    "features.n_mels=32",
    "features.time_pool=2",
]
TINY_NETWORK = [
    "space.init_channels=2",
    "space.cnn_cells=3",
    "space.stem_multiplier=1",
    "space.seq_cells=1",
    "space.seq_hidden=8",
]
TINY_TRAIN = ["train.batch_size=8", "train.patience=3", "train.epochs=3"]

# One node per cell: the smallest genotype that still has every cell kind.
TINY_GENOTYPE = {
    "normal": [[["skip_connect", 0], ["sep_conv_3x3", 1]]],
    "reduce": [[["max_pool_3x3", 0], ["skip_connect", 1]]],
    "seq": [[["lstm_1", 0], ["skip_connect", 1]]],
}


def write_emodb_manifest(path: Path, emodb_root: Path, speakers=("03", "08", "09", "10"), per_class: int = 2,
                         letters: str = "WFTN", labels: dict | None = None) -> Path:
    """A CSV manifest (path,label,speaker) of ``per_class`` EmoDB files per speaker and emotion letter."""
    labels = labels or EMODB_LABELS
    rows = ["path,label,speaker"]
    count: Counter = Counter()
    for wav in sorted((emodb_root / "wav").glob("*.wav")):
        speaker, letter = wav.stem[:2], wav.stem[5]
        if speaker in speakers and letter in letters and count[(speaker, letter)] < per_class:
            count[(speaker, letter)] += 1
            rows.append(f"{wav},{labels[letter]},{speaker}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def tiny_overrides(manifest: Path, cache_dir: Path) -> list[str]:
    return [f"data.root={manifest}", f"data.cache_dir={cache_dir}", "data.workers=1",
            *TINY_FEATURES, *TINY_NETWORK, *TINY_TRAIN]  # fmt: skip


def tiny_config(manifest: Path, cache_dir: Path, extra: list[str] = ()):
    from emodarts_tf.config import load_config

    return load_config(None, overrides=["data.corpus=csv", *tiny_overrides(manifest, cache_dir), *extra])


def standin_builder(input_shape, num_classes: int, width: int = 4):
    """A small functional CNN (input ``mfcc``, logits) where the genotype is not the point."""
    import keras

    def build():
        inputs = keras.Input(tuple(input_shape), name="mfcc")
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(num_classes, name="logits")(x)
        return keras.Model(inputs, outputs, name="standin")

    return build


def standin_info(config) -> dict:
    from dataclasses import asdict

    return {"kind": "standin", "features": asdict(config.features), "corpus": config.data.corpus,
            "corpus_root": str(Path(config.data.root).resolve()), "protocol": "loso"}  # fmt: skip
