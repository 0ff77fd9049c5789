"""``fit()`` callbacks of the search: warm-up, validation UA, alpha history, genotypes, checkpoints, logs.

Order matters (they share the epoch's ``logs`` dict): ``ValidationMetrics`` adds ``val_*`` to the logs,
``EpochRecorder`` and ``GenotypeTracker`` read them, the checkpoint comes after every file of the epoch is
written, so that a run killed at any point resumes from a consistent epoch.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras
import numpy as np

from emodarts_tf.evaluation.metrics import classification_metrics
from emodarts_tf.utils.io import read_json, write_json

log = logging.getLogger(__name__)


class AlphaWarmup(keras.callbacks.Callback):
    """Keep the alphas frozen for the first ``warmup_epochs`` epochs (weights-only training).

    Sets the model's ``alpha_active`` flag at each epoch start; the train step branches on it inside the
    graph, so that during warm-up neither the alphas nor the alpha optimiser's state move.
    """

    def __init__(self, warmup_epochs: int):
        super().__init__()
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs: expected an integer >= 0, received {warmup_epochs!r}")
        self.warmup_epochs = warmup_epochs

    def on_epoch_begin(self, epoch, logs=None):
        active = epoch >= self.warmup_epochs
        self.model.set_alpha_updates(active)
        if not active:
            log.info("epoch %d: warm-up (alphas frozen, weights only)", epoch + 1)


class ValidationMetrics(keras.callbacks.Callback):
    """UA, WA, macro F1 and loss over the whole validation set, from one confusion matrix.

    Adds ``val_loss``, ``val_ua``, ``val_wa`` and ``val_f1`` to the epoch's logs.
    """

    def __init__(self, dataset, num_classes: int):
        super().__init__()
        self.dataset = dataset
        self.num_classes = int(num_classes)
        self.last: dict | None = None

    def on_epoch_end(self, epoch, logs=None):
        y_true, y_pred, loss = self.model.predict_labels(self.dataset)
        m = classification_metrics(y_true, y_pred, self.num_classes)
        self.last = m
        if logs is not None:
            logs.update({"val_loss": loss, "val_ua": m["ua"], "val_wa": m["wa"], "val_f1": m["f1"]})


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class EpochRecorder(keras.callbacks.Callback):
    """Append each epoch's softmaxed alphas, metrics and duration to ``alpha_history.json`` (atomically).

    Each entry: ``{"epoch": e (1-based), "alpha_active": bool, "seconds": s, "metrics": {...},
    "weights": {"normal": [[...]], "reduce": ..., "seq": ...}}``. On resume, entries after the restored
    epoch (written by the killed run after its last checkpoint) are dropped.
    """

    def __init__(self, path: str | Path, resume_epoch: int = 0):
        super().__init__()
        self.path = Path(path)
        self.entries: list = []
        if resume_epoch > 0 and self.path.is_file():
            old = read_json(self.path)
            self.entries = [e for e in old if int(e.get("epoch", 0)) <= resume_epoch]
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - (self._start or time.perf_counter())
        weights = {k: np.round(v, 6).tolist() for k, v in self.model.alpha_weights().items()}
        metrics = {k: _number(v) for k, v in (logs or {}).items() if _number(v) is not None}
        self.entries = [e for e in self.entries if int(e["epoch"]) != epoch + 1]
        self.entries.append(
            {
                "epoch": epoch + 1,
                "alpha_active": bool(float(self.model.alpha_active.numpy()) > 0.5),
                "seconds": round(seconds, 3),
                "metrics": metrics,
                "weights": weights,
            }
        )
        write_json(self.path, self.entries)


class GenotypeTracker(keras.callbacks.Callback):
    """Derive the genotype every epoch; keep the final one and the best one by validation UA.

    Writes ``genotypes/epoch_<e>.json`` and ``genotype.json`` (the latest) every epoch, and
    ``genotype_best.json`` when the validation UA improves. Epochs of the warm-up (alphas still at their
    random start) compete only when the whole search is warm-up. The best UA and its epoch live in the
    checkpointed ``SearchState`` so that a resumed run keeps them.
    """

    def __init__(self, out_dir: str | Path, state, max_skip, meta: dict, warmup_epochs: int = 0, epochs: int = 0):
        super().__init__()
        self.out_dir = Path(out_dir)
        self.state = state
        self.max_skip = max_skip
        self.meta = dict(meta)
        self.warmup_epochs = int(warmup_epochs)
        self.epochs = int(epochs)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        e = epoch + 1
        val = {k: _number(logs.get(f"val_{k}")) for k in ("ua", "wa", "f1")}
        meta = {**self.meta, "epoch": e, "val_ua": val["ua"], "val_wa": val["wa"], "val_f1": val["f1"]}
        genotype = self.model.genotype(self.max_skip, meta={**meta, "selected": "final"})
        genotype.save(self.out_dir / "genotypes" / f"epoch_{e:03d}.json")
        genotype.save(self.out_dir / "genotype.json")
        eligible = e > self.warmup_epochs or self.warmup_epochs >= self.epochs
        if eligible:
            ua = val["ua"]
            first = int(self.state.best_epoch.numpy()) == 0
            # Without a validation set the latest eligible epoch counts as the best.
            if first or ua is None or ua > float(self.state.best_ua.numpy()):
                best = self.model.genotype(self.max_skip, meta={**meta, "selected": "best"})
                best.save(self.out_dir / "genotype_best.json")
                self.state.best_ua.assign(ua if ua is not None else -1.0)
                self.state.best_epoch.assign(e)
        log.info("epoch %d genotype: %s", e, format_genotype(genotype))


def format_genotype(genotype) -> str:
    parts = []
    for kind in ("normal", "reduce", "seq"):
        nodes = ["+".join(f"{op}<{i}" for op, i in node) for node in genotype.cell(kind)]
        parts.append(f"{kind}[{' | '.join(nodes)}]")
    return " ".join(parts)


class SaveState(keras.callbacks.Callback):
    """Checkpoint the search state at the end of every epoch (after the epoch's files are written)."""

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        self.state.save(epoch + 1)


class EpochLogger(keras.callbacks.Callback):
    """One INFO line per epoch: losses, accuracies, validation UA/WA, learning rate, duration."""

    def __init__(self, epochs: int, prefix: str = ""):
        super().__init__()
        self.epochs = epochs
        self.prefix = prefix
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}

        def fmt(key, digits=4):
            value = _number(logs.get(key))
            return "n/a" if value is None else f"{value:.{digits}f}"

        log.info(
            "%sepoch %d/%d: loss %s acc %s | alpha loss %s | val loss %s UA %s WA %s | lr %s | %.1f s",
            self.prefix, epoch + 1, self.epochs, fmt("loss"), fmt("accuracy"), fmt("alpha_loss"),
            fmt("val_loss"), fmt("val_ua"), fmt("val_wa"), fmt("lr", 5), time.perf_counter() - (self._start or 0),
        )  # fmt: skip
