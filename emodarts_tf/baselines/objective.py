"""The tuning objective: UA (mean per-class recall) over the whole validation set, once per epoch.

Keras metrics average per batch or accumulate per class only approximately; UA must come from one
confusion matrix over every validation example. ``ValidationUA`` predicts the validation set at the end of
each epoch and writes ``val_ua``, ``val_wa``, ``val_f1`` and ``val_loss`` into the epoch logs, where Keras
Tuner (``keras_tuner.Objective("val_ua", "max")``), ``EarlyStopping`` and ``History`` read them. It must
come before them in the callback list (``BaselineHyperModel.fit`` puts it first).
"""
from __future__ import annotations

import keras
import numpy as np

from emodarts_tf.evaluation.metrics import classification_metrics

OBJECTIVE_NAME = "val_ua"


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def evaluate_logits(model, dataset, num_classes: int) -> dict:
    """UA, WA, macro F1 and mean cross-entropy of ``model`` over every (x, y) batch of ``dataset``."""
    labels, predictions, losses = [], [], []
    for x, y in dataset:
        logits = np.asarray(model.predict_on_batch(x), dtype=np.float64)
        y = np.asarray(y).astype(np.int64).ravel()
        if logits.ndim != 2 or logits.shape[0] != y.shape[0]:
            raise ValueError(f"model output: expected logits of shape ({y.shape[0]}, {num_classes}), received {logits.shape}")
        losses.append(-_log_softmax(logits)[np.arange(y.shape[0]), y])
        labels.append(y)
        predictions.append(logits.argmax(axis=1))
    if not labels:
        raise ValueError("validation data: no batches; the validation part of the fold is empty")
    metrics = classification_metrics(np.concatenate(labels), np.concatenate(predictions), num_classes)
    metrics["loss"] = float(np.concatenate(losses).mean())
    return metrics


class ValidationUA(keras.callbacks.Callback):
    """Writes ``val_ua``, ``val_wa``, ``val_f1`` and ``val_loss`` over the whole validation set into the epoch logs.

    Args:
        validation_data: a finite, unshuffled ``tf.data.Dataset`` (or any iterable) of (x, y) batches.
        num_classes: the number of classes of the labels.
    """

    def __init__(self, validation_data, num_classes: int):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"ValidationUA: num_classes expected >= 2, received {num_classes}")
        self.validation_data = validation_data
        self.num_classes = int(num_classes)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        from emodarts_tf.evaluation.recipe import averaged_weights

        optimizer = getattr(self.model, "optimizer", None)  # None for an uncompiled model
        with averaged_weights(self.model, optimizer):  # the recipe's EMA weights, when kept
            metrics = evaluate_logits(self.model, self.validation_data, self.num_classes)
        for key in ("ua", "wa", "f1", "loss"):
            logs[f"val_{key}"] = metrics[key]
