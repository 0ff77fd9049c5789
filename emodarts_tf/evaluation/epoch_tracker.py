"""The per-epoch bookkeeping of ``fit_fold``: a Keras callback that validates, keeps the best weights (or
the recipe's weight average), stops early, raises drop-path, writes the history and checkpoints after
every epoch."""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import time
from pathlib import Path

import keras
import numpy as np

from emodarts_tf.evaluation.fold_checkpoint import variables_arrays
from emodarts_tf.evaluation.recipe import averaged_weights, restored_afterwards
from emodarts_tf.evaluation.split import inference_fn, predict_split, split_metrics
from emodarts_tf.search_space.network import set_drop_path_rate
from emodarts_tf.utils.io import atomic_write_text, write_json

log = logging.getLogger("emodarts_tf.evaluation.fitting")  # the progress lines of fit_fold

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_ua", "val_wa", "val_f1", "swa_val_ua", "lr", "drop_path",
                  "seconds")


def _as_average(arrays) -> list[np.ndarray]:
    """Copies of ``arrays`` to average in: floating ones in float64, the others as they are."""
    return [np.array(a, dtype=np.float64) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.array(a) for a in arrays]


@contextlib.contextmanager
def swapped_weights(variables, arrays):
    """Inside the block ``variables`` hold ``arrays``; their own values are restored afterwards."""
    with restored_afterwards(variables) as held:
        for var, value in zip(held, arrays):
            var.assign(value)
        yield


def write_history(fold_dir: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_FIELDS})
    atomic_write_text(fold_dir / "history.csv", buf.getvalue())
    write_json(fold_dir / "history.json", history)


class EpochTracker(keras.callbacks.Callback):
    """Validation UA over the whole validation part, best weights, early stopping, checkpoint.

    With ``swa_start`` (1-based epoch) the kept weights are, from that epoch on, the running mean of the
    model's weights at the end of each epoch (``recipe.swa``): float variables averaged in float64,
    integer ones (random-generator states) at their last value. The mean is validated every epoch (the
    ``swa_val_ua`` column) and checkpointed as the kept weights, with the number of epochs in it
    (``state['swa_count']``); ``average`` is that mean when a run resumes.
    """

    def __init__(self, *, val_data, state, checkpoint, fold_dir, patience, drop_path, epochs, optimizer, label,
                 ramp_epochs=None, keep_last=False, swa_start=None, average=None):  # fmt: skip
        super().__init__()
        self.swa_start = swa_start
        self._average = None if average is None else _as_average(average)
        self.ramp_epochs = ramp_epochs or epochs
        self.keep_last = keep_last
        self.val_data = val_data
        self.state = state
        self.checkpoint = checkpoint
        self.fold_dir = fold_dir
        self.patience = patience
        self.drop_path = drop_path
        self.epochs = epochs
        self._optimizer = optimizer
        self.label = label
        self._infer = None
        self._t0 = 0.0
        self._rate = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        if self.drop_path > 0:
            self._rate = self.drop_path * epoch / self.ramp_epochs  # DARTS: linear from 0
            set_drop_path_rate(self.model, self._rate)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self._infer is None:
            self._infer = inference_fn(self.model)
        # With the recipe's EMA the averaged weights are the ones validated and kept as the best.
        with averaged_weights(self.model, self._optimizer):
            logits, labels = predict_split(self._infer, self.val_data)
            val = split_metrics(logits, labels, logits.shape[-1])
            averaging = self.swa_start is not None and epoch + 1 >= self.swa_start
            if averaging:
                kept, best_arrays = self._average_and_validate()
                improved = True
            else:
                kept = val
                improved = self.keep_last or self.state.get("best_ua") is None or val["ua"] > self.state["best_ua"]
                best_arrays = variables_arrays(self.model.weights) if improved else None
        val_loss = val["loss"]
        seconds = time.perf_counter() - self._t0
        state = self.state
        state["seconds"] = float(state.get("seconds", 0.0)) + seconds
        accuracy = logs.get("accuracy", logs.get("logits_accuracy"))
        try:
            lr = float(np.asarray(self._optimizer.learning_rate))
        except (TypeError, ValueError):
            lr = None
        row = {
            "epoch": epoch + 1,
            "loss": None if logs.get("loss") is None else float(logs["loss"]),
            "accuracy": None if accuracy is None else float(accuracy),
            "val_loss": val_loss,
            "val_ua": val["ua"],
            "val_wa": val["wa"],
            "val_f1": val["f1"],
            "swa_val_ua": kept["ua"] if averaging else None,
            "lr": lr,
            "drop_path": self._rate,
            "seconds": round(seconds, 3),
        }
        state["history"].append(row)
        if improved:
            state["best_ua"] = kept["ua"]
            state["best_epoch"] = epoch + 1
            state["best_val"] = {k: kept[k] for k in ("ua", "wa", "f1", "loss")}
            state["wait"] = 0
        else:
            state["wait"] = int(state.get("wait", 0)) + 1
        state["epoch"] = epoch + 1
        if self.patience and self.swa_start is None and state["wait"] >= self.patience and epoch + 1 < self.epochs:
            state["stopped_early"] = True
            self.model.stop_training = True
        self.checkpoint.save(state, self.model, self._optimizer, best_arrays)
        write_history(self.fold_dir, state["history"])
        log.info(
            "%s epoch %d/%d: loss %.4f acc %.3f | val loss %.4f UA %.3f WA %.3f | best UA %.3f @%d | lr %.5f | %.1fs%s",
            self.label,
            epoch + 1,
            self.epochs,
            row["loss"] if row["loss"] is not None else float("nan"),
            row["accuracy"] if row["accuracy"] is not None else float("nan"),
            val_loss,
            val["ua"],
            val["wa"],
            state["best_ua"],
            state["best_epoch"],
            lr if lr is not None else float("nan"),
            seconds,
            " (early stop)" if state.get("stopped_early") else "",
        )

    def _average_and_validate(self):
        """Add this epoch's weights to the running mean; return the mean's validation metrics and the mean
        itself (as the weights to keep: the checkpoint writes them before the next epoch changes them)."""
        current = variables_arrays(self.model.weights)
        count = int(self.state.get("swa_count", 0))
        if self._average is None or count == 0:
            self._average = _as_average(current)
        else:
            for i, value in enumerate(current):
                if self._average[i].dtype == np.float64:
                    self._average[i] += (value.astype(np.float64) - self._average[i]) / (count + 1)
                else:
                    self._average[i] = np.array(value)
        self.state["swa_count"] = count + 1
        with swapped_weights(self.model.weights, self._average):
            logits, labels = predict_split(self._infer, self.val_data)
            kept = split_metrics(logits, labels, logits.shape[-1])
        return kept, self._average
