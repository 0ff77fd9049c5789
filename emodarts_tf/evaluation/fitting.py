"""Train one model on one speaker-independent fold, pick it on validation UA, score the test fold once.

:func:`fit_fold` is generic: the emoDARTS retraining (``evaluation.trainer``) and the baselines'
retraining of their best tuned model both call it, so their folds are trained, stopped, checkpointed,
scored and reported the same way.

What it does, in order:

1. ``build_model()`` -> an uncompiled ``keras.Model`` whose output is logits, or a dict with ``logits``
   (and ``aux_logits`` for an auxiliary head, weighted by ``aux_weight`` in the loss);
2. compiles it with sparse categorical cross-entropy on logits and the optimizer;
3. resumes from ``fold_dir/checkpoint/`` when a previous run was killed: weights, optimizer state (so
   the learning-rate schedule continues), history, best epoch and early-stopping counter;
4. trains epoch by epoch; after each epoch the whole validation part (speakers disjoint from the test
   fold) is predicted and UA, WA, F1 and loss are computed from one confusion matrix; the best epoch by
   validation UA keeps its weights; training stops after ``patience`` epochs without improvement;
   the checkpoint is written atomically at the end of every epoch;
5. restores the best-on-validation weights and predicts the test fold once;
6. writes the model directory (``model.keras``, ``model_info.json``, ``normalization.npz``), the
   learning curves (``history.csv``, ``history.json``, ``learning_curves.png``), the confusion matrix
   (``confusion_matrix.png``), the test predictions (``predictions.csv``, when the fold data lists its
   test paths) and, last, ``metrics.json``, whose presence marks the fold as finished.

A resumed run is not bit-identical to an uninterrupted one (the input pipeline's shuffle order restarts
from its seed), but it continues the same optimisation: same weights, momentum and learning rate.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from emodarts_tf.utils.numeric import softmax
from emodarts_tf.evaluation.split import inference_fn, logits_of, predict_split, split_metrics
from emodarts_tf.utils.io import atomic_write_bytes, atomic_write_text, read_json, write_json

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"
REFIT_DIR = "refit"  # the refit on every training speaker (recipe.refit): its history and checkpoint
REFIT_SEED_OFFSET = 104729  # the refit model's initialisation seed: the fold's seed plus this
HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_ua", "val_wa", "val_f1", "lr", "drop_path", "seconds")


class CheckpointMismatchError(ValueError):
    """A checkpoint that was written by a different model or configuration."""


# --------------------------------------------------------------------------------------------- helpers


def _output_keys(model) -> list | None:
    """Keys of a dict-output functional model; None for a single output."""
    try:
        out = model.output
    except (AttributeError, ValueError):
        return None
    if isinstance(out, dict):
        if "logits" not in out:
            raise ValueError(f"model {model.name!r}: dict output needs a 'logits' entry, received keys {sorted(out)}")
        unknown = sorted(set(out) - {"logits", "aux_logits"})
        if unknown:
            raise ValueError(f"model {model.name!r}: unexpected output(s) {unknown}; expected 'logits' and optionally 'aux_logits'")
        return sorted(out)
    if isinstance(out, (list, tuple)):
        raise ValueError(f"model {model.name!r}: expected a logits output or a dict with 'logits', received {len(out)} outputs")
    return None


def set_drop_path(model, rate: float) -> int:
    """Set the drop-path probability of every layer that has one; returns how many were set.

    A layer takes part by holding a ``keras.Variable`` attribute ``drop_path_variable`` (the fixed
    emoDARTS cells, ``search_space.cnn_cell.FixedCNNCell``) or ``drop_path_rate``: a variable, so that
    the traced training step sees the new value.
    """
    import keras

    count = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for attr in ("drop_path_variable", "drop_path_rate"):
            var = getattr(layer, attr, None)
            if isinstance(var, keras.Variable):
                var.assign(float(rate))
                count += 1
                break
    return count


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def diff_keys(a, b, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like trees."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{prefix}{key}")
            else:
                out.extend(diff_keys(a[key], b[key], f"{prefix}{key}."))
        return out
    return [] if a == b else [prefix.rstrip(".") or "(value)"]


def _normalise_json(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _variables_arrays(variables) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in variables]


def _describe(v) -> str:
    return getattr(v, "path", None) or getattr(v, "name", "?")


def _assign_checked(variables, arrays: list, what: str, source: Path) -> None:
    """Assign saved arrays to variables, in order, after checking their number and shapes."""
    variables = list(variables)
    if len(variables) != len(arrays):
        raise CheckpointMismatchError(
            f"{source}: the checkpoint holds {len(arrays)} {what} variables, the model built from the current "
            f"config and genotype has {len(variables)}; they describe different networks. Rerun with the "
            "config and genotype that wrote the checkpoint, or train into a new --out directory."
        )
    for var, arr in zip(variables, arrays):
        if tuple(var.shape) != tuple(arr.shape):
            raise CheckpointMismatchError(
                f"{source}: {what} variable {_describe(var)!r} has shape {tuple(arr.shape)} in the checkpoint "
                f"but {tuple(var.shape)} in the model built from the current config and genotype; rerun with "
                "the config that wrote the checkpoint, or train into a new --out directory."
            )
    for var, arr in zip(variables, arrays):
        var.assign(arr)


def _write_history(fold_dir: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_FIELDS})
    atomic_write_text(fold_dir / "history.csv", buf.getvalue())
    write_json(fold_dir / "history.json", history)


def _write_predictions(path: Path, paths: list, labels: np.ndarray, logits: np.ndarray, classes: list) -> None:
    probs = softmax(logits)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes]])
    for p, y, row in zip(paths, labels, probs):
        writer.writerow([p, classes[int(y)], classes[int(row.argmax())], *[f"{v:.6f}" for v in row]])
    atomic_write_text(path, buf.getvalue())


# ------------------------------------------------------------------------------------------ checkpoint


class _FoldCheckpoint:
    """``fold_dir/checkpoint/``: ``state.json`` pointing at ``epoch-<e>.npz`` (model and optimizer
    variables after epoch e) and ``best.npz`` (model variables of the best epoch). Each file is written
    atomically and ``state.json`` last, so a kill at any point leaves a consistent checkpoint."""

    def __init__(self, fold_dir: Path):
        self.dir = fold_dir / CHECKPOINT_DIR
        self.state_path = self.dir / STATE_FILE

    def exists(self) -> bool:
        return self.state_path.is_file()

    def read_state(self) -> dict:
        return read_json(self.state_path)

    def save(self, state: dict, model, optimizer, best_arrays: list | None) -> None:
        """Write epoch ``state['epoch']``; ``best_arrays`` (the model weights to keep as the best epoch's,
        in ``model.weights`` order) when the epoch improved on validation, else None."""
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays = {f"m{i}": a for i, a in enumerate(_variables_arrays(model.weights))}
        arrays.update({f"o{i}": a for i, a in enumerate(_variables_arrays(optimizer.variables))})
        name = f"epoch-{state['epoch']:04d}.npz"
        atomic_write_bytes(self.dir / name, _npz_bytes(arrays))
        if best_arrays is not None:
            best_name = f"best-{state['epoch']:04d}.npz"
            best = {f"m{i}": a for i, a in enumerate(best_arrays)}
            atomic_write_bytes(self.dir / best_name, _npz_bytes(best))
            state["best_file"] = best_name
        state["file"] = name
        write_json(self.state_path, state)
        keep = {name, state.get("best_file")}
        for old in self.dir.glob("*.npz"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def _load_npz(self, name: str) -> dict:
        path = self.dir / name
        if not path.is_file():
            raise ValueError(f"{self.dir}: checkpoint file {name} is missing; delete {self.dir} to restart this fold")
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}

    def restore(self, state: dict, model, optimizer) -> None:
        arrays = self._load_npz(state["file"])
        m = [arrays[f"m{i}"] for i in range(sum(1 for k in arrays if k.startswith("m")))]
        o = [arrays[f"o{i}"] for i in range(sum(1 for k in arrays if k.startswith("o")))]
        _assign_checked(model.weights, m, "model", self.dir / state["file"])
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        _assign_checked(optimizer.variables, o, "optimizer", self.dir / state["file"])

    def restore_best(self, state: dict, model) -> None:
        arrays = self._load_npz(state["best_file"])
        m = [arrays[f"m{i}"] for i in range(len(arrays))]
        _assign_checked(model.weights, m, "model", self.dir / state["best_file"])


# --------------------------------------------------------------------------------------------- callback


def _epoch_tracker_class():
    import keras

    class EpochTracker(keras.callbacks.Callback):
        """Validation UA over the whole validation part, best weights, early stopping, checkpoint."""

        def __init__(self, *, val_data, state, checkpoint, fold_dir, patience, drop_path, epochs, optimizer, label,
                     ramp_epochs=None, keep_last=False):  # fmt: skip
            super().__init__()
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
                set_drop_path(self.model, self._rate)

        def on_epoch_end(self, epoch, logs=None):
            from emodarts_tf.evaluation.recipe import averaged_weights

            logs = dict(logs or {})
            if self._infer is None:
                self._infer = inference_fn(self.model)
            # With the recipe's EMA the averaged weights are the ones validated and kept as the best.
            with averaged_weights(self.model, self._optimizer):
                logits, labels = predict_split(self._infer, self.val_data)
                val = split_metrics(logits, labels, logits.shape[-1])
                improved = self.keep_last or self.state.get("best_ua") is None or val["ua"] > self.state["best_ua"]
                best_arrays = _variables_arrays(self.model.weights) if improved else None
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
                "lr": lr,
                "drop_path": self._rate,
                "seconds": round(seconds, 3),
            }
            state["history"].append(row)
            if improved:
                state["best_ua"] = val["ua"]
                state["best_epoch"] = epoch + 1
                state["wait"] = 0
            else:
                state["wait"] = int(state.get("wait", 0)) + 1
            state["epoch"] = epoch + 1
            if self.patience and state["wait"] >= self.patience and epoch + 1 < self.epochs:
                state["stopped_early"] = True
                self.model.stop_training = True
            self.checkpoint.save(state, self.model, self._optimizer, best_arrays)
            _write_history(self.fold_dir, state["history"])
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

    return EpochTracker


# ------------------------------------------------------------------------------------------------ fit


def fold_finished(fold_dir: str | Path) -> bool:
    return (Path(fold_dir) / METRICS_FILE).is_file()


def _fresh_optimizer(optimizer):
    """An unused optimizer like ``optimizer``: a factory is returned as it is, an optimizer instance is
    rebuilt from its config (its learning rate or schedule included)."""
    import keras

    if isinstance(optimizer, keras.optimizers.Optimizer):
        return type(optimizer).from_config(optimizer.get_config())
    return optimizer


def _train_phase(
    build_model: Callable,
    fold_data,
    fold_dir: Path,
    checkpoint: "_FoldCheckpoint",
    *,
    epochs: int,
    ramp_epochs: int,
    keep_last: bool,
    batch_size: int,
    optimizer,
    patience: int | None,
    aux_weight: float,
    drop_path: float,
    augment: bool,
    recipe,
    jit_compile: bool,
    callbacks: Iterable,
    fingerprint: dict,
    label: str,
):
    """Build, compile and train one model on ``fold_data``'s train part for up to ``epochs`` epochs,
    validating every epoch, checkpointing into ``checkpoint`` and resuming from it. Returns ``(model,
    state)`` with the kept weights in the model: the best validation epoch's, or with ``keep_last`` the
    last epoch's. ``ramp_epochs``: the epochs over which drop-path rises linearly from 0."""
    import keras

    from emodarts_tf.evaluation import recipe as recipes

    classes = list(fold_data.classes)
    train_labels = np.asarray(fold_data.labels("train"))
    steps_per_epoch = int(math.ceil(train_labels.size / batch_size))

    model = build_model()
    keys = _output_keys(model)
    n_out = int(logits_of(model.output).shape[-1]) if keys is not None else int(model.outputs[0].shape[-1])
    if n_out != len(classes):
        raise ValueError(f"{label}: the model outputs {n_out} logits, the corpus has {len(classes)} classes {classes}")

    is_optimizer = isinstance(optimizer, keras.optimizers.Optimizer)
    opt = optimizer if is_optimizer else optimizer(steps_per_epoch)
    if not isinstance(opt, keras.optimizers.Optimizer):
        raise ValueError(f"optimizer: expected a keras Optimizer or a factory returning one, received {type(opt).__name__}")
    recipes.enable_ema(opt, recipe)

    if keys is None:
        model.compile(optimizer=opt, loss=recipes.training_loss(recipe), metrics=[recipes.training_accuracy()],
                      jit_compile=jit_compile)  # fmt: skip
    else:
        losses = {k: recipes.training_loss(recipe) for k in keys}
        weights = {k: (1.0 if k == "logits" else float(aux_weight)) for k in keys}
        model.compile(optimizer=opt, loss=losses, loss_weights=weights, metrics={"logits": [recipes.training_accuracy()]},
                      jit_compile=jit_compile)  # fmt: skip

    opt = model.optimizer  # compile may wrap it (loss scaling under mixed precision)
    state = {
        "epoch": 0,
        "epochs": epochs,
        "best_ua": None,
        "best_epoch": None,
        "wait": 0,
        "stopped_early": False,
        "seconds": 0.0,
        "history": [],
        "fingerprint": fingerprint,
    }
    if checkpoint.exists():
        saved = checkpoint.read_state()
        differing = diff_keys(saved.get("fingerprint", {}), fingerprint)
        if differing:
            raise CheckpointMismatchError(
                f"{checkpoint.dir}: this checkpoint was written with a different configuration; differing: "
                f"{', '.join(differing[:12])}{' ...' if len(differing) > 12 else ''}. Rerun with the original "
                f"config, or delete {fold_dir} (or pass a new --out) to start over."
            )
        checkpoint.restore(saved, model, opt)
        state.update(saved)
        state["epochs"] = epochs
        log.info(
            "%s: resuming after epoch %d/%d (best validation UA %.3f at epoch %s)",
            label,
            state["epoch"],
            epochs,
            state["best_ua"] if state["best_ua"] is not None else float("nan"),
            state["best_epoch"],
        )

    train_ds = recipes.train_dataset(fold_data, batch_size, recipe, augment=augment)
    if keys is not None:
        import tensorflow as tf

        train_ds = train_ds.map(lambda x, y: (x, {k: y for k in keys}), num_parallel_calls=tf.data.AUTOTUNE)
    val_ds = fold_data.val(batch_size)

    run_start = time.perf_counter()
    if state["epoch"] < epochs and not state.get("stopped_early"):
        tracker = _epoch_tracker_class()(
            val_data=val_ds,
            state=state,
            checkpoint=checkpoint,
            fold_dir=fold_dir,
            patience=patience,
            drop_path=float(drop_path),
            epochs=epochs,
            ramp_epochs=ramp_epochs,
            keep_last=keep_last,
            optimizer=opt,
            label=label,
        )
        if drop_path > 0 and set_drop_path(model, 0.0) == 0:
            log.warning("%s: drop_path=%.3f but the model has no drop-path layers; ignored", label, drop_path)
        model.fit(
            train_ds,
            epochs=epochs,
            initial_epoch=state["epoch"],
            callbacks=[tracker, *callbacks],
            shuffle=False,  # the dataset is shuffled (seeded) by the pipeline
            verbose=0,
        )
    log.debug("%s: fit took %.1fs in this run", label, time.perf_counter() - run_start)
    if not state.get("best_file"):
        raise ValueError(f"{label}: no epoch was trained, nothing to evaluate")
    checkpoint.restore_best(state, model)
    return model, state


def fit_fold(
    build_model: Callable,
    fold_data,
    fold_dir: str | Path,
    *,
    epochs: int,
    batch_size: int,
    optimizer,
    patience: int | None = 10,
    resume: bool = True,
    aux_weight: float = 0.0,
    drop_path: float = 0.0,
    augment: bool = False,
    recipe=None,
    jit_compile: bool = False,
    callbacks: Iterable = (),
    extra_info: dict | None = None,
    fingerprint: dict | None = None,
    label: str | None = None,
) -> dict:
    """Train, select on validation UA, test once, and write the fold directory. Returns the metrics dict.

    Args:
        build_model: ``() -> keras.Model``, uncompiled; input normalised MFCCs ``(batch, *input_shape)``,
            output logits ``(batch, classes)`` or a dict ``{"logits", "aux_logits"}``.
        fold_data: a ``data.pipeline.FoldData`` (``train(batch_size, shuffle, augment, repeat)``,
            ``val(batch_size)``, ``test(batch_size)``, ``labels(part)``, ``mean``, ``std``, ``classes``,
            ``input_shape``, ``fold``, ``val_speakers``).
        fold_dir: output directory of this fold (created).
        epochs: most epochs to train (early stopping may stop sooner).
        batch_size: training and evaluation batch size.
        optimizer: a ``keras.optimizers.Optimizer`` (not yet used), or a factory
            ``(steps_per_epoch: int) -> Optimizer`` (for schedules that need the step count).
        patience: epochs without a better validation UA before stopping; ``None`` or 0: never stop early
            (the best epoch is still the one restored).
        resume: continue from ``fold_dir/checkpoint`` if present and return at once if ``metrics.json``
            exists; ``False`` deletes both and starts over.
        aux_weight: loss weight of ``aux_logits`` when the model has that output.
        drop_path: final drop-path probability, reached linearly from 0 over ``epochs`` (DARTS); set on
            the layers that support it (see :func:`set_drop_path`).
        augment: SpecAugment masking of training batches (when ``data.spec_augment`` is enabled).
        recipe: the shared training recipe (``config.RecipeConfig``: balanced batches, time shift, mixup,
            label smoothing, EMA; ``evaluation.recipe``); None: every part off.
        jit_compile: XLA for the training step.
        callbacks: extra Keras callbacks, run after the epoch tracker (so after the epoch's checkpoint).
        extra_info: merged into ``model_info.json`` (e.g. genotype, space and train config, kind).
        fingerprint: JSON-able description of what defines the model and its training (configs,
            genotype); a checkpoint written with another fingerprint is refused with the differing keys.
        label: prefix of the progress lines (default ``fold <k>``).

    Returns:
        The metrics written to ``metrics.json``: ``ua``, ``wa``, ``f1``, ``n``, ``confusion_matrix``,
        ``classes``, ``fold``, ``val`` (metrics of the chosen epoch), ``best_epoch``, ``epochs_run``,
        ``stopped_early``, ``seconds`` (training time over all resumed runs), speakers.
    """
    import keras

    from emodarts_tf.config import RecipeConfig
    from emodarts_tf.evaluation import recipe as recipes
    from emodarts_tf.evaluation.model_dir import save_model_dir
    from emodarts_tf.evaluation.plots import plot_confusion_matrix, plot_learning_curves

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an integer >= 1, received {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, received {batch_size!r}")
    if patience is not None and patience < 0:
        raise ValueError(f"patience: expected >= 0 or None, received {patience!r}")
    fold_dir = Path(fold_dir)
    fold = getattr(fold_data, "fold", None)
    fold_index = getattr(fold, "index", None)
    label = label or (f"fold {fold_index}" if fold_index is not None else fold_dir.name)
    checkpoint = _FoldCheckpoint(fold_dir)
    fingerprint = _normalise_json(fingerprint or {})

    if not resume:
        for name in (METRICS_FILE, CHECKPOINT_DIR):
            target = fold_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    elif fold_finished(fold_dir):
        log.info("%s: already finished (%s); skipped", label, fold_dir / METRICS_FILE)
        return read_json(fold_dir / METRICS_FILE)
    fold_dir.mkdir(parents=True, exist_ok=True)

    classes = list(fold_data.classes)
    val_labels = np.asarray(fold_data.labels("val"))
    if fold_data.size("train") == 0:
        raise ValueError(f"{label}: the training part is empty")
    if val_labels.size == 0:
        raise ValueError(f"{label}: the validation part is empty; early stopping needs validation speakers")
    recipe = recipe if recipe is not None else RecipeConfig()
    recipes.check_recipe(recipe)
    common = dict(batch_size=batch_size, aux_weight=aux_weight, drop_path=drop_path, augment=augment, recipe=recipe,
                  jit_compile=jit_compile, callbacks=callbacks)  # fmt: skip
    model, state = _train_phase(build_model, fold_data, fold_dir, checkpoint, epochs=epochs, ramp_epochs=epochs,
                                keep_last=False, optimizer=optimizer, patience=patience, fingerprint=fingerprint,
                                label=label, **common)  # fmt: skip
    refit = None
    if recipe.refit:
        # The epoch count chosen on the validation speakers, now trained on every training speaker of the
        # fold from a fresh start; the learning-rate schedule and drop-path ramp follow the same epochs.
        refit_dir = fold_dir / REFIT_DIR
        refit_data = fold_data.with_validation_in_training()
        keras.utils.set_random_seed(int(getattr(fold_data, "seed", 0)) + REFIT_SEED_OFFSET)
        del model
        model, refit_state = _train_phase(
            build_model, refit_data, refit_dir, _FoldCheckpoint(refit_dir), epochs=int(state["best_epoch"]),
            ramp_epochs=epochs, keep_last=True, optimizer=_fresh_optimizer(optimizer), patience=None,
            fingerprint={**fingerprint, "refit_epochs": int(state["best_epoch"])}, label=f"{label} refit", **common,
        )  # fmt: skip
        refit = {
            "epochs": int(state["best_epoch"]),
            "n_train": int(refit_data.size("train")),
            "seconds": round(float(refit_state.get("seconds", 0.0)), 3),
        }

    if drop_path > 0:
        set_drop_path(model, 0.0)
    logits, labels = predict_split(inference_fn(model), fold_data.test(batch_size))
    metrics = split_metrics(logits, labels, len(classes))
    metrics.pop("loss")  # the test fold reports UA/WA/F1 only
    best_row = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), {})
    test_speakers = list(getattr(fold, "test_speakers", []) or [])
    val_speakers = list(getattr(fold_data, "val_speakers", []) or [])
    train_speakers = sorted(set(getattr(fold, "train_speakers", []) or []) - set(val_speakers))
    metrics.update(
        {
            "classes": classes,
            "fold": fold_index,
            "val": {
                "ua": best_row.get("val_ua"),
                "wa": best_row.get("val_wa"),
                "f1": best_row.get("val_f1"),
                "loss": best_row.get("val_loss"),
                "epoch": state["best_epoch"],
                "n": int(val_labels.size),
            },
            "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"],
            "epochs": epochs,
            "stopped_early": bool(state.get("stopped_early")),
            "seconds": round(float(state.get("seconds", 0.0)) + (refit["seconds"] if refit else 0.0), 3),
            "train_speakers": train_speakers,
            "val_speakers": val_speakers,
            "test_speakers": test_speakers,
            "refit": refit,
        }
    )

    info = {
        "kind": "model",
        "classes": classes,
        "input_shape": [int(s) for s in fold_data.input_shape],
        "fold": {
            "index": fold_index,
            "name": getattr(fold, "name", None),
            "train_speakers": train_speakers,
            "val_speakers": val_speakers,
            "test_speakers": test_speakers,
        },
        "best_epoch": state["best_epoch"],
        "val_ua": state["best_ua"],
        "refit": refit,  # None: the weights of the best validation epoch; else trained on train + val speakers
        **(extra_info or {}),
    }
    if "features" not in info:
        raise ValueError("extra_info: needs 'features' (the FeatureConfig as a dict) for the model directory")
    save_model_dir(fold_dir, model, info, fold_data.mean, fold_data.std)
    title = f"{label}: UA {metrics['ua']:.3f}, WA {metrics['wa']:.3f} (test speakers {', '.join(map(str, test_speakers))})"
    plot_confusion_matrix(metrics["confusion_matrix"], classes, fold_dir / "confusion_matrix.png", title=title)
    plot_learning_curves(state["history"], fold_dir / "learning_curves.png", title=label, best_epoch=state["best_epoch"])
    _write_history(fold_dir, state["history"])
    test_paths = list(getattr(fold_data, "test_paths", []) or [])
    if len(test_paths) == len(labels):
        _write_predictions(fold_dir / "predictions.csv", test_paths, labels, logits, classes)
    write_json(fold_dir / METRICS_FILE, metrics)
    shutil.rmtree(checkpoint.dir, ignore_errors=True)
    shutil.rmtree(fold_dir / REFIT_DIR / CHECKPOINT_DIR, ignore_errors=True)
    log.info(
        "%s: test UA %.4f WA %.4f F1 %.4f (n=%d) with %s (validation UA %.4f at epoch %d)",
        label,
        metrics["ua"],
        metrics["wa"],
        metrics["f1"],
        metrics["n"],
        f"the refit on train + validation speakers for {refit['epochs']} epochs" if refit else "the weights of that epoch",
        state["best_ua"],
        state["best_epoch"],
    )
    return metrics
