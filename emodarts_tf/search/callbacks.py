"""``fit()`` callbacks of the search: warm-up, drop-path schedule, non-finite guard, validation UA, alpha history, genotypes,
checkpoints, logs.

Order matters (they share the epoch's ``logs`` dict): ``NonFiniteGuard`` comes before every callback that
writes (it raises before a non-finite epoch reaches them), ``ValidationMetrics`` adds ``val_*`` to the
logs, ``EpochRecorder`` and ``GenotypeTracker`` read them, ``EpochLogger`` reads the recorder's entry, the
checkpoint comes after every file of the epoch is written, so that a run killed at any point resumes from a
consistent epoch.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from emodarts_tf.evaluation.split import evaluate_split, inference_fn
from emodarts_tf.search.checkpoint import describe_nonfinite, nonfinite_state
from emodarts_tf.search.diagnostics import NonFiniteError, alpha_entropy, alpha_movement, format_alpha_diagnostics
from emodarts_tf.search.pruning import prune_schedule
from emodarts_tf.search_space.network import set_search_drop_path_rate
from emodarts_tf.search_space.validation import check_int, check_rate
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


class SearchDropPath(keras.callbacks.Callback):
    """Raise the supernet's drop-path rate linearly over the search: ``rate * epoch / epochs`` at the start of
    epoch ``epoch`` (from 0), the schedule of DARTS's retraining (so the last epoch runs at
    ``rate * (epochs - 1) / epochs``)."""

    def __init__(self, rate: float, epochs: int):
        super().__init__()
        self.rate = check_rate(rate, "rate")
        self.epochs = check_int(epochs, "epochs")

    def on_epoch_begin(self, epoch, logs=None):
        set_search_drop_path_rate(self.model, self.rate * epoch / self.epochs)


class ProgressivePruning(keras.callbacks.Callback):
    """Prune every edge's candidates at the ends of the stages of :func:`~emodarts_tf.search.pruning.prune_schedule`
    (``SearchModel.prune``; ``none`` first at the last pruning). The masks are model variables: the epoch's
    checkpoint holds them. A search resumed after ``initial_epoch`` epochs first applies again, in order, every
    pruning scheduled up to that epoch: a no-op for those its checkpoint already holds, and the catch-up for those
    that a resume with another ``search.epochs`` moved before it."""

    def __init__(self, keep, epochs: int, warmup_epochs: int, initial_epoch: int = 0):
        super().__init__()
        self.schedule = prune_schedule(keep, check_int(epochs, "epochs"), check_int(warmup_epochs, "warmup_epochs",
                                                                                   minimum=0))
        self.last = max(self.schedule) if self.schedule else None
        self.initial_epoch = check_int(initial_epoch, "initial_epoch", minimum=0)

    def _prune(self, e: int) -> None:
        left = self.model.prune(self.schedule[e], drop_none=e == self.last)
        log.info("epoch %d: pruned to at most %d candidates per edge%s (%s)", e, self.schedule[e],
                 ", none dropped" if e == self.last else "", ", ".join(f"{k} {n}" for k, n in left.items()))

    def on_train_begin(self, logs=None):
        for e in sorted(self.schedule):
            if e <= self.initial_epoch:
                self._prune(e)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.schedule:
            self._prune(epoch + 1)


def nonfinite_architecture(model) -> list:
    """The cell kinds whose alphas are not all finite, then ``beta_<kind>`` for the betas of a model with edge
    normalisation."""
    arrays = list(model.alpha_arrays().items())
    arrays += [(f"beta_{k}", b) for k, b in getattr(model, "beta_arrays", dict)().items()]
    return [k for k, a in arrays if not np.isfinite(a).all()]


class NonFiniteGuard(keras.callbacks.Callback):
    """Stop the search at its first non-finite step, before anything of that epoch is written.

    Replaces ``keras.callbacks.TerminateOnNaN``, which only sets ``stop_training``: ``fit()`` then still
    ends the epoch, and every ``on_epoch_end`` (genotypes derived from NaN alphas, alpha history,
    checkpoint) would run on the broken state. This raises ``NonFiniteError`` instead, naming what went
    non-finite and where:

    - after every step: the logged loss and alpha loss (running means over the epoch: a non-finite step
      leaves them non-finite) and the alphas (a few hundred numbers);
    - at the end of every epoch: every variable of the model (alphas, weights, batch-norm statistics) and
      of both optimizers, which a weight update of the epoch's last step could have broken with a finite
      loss. Put it before the callbacks that write.

    On a finding, every variable is checked, so that the message says which parts are non-finite. The
    callbacks after it (and ``on_train_end``) do not run; ``run_search`` turns the error into one that names
    the fold and its last finite checkpoint.
    """

    LOSSES = (("loss", "loss"), ("alpha_loss", "alpha loss"))

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _where(self, step: int | None) -> str:
        epochs = self.params.get("epochs") if self.params else None
        steps = self.params.get("steps") if self.params else None
        of_epochs = f"/{epochs}" if epochs else ""
        if step is None:
            where = f"after epoch {self._epoch + 1}{of_epochs}"
            if steps:
                where += f" (global step {(self._epoch + 1) * steps})"
            return where
        where = f"at epoch {self._epoch + 1}{of_epochs}, step {step + 1}" + (f"/{steps}" if steps else "")
        if steps:
            where += f" (global step {self._epoch * steps + step + 1})"
        return where

    def _check(self, logs, step: int | None, full: bool) -> None:
        found = []
        for key, label in self.LOSSES:
            value = _float(logs.get(key)) if logs else None
            if value is not None and not math.isfinite(value):
                found.append(f"{label} {value}")
        bad_alphas = nonfinite_architecture(self.model)
        if not (found or bad_alphas or full):
            return
        report = nonfinite_state(self.model)
        if not found and not report:
            return
        found += [describe_nonfinite(report)] if report else []
        raise NonFiniteError(f"non-finite values {self._where(step)}: {'; '.join(found)}")

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, batch, full=False)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, None, full=True)


_INFER_ATTR = "_emodarts_validation_infer"


class ValidationMetrics(keras.callbacks.Callback):
    """UA, WA, macro F1 and loss over the whole validation set, from one confusion matrix.

    Adds ``val_loss``, ``val_ua``, ``val_wa`` and ``val_f1`` to the epoch's logs.
    """

    def __init__(self, dataset, num_classes: int):
        super().__init__()
        self.dataset = dataset
        self.num_classes = int(num_classes)
        self.last: dict | None = None
        self._infer = None
        self._infer_model = None

    def on_epoch_end(self, epoch, logs=None):
        if self._infer_model is not self.model:  # one trace per model, reused every epoch and by later folds
            infer = getattr(self.model, _INFER_ATTR, None)
            if infer is None:
                infer = inference_fn(self.model)
                object.__setattr__(self.model, _INFER_ATTR, infer)  # kept with the model, outside Keras' tracking
            self._infer, self._infer_model = infer, self.model
        m = evaluate_split(self.model, self.dataset, self.num_classes, infer=self._infer)
        self.last = m
        if logs is not None:
            logs.update({"val_loss": m["loss"], "val_ua": m["ua"], "val_wa": m["wa"], "val_f1": m["f1"]})


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _number(value):
    value = _float(value)
    return value if value is not None and math.isfinite(value) else None


class EpochRecorder(keras.callbacks.Callback):
    """Append each epoch's softmaxed alphas, their entropy and movement, metrics and duration to
    ``alpha_history.json`` (atomically), and the alpha figures to TensorBoard.

    Each entry: ``{"epoch": e (1-based), "alpha_active": bool, "seconds": s, "metrics": {...},
    "entropy": {kind: {"mean": nats, "normalized": mean / log(num_ops)}}, "moved": {kind: max |w - w0|},
    "weights": {"normal": [[...]], "reduce": ..., "seq": ...}}``: ``entropy`` is ``diagnostics.alpha_entropy``
    of the softmaxed alphas (normalised 1.0 = the uniform random start, 0.0 = one op per edge), ``moved`` the
    largest change of a softmaxed weight since the search's start (``SearchModel.initial_alpha_weights``,
    also right after a resume). A pruned search (``search.prune``) adds ``"kept": {kind: [[0/1, ...]]}``, the keep
    masks: ``weights`` are the mixing weights (0 for pruned candidates), each edge's entropy is normalised over
    its kept candidates, and ``moved`` includes the weight the pruned candidates lost. A search with edge
    normalisation (``search.edge_norm``) adds ``"edges": {kind: [...]}``, each edge's weight in its node (the mixture
    scales the edge's ``weights`` row by it; ``entropy`` and ``moved`` are those of the op weights), and
    ``"edges_moved": {kind: max |e - e0|}`` since the search's start. On resume, entries after the restored epoch (written by the killed run after
    its last checkpoint) are dropped.

    With ``tensorboard_dir``, the scalars ``alpha_entropy/<kind>`` (normalised), ``alpha_entropy_nats/<kind>``
    and ``alpha_moved/<kind>`` (with edge normalisation also ``edge_moved/<kind>``) go to
    ``<tensorboard_dir>/alphas`` (step: the 0-based epoch, as the epoch
    scalars of ``keras.callbacks.TensorBoard`` in ``train/`` and ``validation/``), flushed every epoch.
    """

    def __init__(self, path: str | Path, resume_epoch: int = 0, tensorboard_dir: str | Path | None = None):
        super().__init__()
        self.path = Path(path)
        self.entries: list = []
        if resume_epoch > 0 and self.path.is_file():
            old = read_json(self.path)
            self.entries = [e for e in old if int(e.get("epoch", 0)) <= resume_epoch]
        self.tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir is not None else None
        self._writer = None
        self._start = None
        self._initial = None
        self._initial_edges = None

    def on_train_begin(self, logs=None):
        self._initial = self.model.initial_alpha_weights()
        self._initial_edges = self.model.initial_edge_weights() if getattr(self.model, "edge_norm", False) else None
        if self.tensorboard_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.tensorboard_dir / "alphas"))

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - (self._start or time.perf_counter())
        current = self.model.alpha_weights()
        if self._initial is None:
            self._initial = self.model.initial_alpha_weights()
        kept = self.model.alpha_masks() if getattr(self.model, "prunable", False) else None
        edges = self.model.edge_weights() if getattr(self.model, "edge_norm", False) else None
        if edges is not None and self._initial_edges is None:
            self._initial_edges = self.model.initial_edge_weights()
        start = self._initial_edges
        edges_moved = {k: float(np.abs(v - start[k]).max()) for k, v in edges.items()} if edges is not None else None
        entropy = alpha_entropy(current, kept=kept)
        moved = alpha_movement(current, self._initial)
        weights = {k: np.round(v, 6).tolist() for k, v in current.items()}
        metrics = {k: _number(v) for k, v in (logs or {}).items() if _number(v) is not None}
        self.entries = [e for e in self.entries if int(e["epoch"]) != epoch + 1]
        self.entries.append(
            {
                "epoch": epoch + 1,
                "alpha_active": bool(float(self.model.alpha_active.numpy()) > 0.5),
                "seconds": round(seconds, 3),
                "metrics": metrics,
                "entropy": {k: {"mean": round(v["mean"], 6), "normalized": round(v["normalized"], 6)}
                            for k, v in entropy.items()},
                "moved": {k: round(v, 6) for k, v in moved.items()},
                "weights": weights,
                **({"kept": {k: v.astype(int).tolist() for k, v in kept.items()}} if kept is not None else {}),
                **({"edges": {k: np.round(v, 6).tolist() for k, v in edges.items()},
                    "edges_moved": {k: round(v, 6) for k, v in edges_moved.items()}} if edges is not None else {}),
            }
        )  # fmt: skip
        write_json(self.path, self.entries)
        if self._writer is not None:
            with self._writer.as_default():
                for kind, value in entropy.items():
                    tf.summary.scalar(f"alpha_entropy/{kind}", value["normalized"], step=epoch)
                    tf.summary.scalar(f"alpha_entropy_nats/{kind}", value["mean"], step=epoch)
                    tf.summary.scalar(f"alpha_moved/{kind}", moved[kind], step=epoch)
                for kind, value in (edges_moved or {}).items():
                    tf.summary.scalar(f"edge_moved/{kind}", value, step=epoch)
            self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (``on_train_end``; ``run_search`` also calls it after an error)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def on_train_end(self, logs=None):
        self.close()

    @property
    def last(self) -> dict | None:
        return self.entries[-1] if self.entries else None


class GenotypeTracker(keras.callbacks.Callback):
    """Derive the genotype every epoch; keep the final one and the best one by validation UA.

    Writes ``genotypes/epoch_<e>.json`` and ``genotype.json`` (the latest) every epoch, and
    ``genotype_best.json`` when the validation UA improves. Epochs of the warm-up (alphas still at their
    random start) compete only when the whole search is warm-up. With ``last_pruning`` (a pruned search) only the
    epochs from the last pruning on compete: those whose mixture holds the candidates the genotype chooses from.
    The best UA and its epoch live in the checkpointed ``SearchState`` so that a resumed run keeps them.
    """

    def __init__(self, out_dir: str | Path, state, max_skip, meta: dict, warmup_epochs: int = 0, epochs: int = 0,
                 last_pruning: int | None = None):
        super().__init__()
        self.out_dir = Path(out_dir)
        self.state = state
        self.max_skip = max_skip
        self.meta = dict(meta)
        self.warmup_epochs = int(warmup_epochs)
        self.epochs = int(epochs)
        self.last_pruning = None if last_pruning is None else int(last_pruning)

    def _derive(self, e: int, meta: dict):
        """The epoch's genotype, validated; NonFiniteError (nothing written) when the alphas (or betas) are not
        finite."""
        bad = nonfinite_architecture(self.model)
        if bad:
            raise NonFiniteError(f"epoch {e}: non-finite alphas ({', '.join(bad)}); no genotype derived or written")
        genotype = self.model.genotype(self.max_skip, meta=meta)
        genotype.validate(f"the genotype derived at epoch {e}")
        return genotype

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        e = epoch + 1
        val = {k: _number(logs.get(f"val_{k}")) for k in ("ua", "wa", "f1")}
        meta = {**self.meta, "epoch": e, "val_ua": val["ua"], "val_wa": val["wa"], "val_f1": val["f1"]}
        genotype = self._derive(e, {**meta, "selected": "final"})
        genotype.save(self.out_dir / "genotypes" / f"epoch_{e:03d}.json")
        genotype.save(self.out_dir / "genotype.json")
        eligible = e > self.warmup_epochs or self.warmup_epochs >= self.epochs
        if self.last_pruning is not None:
            eligible = e >= self.last_pruning
        if eligible:
            ua = val["ua"]
            first = int(self.state.best_epoch.numpy()) == 0
            # Without a validation set the latest eligible epoch counts as the best.
            if first or ua is None or ua > float(self.state.best_ua.numpy()):
                best = self._derive(e, {**meta, "selected": "best"})
                best.save(self.out_dir / "genotype_best.json")
                self.state.best_ua.assign(ua if ua is not None else -1.0)
                self.state.best_epoch.assign(e)
        log.info("epoch %d genotype: %s", e, format_genotype(genotype))


def format_genotype(genotype) -> str:
    """One log line of a genotype's cells (those it has: a single-stream two-stream genotype lacks some)."""
    parts = []
    for kind in genotype.cell_kinds:
        nodes = ["+".join(f"{op}<{i}" for op, i in node) for node in genotype.cell(kind)]
        parts.append(f"{kind}[{' | '.join(nodes)}]")
    return " ".join(parts)


class SaveState(keras.callbacks.Callback):
    """Checkpoint the search state at the end of every epoch (after the epoch's files are written).

    ``SearchState.save`` refuses a non-finite state (``NonFiniteError``), so the latest checkpoint is always
    the last finite one."""

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        self.state.save(epoch + 1)


class EpochLogger(keras.callbacks.Callback):
    """One INFO line per epoch: losses, accuracies, validation UA/WA, learning rate, duration, and with a
    ``recorder`` (an ``EpochRecorder`` earlier in the callback list) the alphas' normalised entropy per cell
    kind (1.0000 = still the uniform start) and their largest move since the start (and the edge weights' largest
    move, with edge normalisation)."""

    def __init__(self, epochs: int, prefix: str = "", recorder: EpochRecorder | None = None):
        super().__init__()
        self.epochs = epochs
        self.prefix = prefix
        self.recorder = recorder
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}

        def fmt(key, digits=4):
            value = _number(logs.get(key))
            return "n/a" if value is None else f"{value:.{digits}f}"

        entry = self.recorder.last if self.recorder is not None else None
        alphas = ""
        if entry is not None and int(entry.get("epoch", 0)) == epoch + 1:
            alphas = format_alpha_diagnostics(entry.get("entropy"), entry.get("moved"), entry.get("edges_moved"))
        log.info(
            "%sepoch %d/%d: loss %s acc %s | alpha loss %s | val loss %s UA %s WA %s | lr %s | %.1f s%s",
            self.prefix, epoch + 1, self.epochs, fmt("loss"), fmt("accuracy"), fmt("alpha_loss"),
            fmt("val_loss"), fmt("val_ua"), fmt("val_wa"), fmt("lr", 5), time.perf_counter() - (self._start or 0),
            f" | {alphas}" if alphas else "",
        )  # fmt: skip
