"""Train one model on one speaker-independent fold, pick it on validation UA, score the test fold once.

:func:`fit_fold` is generic: the emoDARTS retraining (``evaluation.trainer``) and the baselines'
retraining of their best tuned model both call it, so their folds are trained, stopped, checkpointed,
scored and reported the same way.

What it does, in order:

1. ``build_model()`` -> an uncompiled ``keras.Model`` whose output is logits, or a dict with ``logits``
   and auxiliary outputs ``aux_*`` trained on the same targets (``aux_logits``, an auxiliary head weighted by
   ``aux_weight`` in the loss; others weighted by ``output_weights``); only ``logits`` is scored and saved;
2. compiles it with sparse categorical cross-entropy on logits and the optimizer;
3. resumes from ``fold_dir/checkpoint/`` when a previous run was killed: weights, optimizer state (so
   the learning-rate schedule continues), history, best epoch and early-stopping counter;
4. trains epoch by epoch; after each epoch the whole validation part (speakers disjoint from the test
   fold) is predicted and UA, WA, F1 and loss are computed from one confusion matrix; the best epoch by
   validation UA keeps its weights; training stops after ``patience`` epochs without improvement;
   the checkpoint is written atomically at the end of every epoch (``evaluation.epoch_tracker``,
   ``evaluation.fold_checkpoint``);
5. restores the best-on-validation weights (with ``recipe.swa``: the average of the last epochs' weights),
   or with ``recipe.refit`` trains a fresh model on the training
   and validation speakers for the best epoch count (checkpointed and resumed the same way, in
   ``fold_dir/refit/``); with ``recipe.ensemble`` as well, the model kept is the mean of both models'
   probabilities (``evaluation.ensemble``); then predicts the test fold once;
6. writes the model directory (``model.keras``, ``model_info.json``, ``normalization.npz``), the
   learning curves (``history.csv``, ``history.json``, ``learning_curves.png``), the confusion matrix
   (``confusion_matrix.png``), the test predictions (``predictions.csv``, when the fold data lists its
   test paths; with ``recipe.refit`` also ``predictions_selection.csv``, those of the first training's kept
   model, whose test UA/WA/F1 ``metrics.json`` reports as ``refit.selection_test``; with ``recipe.ensemble``
   also ``predictions_refit.csv`` and ``refit.refit_test``, the refit alone) and, last,
   ``metrics.json``, whose presence marks the fold as finished.

A resumed run is not bit-identical to an uninterrupted one (the input pipeline's shuffle order restarts
from its seed), but it continues the same optimisation: same weights, momentum and learning rate.
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

import keras
import numpy as np

from emodarts_tf.evaluation.fold_checkpoint import (  # noqa: F401  (CheckpointMismatchError, diff_keys: public here)
    CHECKPOINT_DIR,
    CheckpointMismatchError,
    FoldCheckpoint,
    diff_keys,
    normalise_json,
)
from emodarts_tf.evaluation.epoch_tracker import EpochTracker, write_history
from emodarts_tf.evaluation.split import inference_fn, logits_of, predict_split, split_metrics
from emodarts_tf.evaluation.summary import served_networks
from emodarts_tf.search_space.network import set_drop_path_rate
from emodarts_tf.utils.io import atomic_write_text, read_json, write_json
from emodarts_tf.utils.numeric import softmax

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REFIT_DIR = "refit"  # the refit on every training speaker (recipe.refit): its history and checkpoint
# With recipe.refit: the test predictions of the first training's kept model (trained without the validation speakers)
SELECTION_PREDICTIONS_FILE = "predictions_selection.csv"
# With recipe.ensemble: the test predictions of the refit alone (predictions.csv holds the pair's)
REFIT_PREDICTIONS_FILE = "predictions_refit.csv"
REFIT_SEED_OFFSET = 104729  # the refit model's initialisation seed: the fold's seed plus this


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
        unknown = sorted(k for k in out if k != "logits" and not str(k).startswith("aux_"))
        if unknown:
            raise ValueError(f"model {model.name!r}: unexpected output(s) {unknown}; expected 'logits' and "
                             "optionally auxiliary outputs named 'aux_*'")
        return sorted(out)
    if isinstance(out, (list, tuple)):
        raise ValueError(f"model {model.name!r}: expected a logits output or a dict with 'logits', received {len(out)} outputs")
    return None


def _served(pair: bool) -> str:
    return "the first model and the refit averaged (recipe.ensemble)" if pair else "one model"


def _score_test(model, fold_data, batch_size: int, drop_path: float, predictions: Path) -> dict:
    """The metrics of ``model`` on the test fold (UA, WA, F1, ``n``, confusion matrix; no loss), drop-path off; its
    predictions are written to ``predictions`` when the fold data lists its test paths."""
    if drop_path > 0:
        set_drop_path_rate(model, 0.0)
    logits, labels = predict_split(inference_fn(model), fold_data.test(batch_size))
    metrics = split_metrics(logits, labels, len(fold_data.classes))
    metrics.pop("loss")  # the test fold reports UA/WA/F1 only
    test_paths = list(getattr(fold_data, "test_paths", []) or [])
    if len(test_paths) == len(labels):
        _write_predictions(predictions, test_paths, labels, logits, list(fold_data.classes))
    return metrics


def _write_predictions(path: Path, paths: list, labels: np.ndarray, logits: np.ndarray, classes: list) -> None:
    probs = softmax(logits)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes]])
    for p, y, row in zip(paths, labels, probs):
        writer.writerow([p, classes[int(y)], classes[int(row.argmax())], *[f"{v:.6f}" for v in row]])
    atomic_write_text(path, buf.getvalue())


# ------------------------------------------------------------------------------------------------ fit


def fold_finished(fold_dir: str | Path) -> bool:
    return (Path(fold_dir) / METRICS_FILE).is_file()


def _loss_weights(keys: list, aux_weight: float, output_weights: dict | None, model_name: str) -> dict:
    """The loss weight of each output: 1 for ``logits``, ``aux_weight`` for ``aux_logits``, ``output_weights``
    for the other auxiliary outputs (each must be given)."""
    weights = {"logits": 1.0, "aux_logits": float(aux_weight), **{k: float(v) for k, v in (output_weights or {}).items()}}
    missing = [k for k in keys if k not in weights]
    if missing:
        raise ValueError(f"model {model_name!r}: output(s) {missing} have no loss weight; pass them in output_weights "
                         f"(received {sorted(output_weights or {})})")
    return {k: weights[k] for k in keys}


def _fresh_optimizer(optimizer):
    """An unused optimizer like ``optimizer``: a factory is returned as it is, an optimizer instance is
    rebuilt from its config (its learning rate or schedule included)."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return type(optimizer).from_config(optimizer.get_config())
    return optimizer


def _train_phase(
    build_model: Callable,
    fold_data,
    fold_dir: Path,
    checkpoint: "FoldCheckpoint",
    *,
    epochs: int,
    ramp_epochs: int,
    keep_last: bool,
    batch_size: int,
    optimizer,
    patience: int | None,
    aux_weight: float,
    output_weights: dict | None,
    drop_path: float,
    augment: bool,
    recipe,
    jit_compile: bool,
    callbacks: Iterable,
    fingerprint: dict,
    label: str,
    strategy=None,
):
    """Build, compile and train one model on ``fold_data``'s train part for up to ``epochs`` epochs,
    validating every epoch, checkpointing into ``checkpoint`` and resuming from it. Returns ``(model,
    state)`` with the kept weights in the model: the best validation epoch's, or with ``keep_last`` the
    last epoch's. ``ramp_epochs``: the epochs over which drop-path rises linearly from 0."""
    from emodarts_tf.evaluation import recipe as recipes

    classes = list(fold_data.classes)
    train_labels = np.asarray(fold_data.labels("train"))
    steps_per_epoch = int(math.ceil(train_labels.size / batch_size))

    # Under a tf.distribute strategy (train.strategy) the model and its optimizer are made in its scope.
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
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
            weights = _loss_weights(keys, aux_weight, output_weights, model.name)
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
    if strategy is not None:
        from emodarts_tf.utils.cluster import check_global_batch, shard_by_data

        check_global_batch(batch_size, strategy, "train.batch_size")
        # Several workers: each builds the same global batches and keeps its slice of each.
        train_ds = shard_by_data(train_ds, strategy)
    val_ds = fold_data.val(batch_size)

    swa_start = recipes.swa_start_epoch(recipe, epochs)
    if swa_start is not None and patience:
        log.info("%s: recipe.swa averages epochs %d-%d; early stopping (patience %d) is off", label, swa_start, epochs,
                 patience)  # fmt: skip
    average = checkpoint.best_arrays(state) if state.get("swa_count") else None
    run_start = time.perf_counter()
    if state["epoch"] < epochs and not state.get("stopped_early"):
        if drop_path > 0 and set_drop_path_rate(model, 0.0) == 0:
            log.warning("%s: drop_path=%.3f but the model has no drop-path layers; ignored", label, drop_path)
            drop_path = 0.0
        tracker = EpochTracker(
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
            swa_start=swa_start,
            average=average,
        )
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
    output_weights: dict | None = None,
    drop_path: float = 0.0,
    augment: bool = False,
    recipe=None,
    jit_compile: bool = False,
    callbacks: Iterable = (),
    extra_info: dict | None = None,
    fingerprint: dict | None = None,
    label: str | None = None,
    strategy=None,
) -> dict:
    """Train, select on validation UA, test once, and write the fold directory. Returns the metrics dict.

    Args:
        build_model: ``() -> keras.Model``, uncompiled; input normalised MFCCs ``(batch, *input_shape)``,
            output logits ``(batch, classes)`` or a dict ``{"logits", "aux_*" ...}`` (auxiliary outputs, trained
            on the same targets and not scored).
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
        output_weights: ``{output name: loss weight}`` of the model's other auxiliary outputs (e.g. the stream
            heads of ``build_fixed_two_stream``); an auxiliary output without a weight is an error.
        drop_path: final drop-path probability, reached linearly from 0 over ``epochs`` (DARTS); set on
            the layers that support it (``search_space.network.set_drop_path_rate``).
        augment: SpecAugment masking of training batches (when ``data.spec_augment`` is enabled); the recipe's
            parts (``recipe``) apply either way.
        recipe: the shared training recipe (``config.RecipeConfig``: balanced batches, time shift, mixup,
            label smoothing, EMA, weight averaging, refit, ensemble, speed perturbation; ``evaluation.recipe``);
            None: every part off.
            With ``recipe.swa`` the model kept is the average of the last epochs' weights, not the best
            validation epoch's, and there is no early stopping.
        jit_compile: XLA for the training step.
        callbacks: extra Keras callbacks, run after the epoch tracker (so after the epoch's checkpoint).
        extra_info: merged into ``model_info.json`` (e.g. genotype, space and train config, kind).
        fingerprint: JSON-able description of what defines the model and its training (configs,
            genotype); a checkpoint written with another fingerprint is refused with the differing keys.
        label: prefix of the progress lines (default ``fold <k>``).
        strategy: a ``tf.distribute`` strategy to build and train the model(s) under (``train.strategy``);
            None: the default one. Under MultiWorkerMirroredStrategy the training batches are sharded by
            data (each worker trains on its slice of every global batch) and every worker validates and
            tests on the whole split itself.

    Returns:
        The metrics written to ``metrics.json``: ``ua``, ``wa``, ``f1``, ``n``, ``confusion_matrix``,
        ``classes``, ``fold``, ``val`` (metrics of the chosen epoch), ``best_epoch``, ``epochs_run``,
        ``stopped_early``, ``seconds`` (training time over all resumed runs), speakers, ``swa`` (the first
        averaged epoch and the number averaged; None without ``recipe.swa``).
    """
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
    checkpoint = FoldCheckpoint(fold_dir)
    fingerprint = normalise_json(fingerprint or {})

    if not resume:
        for name in (METRICS_FILE, CHECKPOINT_DIR):
            target = fold_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    elif fold_finished(fold_dir):
        log.info("%s: already finished (%s); skipped", label, fold_dir / METRICS_FILE)
        finished = read_json(fold_dir / METRICS_FILE)
        served_pair = served_networks(finished) == 2
        pair_now = recipes.serves_pair(recipe)
        if recipe is not None and pair_now != served_pair:
            log.warning("%s: finished earlier serving %s; its saved model and figures stay as they are (the recipe now "
                        "serves %s; use a new --out to retrain)", label, _served(served_pair), _served(pair_now))  # fmt: skip
        return finished
    fold_dir.mkdir(parents=True, exist_ok=True)

    classes = list(fold_data.classes)
    val_labels = np.asarray(fold_data.labels("val"))
    if np.asarray(fold_data.labels("train")).size == 0:
        raise ValueError(f"{label}: the training part is empty")
    if val_labels.size == 0:
        raise ValueError(f"{label}: the validation part is empty; early stopping needs validation speakers")
    recipe = recipe if recipe is not None else RecipeConfig()
    recipes.check_recipe(recipe)
    common = dict(batch_size=batch_size, aux_weight=aux_weight, output_weights=output_weights, drop_path=drop_path,
                  augment=augment, recipe=recipe, jit_compile=jit_compile, callbacks=callbacks,
                  strategy=strategy)  # fmt: skip
    model, state = _train_phase(build_model, fold_data, fold_dir, checkpoint, epochs=epochs, ramp_epochs=epochs,
                                keep_last=False, optimizer=optimizer, patience=patience, fingerprint=fingerprint,
                                label=label, **common)  # fmt: skip
    refit = None
    if recipe.refit:
        # The kept model of the first training (trained without the validation speakers) is scored on the test
        # fold too, and its predictions are kept beside the refit's, so that the two can be compared or averaged
        # afterwards (benchmarks/refit_ablation.py) without training the first model again.
        selection = _score_test(model, fold_data, batch_size, drop_path, fold_dir / SELECTION_PREDICTIONS_FILE)
        # The epoch count chosen on the validation speakers, now trained on every training speaker of the
        # fold from a fresh start; the learning-rate schedule and drop-path ramp follow the same epochs.
        refit_dir = fold_dir / REFIT_DIR
        refit_data = fold_data.with_validation_in_training()
        keras.utils.set_random_seed(int(getattr(fold_data, "seed", 0)) + REFIT_SEED_OFFSET)
        first = model if recipe.ensemble else None
        del model
        model, refit_state = _train_phase(
            build_model, refit_data, refit_dir, FoldCheckpoint(refit_dir), epochs=int(state["best_epoch"]),
            ramp_epochs=epochs, keep_last=True, optimizer=_fresh_optimizer(optimizer), patience=None,
            fingerprint={**fingerprint, "refit_epochs": int(state["best_epoch"])}, label=f"{label} refit (validation speakers trained on)", **common,
        )  # fmt: skip
        refit = {
            "epochs": int(state["best_epoch"]),
            "n_train": int(np.asarray(refit_data.labels("train")).size),
            "seconds": round(float(refit_state.get("seconds", 0.0)), 3),
            # the first training's kept model on the test fold (its predictions: predictions_selection.csv)
            "selection_test": {k: selection[k] for k in ("ua", "wa", "f1")},
            "ensemble": bool(recipe.ensemble),  # True: the model tested and saved averages both models
        }
        if recipe.ensemble:
            from emodarts_tf.evaluation.ensemble import ensemble_model

            # the refit alone is scored too, so that one run gives all three models' figures
            alone = _score_test(model, fold_data, batch_size, drop_path, fold_dir / REFIT_PREDICTIONS_FILE)
            refit["refit_test"] = {k: alone[k] for k in ("ua", "wa", "f1")}
            model = ensemble_model([first, model], name=f"{model.name}_ensemble")

    metrics = _score_test(model, fold_data, batch_size, drop_path, fold_dir / "predictions.csv")
    best_row = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), {})
    test_speakers = list(getattr(fold, "test_speakers", []) or [])
    val_speakers = list(getattr(fold_data, "val_speakers", []) or [])
    swa_first = recipes.swa_start_epoch(recipe, epochs)
    train_speakers = sorted(set(getattr(fold, "train_speakers", []) or []) - set(val_speakers))
    metrics.update(
        {
            "classes": classes,
            "fold": fold_index,
            "val": {  # the kept model's: the selected epoch's, or the weight average's (recipe.swa)
                **state.get("best_val", {"ua": best_row.get("val_ua"), "wa": best_row.get("val_wa"),
                                         "f1": best_row.get("val_f1"), "loss": best_row.get("val_loss")}),
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
            "swa": None if swa_first is None else {"first_epoch": swa_first, "epochs_averaged": int(state.get("swa_count", 0))},
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
    if getattr(fold_data, "two_stream", False):
        info["input_shapes"] = {name: [int(s) for s in shape] for name, shape in fold_data.model_input_shape.items()}
        info["image_name"] = fold_data.image_name
    save_model_dir(fold_dir, model, info, fold_data.mean, fold_data.std, getattr(fold_data, "frames_mean", None),
                   getattr(fold_data, "frames_std", None))
    title = f"{label}: UA {metrics['ua']:.3f}, WA {metrics['wa']:.3f} (test speakers {', '.join(map(str, test_speakers))})"
    plot_confusion_matrix(metrics["confusion_matrix"], classes, fold_dir / "confusion_matrix.png", title=title)
    plot_learning_curves(state["history"], fold_dir / "learning_curves.png", title=label, best_epoch=state["best_epoch"])
    write_history(fold_dir, state["history"])
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
        (f"the mean of the first model and the refit on train + validation speakers for {refit['epochs']} epochs"
         if refit and refit["ensemble"]
         else f"the refit on train + validation speakers for {refit['epochs']} epochs" if refit
         else f"the weight average of epochs {swa_first}-{state['best_epoch']}" if swa_first is not None
         else "the weights of that epoch"),
        state["best_ua"],
        state["best_epoch"],
    )
    return metrics
