"""One path from a model and a split to its figures, used wherever a split is scored during training: the
search's validation callback, :func:`~emodarts_tf.evaluation.fitting.fit_fold` (validation each epoch,
the test fold once) and the baselines' tuning objective.

- :func:`inference_fn`: the model's logits in inference mode (``training=False``: BN moving statistics,
  no dropout), float32, one trace for every batch size; a dict output gives its ``"logits"`` entry.
- :func:`predict_split`: logits and integer labels of every example of a finite dataset of ``(x, y)``
  batches (a dict ``y`` gives its ``"logits"`` entry).
- :func:`split_metrics`: UA, WA, macro F1 and the confusion matrix from one confusion matrix over the
  whole split (:mod:`~emodarts_tf.evaluation.metrics`), and the mean cross-entropy as ``loss``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from emodarts_tf.evaluation.metrics import classification_metrics
from emodarts_tf.utils.numeric import cross_entropy


def logits_of(outputs):
    """The logits of a model's output: the tensor itself, or the ``"logits"`` entry of a dict."""
    if isinstance(outputs, dict):
        return outputs["logits"]
    return outputs


def inference_fn(model) -> Callable:
    """``x -> float32 logits`` of ``model`` in inference mode, traced once for every batch size."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def infer(x):
        return tf.cast(logits_of(model(x, training=False)), tf.float32)

    return infer


def predict_split(infer: Callable, dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (n, classes), labels (n,))`` of every example of ``dataset`` through ``infer``."""
    logits, labels = [], []
    for batch in dataset:
        x, y = batch[0], batch[1]
        if isinstance(y, dict):
            y = y["logits"]
        out = np.asarray(infer(x), dtype=np.float32)
        y = np.asarray(y).reshape(-1).astype(np.int64)
        if out.ndim != 2 or out.shape[0] != y.shape[0]:
            raise ValueError(f"model output: expected logits of shape ({y.shape[0]}, classes), received {out.shape}")
        logits.append(out)
        labels.append(y)
    if not logits:
        raise ValueError("dataset: no batches (the split is empty)")
    return np.concatenate(logits), np.concatenate(labels)


def split_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """``ua``, ``wa``, ``f1``, ``n``, ``confusion_matrix`` and ``loss`` (mean cross-entropy) of a split."""
    if logits.shape[-1] != num_classes:
        raise ValueError(f"logits: expected {num_classes} classes, received {logits.shape[-1]}")
    metrics = classification_metrics(labels, logits.argmax(axis=1), num_classes)
    metrics["loss"] = cross_entropy(logits, labels)
    return metrics


def evaluate_split(model, dataset, num_classes: int, infer: Callable | None = None) -> dict:
    """:func:`split_metrics` of ``model`` over ``dataset``; pass ``infer`` (:func:`inference_fn`) to reuse
    one trace across calls."""
    logits, labels = predict_split(infer or inference_fn(model), dataset)
    return split_metrics(logits, labels, num_classes)
