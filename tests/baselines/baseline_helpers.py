"""Tiny in-memory stand-ins for the data pipeline (``FoldData``), so baseline tests need no corpus."""
from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np

SHAPE = (16, 16, 1)
CLASSES = ["ang", "hap", "neu", "sad"]


@dataclass
class StandInFold:
    index: int
    name: str = ""
    train_speakers: list = field(default_factory=lambda: ["s1", "s2", "s3"])
    test_speakers: list = field(default_factory=lambda: ["s4"])


class StandInFoldData:
    """Implements what ``data.pipeline.FoldData`` offers, over small random arrays with learnable labels.

    ``test_guard``: a callable run whenever ``test()`` is asked for; a test raises from it to prove the test
    part is not read at some stage. ``calls`` records every part asked for, in order.
    """

    def __init__(self, index: int = 1, n_train: int = 16, n_val: int = 8, n_test: int = 8, seed: int = 0, test_guard=None):
        rng = np.random.default_rng(seed + index)
        self.fold = StandInFold(index=index, name=f"fold{index}")
        self.val_speakers = ["s3"]
        self.classes = list(CLASSES)
        self.input_shape = SHAPE
        self.mean = np.zeros(SHAPE, np.float32)
        self.std = np.ones(SHAPE, np.float32)
        self.test_guard = test_guard
        self.calls: list[str] = []
        self._parts = {}
        for part, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            y = (np.arange(n) % len(CLASSES)).astype(np.int32)
            x = rng.normal(size=(n, *SHAPE)).astype(np.float32)
            x[:, y, 0, 0] += 3.0  # a class-dependent bump, so a model can learn something
            x[np.arange(n), y, 0, 0] += 3.0
            self._parts[part] = (x, y)

    def _dataset(self, part, batch_size, shuffle=False):
        import tensorflow as tf

        x, y = self._parts[part]
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(y), seed=0)
        return ds.batch(batch_size)

    def train(self, batch_size, shuffle=True, augment=True, repeat=False):
        self.calls.append("train")
        ds = self._dataset("train", batch_size, shuffle)
        return ds.repeat() if repeat else ds

    def val(self, batch_size):
        self.calls.append("val")
        return self._dataset("val", batch_size)

    def test(self, batch_size):
        self.calls.append("test")
        if self.test_guard is not None:
            self.test_guard()
        return self._dataset("test", batch_size)

    def labels(self, part):
        return self._parts[part][1].copy()
