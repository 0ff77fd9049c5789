"""Fixtures of the baseline tests: a tiny search space and a config for 1-epoch trials."""
from __future__ import annotations

from pathlib import Path

import pytest

TINY_SPACE = """
cnn:
  conv_blocks: {min: 1, max: 2, default: 1}
  filters: {choices: [4, 8], default: 4}
  kernel_size: 3
  pooling: {choices: [max, avg], default: max}
  dense_units: 8
  dropout: {choices: [0.1, 0.2, 0.3, 0.4], default: 0.1}
  learning_rate: {choices: [0.01, 0.001], default: 0.01}
lstm:
  lstm_layers: 1
  lstm_units: {choices: [4, 8], default: 4}
  bidirectional: {choices: [true, false], default: false}
  dropout: {choices: [0.1, 0.2, 0.3, 0.4], default: 0.1}
  learning_rate: {choices: [0.01, 0.001], default: 0.01}
"""


@pytest.fixture
def tiny_space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_space.yaml"
    path.write_text(TINY_SPACE, encoding="utf-8")
    return path


@pytest.fixture
def tiny_config(tiny_space_file):
    """An ExperimentConfig for 1-epoch trials and retraining over the tiny space."""
    from emodarts_tf.config import load_config

    return load_config(
        None,
        overrides=[
            "baseline.family=cnn",
            "baseline.tuner=random",
            "baseline.trials=2",
            "baseline.epochs=1",
            "baseline.batch_size=8",
            "baseline.patience=1",
            f"baseline.space_file={tiny_space_file}",
            "features.n_mfcc=16",
        ],
    )
