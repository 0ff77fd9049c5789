"""Shared pieces of the export tests: a mini EmoDB manifest, tiny configs, 16 kHz waveforms."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

EMODB_LABELS = {"W": "ang", "F": "hap", "T": "sad", "N": "neu"}

# 16 kHz features: the waveform signature needs no resampling.
FEATURES_16K = ["features.sample_rate=16000", "features.duration_s=1.0", "features.n_mfcc=16", "features.n_fft=512",
                "features.hop_length=256", "features.n_mels=32", "features.time_pool=2"]  # fmt: skip
# The paper's feature rate (32750 Hz) at a smaller size: the waveform signature resamples in the graph.
FEATURES_PAPER_RATE = ["features.sample_rate=32750", "features.duration_s=3.0", "features.n_mfcc=40",
                       "features.n_fft=1024", "features.hop_length=512", "features.n_mels=64",
                       "features.time_pool=4"]  # fmt: skip
TINY_NETWORK = ["space.init_channels=2", "space.cnn_cells=3", "space.stem_multiplier=1", "space.seq_cells=1",
                "space.seq_hidden=8"]  # fmt: skip
TINY_GENOTYPE = {
    "normal": [[["skip_connect", 0], ["sep_conv_3x3", 1]]],
    "reduce": [[["max_pool_3x3", 0], ["skip_connect", 1]]],
    "seq": [[["lstm_1", 0], ["skip_connect", 1]]],
}


def write_emodb_manifest(path: Path, emodb_root: Path, speakers=("03", "08", "09", "10"), per_class: int = 2) -> Path:
    rows = ["path,label,speaker"]
    count: Counter = Counter()
    for wav in sorted((emodb_root / "wav").glob("*.wav")):
        speaker, letter = wav.stem[:2], wav.stem[5]
        if speaker in speakers and letter in EMODB_LABELS and count[(speaker, letter)] < per_class:
            count[(speaker, letter)] += 1
            rows.append(f"{wav},{EMODB_LABELS[letter]},{speaker}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def config(manifest: Path, cache: Path, features: list, extra: list = ()):
    from emodarts_tf.config import load_config

    return load_config(None, overrides=["data.corpus=csv", f"data.root={manifest}", f"data.cache_dir={cache}",
                                        "data.workers=1", *features, *TINY_NETWORK, "train.batch_size=8",
                                        "train.epochs=3", "train.patience=5", *extra])  # fmt: skip


def waveforms_16k(paths) -> np.ndarray:
    """16 kHz mono float32 waveforms of ``paths`` (librosa's resampler, as the feature extraction uses),
    zero-padded at the end into one batch."""
    import librosa

    waves = [librosa.load(str(p), sr=16000)[0] for p in paths]
    batch = np.zeros((len(waves), max(len(w) for w in waves)), np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return batch
