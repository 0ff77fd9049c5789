"""Tune a baseline family per fold on validation speakers, retrain the best setting, test each fold once.

For every fold ``k`` of the corpus's speaker-independent protocol:

1. **Tuning** (Keras Tuner: random, Bayesian or Hyperband) in ``<out>/fold<k>/tuner/<family>/``: each trial
   trains on the training part of the fold minus its validation speakers and is scored by UA over the
   whole validation part (``val_ua``, :class:`~emodarts_tf.baselines.objective.ValidationUA`). The test
   fold is never read while tuning. After every trial the Keras session is cleared, the trial's traced
   graphs are released (:mod:`emodarts_tf.utils.memory`) and garbage is collected, so memory does not
   grow with the trial count. The tuner keeps its state in its directory
   (``overwrite=False``): after a kill, finished trials are not run again.
2. ``<out>/fold<k>/best_hp.json``: the best hyperparameters and their validation UA, model size and FLOPs.
3. **Retraining** of the best setting from scratch with the shared
   :func:`~emodarts_tf.evaluation.fitting.fit_fold` (early stopping on validation UA, checkpoints and
   resume, best-on-validation weights tested once): ``<out>/fold<k>/metrics.json`` and the model directory.

Then ``<out>/summary.json`` (kind ``baseline:<family>``, the same keys as ``cli/train.py``'s) and
``summary.md``. ``compute_s`` holds ``tuning`` (wall-clock seconds of the trials, summed over folds and
resumed runs) and ``train`` (retraining seconds); ``params`` and ``flops`` are the means over folds of the
retrained models (each fold may pick another setting; the per-fold figures are in ``extra``).

Distributed tuning (Keras Tuner's chief/worker mode, environment variables ``KERASTUNER_TUNER_ID``,
``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``): fold ``k``'s oracle listens on
``KERASTUNER_ORACLE_PORT + k - 1``. The chief serves the oracle of each fold in turn (it runs no trials),
then retrains every fold and writes the summary; a worker runs trials only and writes nothing else.
"""
from __future__ import annotations

import gc
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from emodarts_tf.baselines.hypermodels import (
    BaselineHyperModel,
    count_combinations,
    fixed_hyperparameters,
    make_hypermodel,
)
from emodarts_tf.baselines.names import FAMILIES, TUNERS
from emodarts_tf.baselines.objective import OBJECTIVE_NAME
from emodarts_tf.config import BaselineConfig, ExperimentConfig, save_config
from emodarts_tf.evaluation import recipe as recipes
from emodarts_tf.evaluation.complexity import model_complexity
from emodarts_tf.evaluation.fold_checkpoint import diff_keys
from emodarts_tf.evaluation.summary import served_networks, summarise, write_summary
from emodarts_tf.utils.io import read_json, write_json
from emodarts_tf.utils.memory import custom_gradient_names, release_trial

log = logging.getLogger(__name__)

BEST_HP_FILE = "best_hp.json"
TUNING_TIME_FILE = "tuning_time.json"
RUN_FILE = "baseline_run.json"
TUNER_DIR = "tuner"


# ------------------------------------------------------------------------------------ configuration
def check_baseline_config(config: BaselineConfig) -> None:
    """Clear errors for values the runner cannot use."""
    if config.family not in FAMILIES:
        raise ValueError(f"baseline.family: expected one of {FAMILIES}, received {config.family!r}")
    if config.tuner not in TUNERS:
        raise ValueError(f"baseline.tuner: expected one of {TUNERS}, received {config.tuner!r}")
    for name in ("trials", "epochs", "batch_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"baseline.{name}: expected an integer >= 1, received {value!r}")
    for name in ("tuning_epochs", "tuning_patience", "patience"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or value < 0 or (name == "tuning_epochs" and value < 1)):
            raise ValueError(f"baseline.{name}: expected a positive integer or null, received {value!r}")
    if config.hyperband_factor < 2:
        raise ValueError(f"baseline.hyperband_factor: expected >= 2, received {config.hyperband_factor!r}")


def tuning_epochs(config: BaselineConfig) -> int:
    return int(config.tuning_epochs or config.epochs)


# ------------------------------------------------------------------------------------- distribution
def distributed_role() -> str:
    """``single`` without Keras Tuner's distribution variables, else ``chief`` or ``worker``."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"distributed tuning: KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} is not")
    try:
        int(os.environ["KERASTUNER_ORACLE_PORT"])
    except ValueError:
        raise ValueError(f"KERASTUNER_ORACLE_PORT: expected a port number, received {os.environ['KERASTUNER_ORACLE_PORT']!r}") from None
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


@contextmanager
def _fold_oracle_port(fold_index: int):
    """In distributed mode, fold k's oracle uses port KERASTUNER_ORACLE_PORT + k - 1 (restored afterwards)."""
    if distributed_role() == "single":
        yield None
        return
    base = os.environ["KERASTUNER_ORACLE_PORT"]
    port = int(base) + int(fold_index) - 1
    os.environ["KERASTUNER_ORACLE_PORT"] = str(port)
    try:
        yield port
    finally:
        os.environ["KERASTUNER_ORACLE_PORT"] = base


# --------------------------------------------------------------------------------------------- tuner
class _TuningClock:
    """Wall-clock seconds spent tuning one fold, accumulated in a file across killed and resumed runs."""

    def __init__(self, path: Path | None):
        self.path = path
        self.total = float(read_json(path).get("seconds", 0.0)) if path is not None and path.is_file() else 0.0
        self._last = time.perf_counter()

    def mark(self) -> float:
        now = time.perf_counter()
        self.total += now - self._last
        self._last = now
        if self.path is not None:
            write_json(self.path, {"seconds": round(self.total, 3)})
        return self.total


def _tuner_classes():
    import keras_tuner as kt

    class _CleanTrials:
        """Mixin: releases each trial's session, traced graphs and garbage when it ends; logs progress.

        Keyword arguments besides the tuner's: ``clock`` (a :class:`_TuningClock` marked after every
        trial, or None) and ``label`` (the prefix of the progress lines)."""

        def __init__(self, *args, clock: _TuningClock | None = None, label: str = "", **kwargs):
            super().__init__(*args, **kwargs)
            self.clock = clock
            self.label = label
            self.trials_run = 0
            self._before: frozenset | None = None

        def on_trial_begin(self, trial):
            self._before = custom_gradient_names()
            super().on_trial_begin(trial)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            release_trial(self._before)
            if self.clock is not None:
                self.clock.mark()
            self.trials_run += 1
            # Only what a distributed worker's OracleClient also offers: get_trial, get_best_trials, max_trials.
            score = self.oracle.get_trial(trial.trial_id).score
            best = self.oracle.get_best_trials(1)
            best_score = best[0].score if best else None
            log.info(
                "%s: trial %s (%d run here, at most %s in all) %s, val UA %s (best %s)",
                self.label,
                trial.trial_id,
                self.trials_run,
                getattr(self.oracle, "max_trials", None) or "?",
                str(trial.status).lower(),
                "n/a" if score is None else f"{score:.4f}",
                "n/a" if best_score is None else f"{best_score:.4f}",
            )

    class RandomSearch(_CleanTrials, kt.RandomSearch):
        pass

    class BayesianOptimization(_CleanTrials, kt.BayesianOptimization):
        pass

    class Hyperband(_CleanTrials, kt.Hyperband):
        pass

    return {"random": RandomSearch, "bayesian": BayesianOptimization, "hyperband": Hyperband}


def make_tuner(
    hypermodel: BaselineHyperModel,
    config: BaselineConfig,
    directory: str | Path,
    seed: int = 0,
    clock: _TuningClock | None = None,
    label: str = "",
):
    """A Keras Tuner of ``config.tuner`` kind maximising ``val_ua``, resuming from ``directory``.

    ``trials`` caps every kind; Hyperband's brackets run up to ``tuning_epochs`` epochs with
    ``hyperband_factor``.
    """
    import keras_tuner as kt

    check_baseline_config(config)
    objective = kt.Objective(OBJECTIVE_NAME, direction="max")
    common = dict(
        hypermodel=hypermodel,
        objective=objective,
        seed=seed,
        directory=str(directory),
        project_name=hypermodel.family,
        overwrite=False,
        max_consecutive_failed_trials=3,
        clock=clock,
        label=label or hypermodel.family,
    )
    cls = _tuner_classes()[config.tuner]
    if config.tuner == "hyperband":
        tuner = cls(max_epochs=tuning_epochs(config), factor=config.hyperband_factor, hyperband_iterations=1, **common)
        tuner.oracle.max_trials = config.trials
    else:
        tuner = cls(max_trials=config.trials, **common)
    return tuner


def _tuning_callbacks(config: BaselineConfig) -> list:
    import keras

    patience = config.tuning_patience if config.tuning_patience is not None else config.patience
    if not patience:
        return []
    return [keras.callbacks.EarlyStopping(monitor=OBJECTIVE_NAME, mode="max", patience=int(patience))]


def _clean_hp_values(values: dict) -> dict:
    """Hyperparameter values without Keras Tuner's bookkeeping entries (``tuner/epochs`` ...)."""
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def tune_fold(
    hypermodel: BaselineHyperModel,
    fold_data,
    fold_dir: str | Path,
    config: BaselineConfig,
    seed: int = 0,
    label: str | None = None,
) -> dict | None:
    """Run (or resume) the tuner of one fold on its training and validation parts; never on its test part.

    Returns the best setting ``{"values", "val_ua", "trial_id", "trials_completed", "tuning_s", ...}``, or
    None on a distributed worker (whose results go to the chief). Writes nothing in ``fold_dir`` but the
    tuner's directory and the tuning clock; the caller writes ``best_hp.json``.
    """
    import keras

    fold_dir = Path(fold_dir)
    role = distributed_role()
    fold_index = getattr(getattr(fold_data, "fold", None), "index", 1) or 1
    label = label or f"fold {fold_index}"
    batch = config.batch_size
    clock = _TuningClock(None if role == "worker" else fold_dir / TUNING_TIME_FILE)

    with _fold_oracle_port(fold_index) as port:
        if port is not None:
            log.info("%s: distributed tuning as %s, oracle at %s:%d", label, role, os.environ["KERASTUNER_ORACLE_IP"], port)
        keras.backend.clear_session()
        gc.collect()
        tuner = make_tuner(hypermodel, config, fold_dir / TUNER_DIR, seed=seed, clock=None if role == "chief" else clock, label=label)
        combos = count_combinations(hypermodel.space)
        if combos < config.trials:
            log.warning("%s: the %s space has only %d settings, fewer than --trials %d", label, hypermodel.family, combos, config.trials)
        train = recipes.train_dataset(fold_data, batch, hypermodel.recipe, augment=config.augment)
        val = fold_data.val(batch)
        try:
            tuner.search(
                train,
                validation_data=val,
                epochs=tuning_epochs(config),
                callbacks=_tuning_callbacks(config),
                verbose=0,
            )
        except RuntimeError as exc:  # Keras Tuner gives up after consecutive failed trials
            if "consecutive failures" not in str(exc):
                raise
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise ValueError(
                f"{label}: the {hypermodel.family} tuner stopped after consecutive failed trials; last error: "
                f"{lines[-1] if lines else exc} (tracebacks in the trial.json files under "
                f"{fold_dir / TUNER_DIR / hypermodel.family})"
            ) from None
    keras.backend.clear_session()
    gc.collect()
    clock.mark()
    if role == "worker":
        log.info("%s: worker %s finished its trials", label, os.environ.get("KERASTUNER_TUNER_ID"))
        return None

    trials = tuner.oracle.get_best_trials(num_trials=1)
    if not trials or trials[0].score is None:
        raise ValueError(
            f"{label}: no trial of the {hypermodel.family} tuner finished with a validation UA; see the trial "
            f"messages in {fold_dir / TUNER_DIR / hypermodel.family} (a failing setting, or too little data)"
        )
    best = trials[0]
    completed = sum(1 for t in tuner.oracle.trials.values() if str(t.status).upper().endswith("COMPLETED"))
    return {
        "values": {k: _jsonable(v) for k, v in _clean_hp_values(best.hyperparameters.values).items()},
        "val_ua": float(best.score),
        "trial_id": best.trial_id,
        "trials_completed": completed,
        "tuning_s": round(clock.total, 3),
    }


# ---------------------------------------------------------------------------------------- retraining
def retrain_fold(
    hypermodel: BaselineHyperModel,
    values: dict,
    fold_data,
    fold_dir: str | Path,
    config: ExperimentConfig,
    label: str | None = None,
    resume: bool = True,
) -> dict:
    """Train the setting ``values`` from scratch on the fold with the shared ``fit_fold``; test once.

    ``resume=False`` discards a previous retraining of this fold (checkpoint and metrics)."""
    from emodarts_tf.evaluation.fitting import fit_fold

    hp = fixed_hyperparameters(values)
    bl = config.baseline
    info = {
        "kind": f"baseline:{hypermodel.family}",
        "features": asdict(config.features),
        "normalize": config.data.normalize,
        "baseline": {"family": hypermodel.family, "tuner": bl.tuner, "hyperparameters": values},
    }
    # What defines this retraining (not the tuning budget, so a larger --trials that keeps the best setting
    # resumes an interrupted retraining).
    fingerprint = {
        "family": hypermodel.family,
        "hyperparameters": values,
        "training": {k: getattr(bl, k) for k in ("epochs", "batch_size", "patience", "augment", "jit_compile")},
        "recipe": recipes.recipe_fingerprint(config.recipe),
        "features": asdict(config.features),
        "seed": config.seed,
    }
    return fit_fold(
        lambda: hypermodel.network(hp),
        fold_data,
        fold_dir,
        epochs=bl.epochs,
        batch_size=bl.batch_size,
        optimizer=hypermodel.optimizer(hp),
        patience=bl.patience,
        resume=resume,
        augment=bl.augment,
        recipe=config.recipe,
        jit_compile=bl.jit_compile,
        extra_info=info,
        fingerprint=fingerprint,
        label=label,
    )


# ----------------------------------------------------------------------------------------------- run
def _check_run_dir(out_dir: Path, config: ExperimentConfig) -> None:
    """One output folder holds one baseline run: refuse another family, tuner or corpus in it."""
    manifest = {
        "family": config.baseline.family,
        "tuner": config.baseline.tuner,
        "corpus": config.data.corpus,
        "protocol": config.data.protocol,
        "classes": config.data.classes,
        "features": asdict(config.features),
        "space_file": config.baseline.space_file,
    }
    path = out_dir / RUN_FILE
    if path.is_file():
        saved = read_json(path)
        # Feature settings added since the run was saved (diff_keys knows their defaults) are not differences.
        differing = [k for k in manifest if (diff_keys({k: saved.get(k)}, {k: manifest[k]}) if k == "features"
                                             else saved.get(k) != manifest[k])]
        if differing:
            details = ", ".join(f"{k}: {saved.get(k)!r} there, {manifest[k]!r} now" for k in differing)
            raise ValueError(f"--out {out_dir}: holds another baseline run ({details}); use a new --out folder")
    else:
        write_json(path, manifest)


def _write_best(fold_dir: Path, best: dict, hypermodel: BaselineHyperModel, config: BaselineConfig) -> dict:
    import keras

    model = hypermodel.network(fixed_hyperparameters(best["values"]))
    best = {
        "family": hypermodel.family,
        "tuner": config.tuner,
        "trials": config.trials,
        **best,
        **model_complexity(model),
    }
    del model
    keras.backend.clear_session()
    write_json(fold_dir / BEST_HP_FILE, best)
    return best


def _retrained_values(fold_dir: Path) -> dict | None:
    """The hyperparameters the fold's saved model was retrained with (from its model_info.json)."""
    path = fold_dir / "model_info.json"
    if not path.is_file():
        return None
    return (read_json(path).get("baseline") or {}).get("hyperparameters")


def _default_fold_data_factory(config: ExperimentConfig, prepared) -> Callable[[int], object]:
    from emodarts_tf.data.pipeline import make_fold_data

    return lambda k: make_fold_data(prepared, k, config)


def run_baseline(
    config: ExperimentConfig,
    out_dir: str | Path,
    folds: Iterable[int] | None = None,
    prepared=None,
    fold_data_factory: Callable[[int], object] | None = None,
) -> dict | None:
    """Tune, retrain and test ``config.baseline.family`` on ``folds``; write ``<out>/summary.json``.

    Args:
        config: the experiment config (``baseline``, ``data``, ``features``, ``seed``).
        out_dir: the run folder; rerunning into it resumes (finished folds are kept, tuners resume).
        folds: fold indices (default: every fold of ``prepared``).
        prepared: a ``data.prepare.PreparedCorpus`` (default: ``prepare(config)``).
        fold_data_factory: ``k -> FoldData`` (default: ``data.pipeline.make_fold_data``).

    Returns:
        The summary dict, or None on a distributed worker.
    """
    from emodarts_tf.utils.seed import seed_everything

    bl = config.baseline
    check_baseline_config(bl)
    out_dir = Path(out_dir)
    role = distributed_role()
    if prepared is None and fold_data_factory is None:
        from emodarts_tf.data.prepare import prepare

        prepared = prepare(config)
    if fold_data_factory is None:
        fold_data_factory = _default_fold_data_factory(config, prepared)
    if folds is None:
        if prepared is None:
            raise ValueError("folds: required when no prepared corpus is given")
        folds = [f.index for f in prepared.folds]
    folds = [int(k) for k in folds]
    if not folds:
        raise ValueError("folds: no folds to run")

    if role != "worker":
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_run_dir(out_dir, config)
        save_config(config, out_dir / "config.yaml")
    log.info("baseline %s, %s tuner, %d trials, folds %s -> %s (%s)", bl.family, bl.tuner, bl.trials, folds, out_dir, role)

    def hypermodel_for(fold_data):
        return make_hypermodel(bl.family, tuple(int(s) for s in fold_data.input_shape), len(fold_data.classes),
                               space_file=bl.space_file, jit_compile=bl.jit_compile, recipe=config.recipe)

    def tune(k: int):
        """Tuning of fold k unless finished; returns (fold_data or None, best dict or None)."""
        fold_dir = out_dir / f"fold{k}"
        best_path = fold_dir / BEST_HP_FILE
        if role != "worker" and best_path.is_file():
            best = read_json(best_path)
            if best.get("family") == bl.family and best.get("tuner") == bl.tuner and int(best.get("trials", 0)) >= bl.trials:
                log.info("fold %d: tuning already finished (%s)", k, best_path)
                return None, best
        seed_everything(config.seed + k)
        fold_data = fold_data_factory(k)
        best = tune_fold(hypermodel_for(fold_data), fold_data, fold_dir, bl, seed=config.seed + k, label=f"fold {k}")
        if best is None:  # a worker
            return fold_data, None
        best = _write_best(fold_dir, best, hypermodel_for(fold_data), bl)
        log.info("fold %d: best setting %s, validation UA %.4f", k, best["values"], best["val_ua"])
        return fold_data, best

    def retrain(k: int, fold_data, best: dict) -> dict:
        from emodarts_tf.evaluation.fitting import METRICS_FILE, fold_finished

        fold_dir = out_dir / f"fold{k}"
        fresh = False
        if fold_finished(fold_dir):
            if _retrained_values(fold_dir) == best["values"]:
                log.info("fold %d: already retrained and tested (%s)", k, fold_dir / METRICS_FILE)
                return read_json(fold_dir / METRICS_FILE)
            log.info("fold %d: the tuned setting changed since the last retraining; retraining it", k)
            fresh = True
        if fold_data is None:
            fold_data = fold_data_factory(k)
        seed_everything(config.seed + k)
        before = custom_gradient_names()
        metrics = retrain_fold(hypermodel_for(fold_data), best["values"], fold_data, fold_dir, config,
                               label=f"fold {k}", resume=not fresh)
        release_trial(before)  # the fold's model is saved; free its traced graphs before the next fold
        return metrics

    per_fold, bests = {}, {}
    if role == "worker":
        for k in folds:
            tune(k)
        log.info("worker %s: every fold tuned; the chief retrains and writes the summary", os.environ.get("KERASTUNER_TUNER_ID"))
        return None
    if role == "chief":  # serve every fold's oracle first, so that workers never wait on a retraining
        tuned = {k: tune(k) for k in folds}
        for k in folds:
            bests[k] = tuned[k][1]
            per_fold[k] = retrain(k, tuned[k][0], bests[k])
    else:
        for k in folds:
            fold_data, bests[k] = tune(k)
            per_fold[k] = retrain(k, fold_data, bests[k])

    summary = summarise_run(out_dir, config, per_fold, bests, prepared=prepared)
    log.info(
        "baseline %s: UA %.4f ± %.4f, WA %.4f ± %.4f over folds %s",
        bl.family, summary["ua"]["mean"], summary["ua"]["std"], summary["wa"]["mean"], summary["wa"]["std"], folds,
    )
    return summary


def _finished_on_disk(out_dir: Path, bl: BaselineConfig, prepared=None) -> dict:
    """``{k: (metrics, best)}`` of the folds of ``out_dir`` retrained and tested (``metrics.json``) with a
    ``best_hp.json`` of this family and tuner: those another process (another host's ``--folds``) finished
    count in the summary too."""
    if prepared is not None:
        indices = [int(f.index) for f in prepared.folds]
    else:
        indices = sorted(int(p.name[4:]) for p in Path(out_dir).glob("fold*") if p.name[4:].isdigit() and p.is_dir())
    found = {}
    for k in indices:
        fold_dir = Path(out_dir) / f"fold{k}"
        if not ((fold_dir / "metrics.json").is_file() and (fold_dir / BEST_HP_FILE).is_file()):
            continue
        try:
            metrics, best = read_json(fold_dir / "metrics.json"), read_json(fold_dir / BEST_HP_FILE)
        except ValueError as exc:
            log.warning("fold %d: %s; left out of the summary", k, exc)
            continue
        if best.get("family") == bl.family and best.get("tuner") == bl.tuner:
            found[k] = (metrics, best)
    return found


def summarise_run(out_dir: Path, config: ExperimentConfig, per_fold: dict, bests: dict, prepared=None) -> dict:
    """``<out>/summary.json`` and ``summary.md`` from the folds' metrics and best settings: those of
    ``per_fold`` / ``bests`` (this run's) and of every other fold of ``out_dir`` finished on disk (by another
    process or host), rebuilt under the run folder's index lock and checked again after the write
    (``utils.index_lock.rebuild_index``)."""
    from emodarts_tf.utils.index_lock import rebuild_index

    def merged() -> tuple[dict, dict]:
        all_folds, all_bests = {}, {}
        for k, (metrics, best) in _finished_on_disk(out_dir, config.baseline, prepared).items():
            all_folds[k], all_bests[k] = metrics, best
        all_folds.update({int(k): v for k, v in per_fold.items()})
        all_bests.update({int(k): v for k, v in bests.items()})
        return all_folds, all_bests

    def indexed() -> list:
        try:
            summary = read_json(Path(out_dir) / "summary.json")
        except ValueError:
            return []
        return sorted(int(k) for k in summary.get("folds", [])) if isinstance(summary, dict) else []

    return rebuild_index(out_dir, lambda: _summarise_folds(out_dir, config, *merged(), prepared=prepared),
                         lambda: sorted(merged()[0]), indexed, what="summary.json")


def _summarise_folds(out_dir: Path, config: ExperimentConfig, per_fold: dict, bests: dict, prepared=None) -> dict:
    bl = config.baseline
    corpus = getattr(prepared, "corpus", None) or config.data.corpus
    protocol = getattr(prepared, "protocol", None) or config.data.protocol
    synthetic = bool(getattr(prepared, "synthetic", False))
    folds = sorted(per_fold)
    classes = per_fold[folds[0]].get("classes") or []
    # of the served model: a recipe.ensemble pair runs the network twice
    params = [int(bests[k]["params"]) * served_networks(per_fold[k]) for k in folds]
    flops = [int(bests[k]["flops"]) * served_networks(per_fold[k]) for k in folds]
    tuning_s = sum(float(bests[k].get("tuning_s", 0.0)) for k in folds)
    train_s = sum(float(per_fold[k].get("seconds", 0.0)) for k in folds)
    summary = summarise(
        per_fold,
        kind=f"baseline:{bl.family}",
        classes=classes,
        params=int(round(float(np.mean(params)))),
        flops=int(round(float(np.mean(flops)))),
        compute_s={"tuning": round(tuning_s, 3), "train": round(train_s, 3)},
        extra={
            "family": bl.family,
            "tuner": bl.tuner,
            "trials": bl.trials,
            "epochs": bl.epochs,
            "tuning_epochs": tuning_epochs(bl),
            "space_file": bl.space_file,
            "corpus": corpus,
            "protocol": protocol,
            "synthetic": synthetic,
            "folds_of_protocol": [f.index for f in prepared.folds] if prepared is not None else folds,
            "per_fold": {
                str(k): {
                    "n": per_fold[k].get("n"),
                    "best_epoch": per_fold[k].get("best_epoch"),
                    "epochs_run": per_fold[k].get("epochs_run"),
                    "val_ua": (per_fold[k].get("val") or {}).get("ua"),
                    "test_speakers": per_fold[k].get("test_speakers"),
                    "val_speakers": per_fold[k].get("val_speakers"),
                    "seconds": per_fold[k].get("seconds"),
                    "tuning_seconds": bests[k].get("tuning_s"),
                }
                for k in folds
            },
            "params_per_fold": {str(k): p for k, p in zip(folds, params)},
            "flops_per_fold": {str(k): f for k, f in zip(folds, flops)},
            "val_ua_per_fold": {str(k): float(bests[k]["val_ua"]) for k in folds},
            "best_hp_per_fold": {str(k): bests[k]["values"] for k in folds},
        },
    )
    tag = " (SYNTHETIC demo corpus)" if synthetic else ""
    title = f"baseline {bl.family} on {corpus}{tag}, protocol {protocol}: {bl.tuner} tuner, {bl.trials} trials, {len(folds)} fold(s)"
    write_summary(out_dir, summary, title=title)
    return summary
