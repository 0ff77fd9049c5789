"""The tuning objective: UA (mean per-class recall) over the whole validation set, once per epoch.

Keras metrics average per batch or accumulate per class only approximately; UA must come from one
confusion matrix over every validation example. ``ValidationUA`` predicts the validation set at the end of
each epoch (:func:`emodarts_tf.evaluation.split.evaluate_split`, the path every validation takes) and writes ``val_ua``, ``val_wa``, ``val_f1`` and ``val_loss`` into the epoch logs, where Keras
Tuner (``keras_tuner.Objective("val_ua", "max")``), ``EarlyStopping`` and ``History`` read them. It must
come before them in the callback list (``BaselineHyperModel.fit`` puts it first).
"""
from __future__ import annotations

import keras

from emodarts_tf.evaluation.split import evaluate_split, inference_fn

OBJECTIVE_NAME = "val_ua"


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
        self._infer = None
        self._infer_model = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        from emodarts_tf.evaluation.recipe import averaged_weights

        optimizer = getattr(self.model, "optimizer", None)  # None for an uncompiled model
        if self._infer_model is not self.model:  # one trace per trial's model, reused every epoch
            self._infer, self._infer_model = inference_fn(self.model), self.model
        with averaged_weights(self.model, optimizer):  # the recipe's EMA weights, when kept
            metrics = evaluate_split(self.model, self.validation_data, self.num_classes, infer=self._infer)
        for key in ("ua", "wa", "f1", "loss"):
            logs[f"val_{key}"] = metrics[key]
