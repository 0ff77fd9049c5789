"""One search run per fold: data, model, ``fit()`` with callbacks, and the files a search leaves.

``run_search(config, out_dir, fold_index)`` searches on fold ``k``'s training part only (split into a
weights part and an alphas part; the validation speakers, also from the training part, pick the best
epoch; the test speakers are never read) and writes::

    <out_dir>/fold<k>/
        genotype.json          the genotype after the last epoch
        genotype_best.json     the genotype of the epoch with the best validation UA (after warm-up)
        genotypes/epoch_XXX.json   every epoch's genotype
        alpha_history.json     per epoch: softmaxed alphas, their entropy and movement, metrics, seconds
        search.json            config, fold, speakers (train/val seen, test held out), sizes, epochs,
                               times, peak memory, best and final validation UA/WA
        config.yaml            the config of the run (checked again on --resume)
        cells/{normal,reduce,seq}.png   diagrams of the selected genotype (search.select; the other
                                        one in cells/final/ or cells/best/)
        checkpoints/           tf.train.Checkpoint of model, alphas, both optimisers, epoch, best UA
        tensorboard/           TensorBoard logs (train/, validation/, and alphas/: alpha entropy and movement)

and updates ``<out_dir>/genotypes.json`` = ``{"<k>": genotype}`` (the selected genotype of every finished
fold searched into ``out_dir``, rebuilt from the fold folders under a lock that works across hosts:
``search.genotype_index``, so that several hosts may search different folds into one shared ``out_dir``).
``resume=True`` restores the latest checkpoint and continues; the data order
is a pure function of the seed and the step, so the result equals an uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import keras
import tensorflow as tf
import yaml

from emodarts_tf.config import ExperimentConfig, SearchConfig, config_from_dict, save_config
from emodarts_tf.search.callbacks import (
    AlphaWarmup,
    EpochLogger,
    EpochRecorder,
    GenotypeTracker,
    NonFiniteGuard,
    ProgressivePruning,
    SaveState,
    SearchDropPath,
    ValidationMetrics,
    format_genotype,
)
from emodarts_tf.search.checkpoint import SearchState
from emodarts_tf.search.diagnostics import NonFiniteError
from emodarts_tf.search.genotype_index import INDEX_FILE, PT_FILE, rebuild_genotype_index
from emodarts_tf.search.model import ORDERS, SearchModel, inner_optimizer
from emodarts_tf.search.perturbation_selection import select_by_perturbation
from emodarts_tf.search.plots import plot_genotype
from emodarts_tf.search.pruning import check_prune
from emodarts_tf.search.reuse import SearchCosineDecay, SupernetReuse, supernet_key
from emodarts_tf.search_space.genotype import Genotype
from emodarts_tf.search_space.network import check_partial_channels_space
from emodarts_tf.search_space.validation import check_rate
from emodarts_tf.utils.io import read_json, write_json
from emodarts_tf.utils.cluster import check_global_batch, shard_by_data
from emodarts_tf.utils.memory import custom_gradient_names, release_trial
from emodarts_tf.utils.runtime import (
    STRATEGIES, device_info, graph_optimization, peak_memory, precision_policy, resolve_strategy,
)
from emodarts_tf.utils.seed import seed_everything

log = logging.getLogger(__name__)

SELECTIONS = ("best", "final", "perturbation")
# The selected genotype file of each search.select.
SELECTED_FILES = {"best": "genotype_best.json", "final": "genotype.json", "perturbation": PT_FILE}
METHODS = ("emodarts", "emotionnas")
SEARCH_FORMAT = "emodarts-tf/search/v1"

# Config keys that may change between a run and its --resume (everything else must match).
# The recompute, eager_updates, arch_only_passes and graph_optimization options: same values
# (graph_optimization: up to rounding) and variables, memory and time only; so are the runtime's thread pools.
_RESUMABLE_KEYS = ("search.epochs", "data.root", "data.cache_dir", "data.workers", "search.checkpoints_to_keep",
                   "search.recompute_cnn", "search.recompute_seq", "search.eager_updates", "search.arch_only_passes",
                   "data.lock_timeout_s", "search.graph_optimization", "search.reuse_supernet",
                   # which genotype the finished search selects: a resume with another one selects it anew
                   "search.select", "search.pt_tune_steps")
_IGNORED_SECTIONS = ("train", "baseline", "recipe", "runtime")
_MISSING = object()  # a key only one side has (a field only one kind of feature map reads)


class SearchDivergedError(RuntimeError, ValueError):
    """A search whose loss, alphas or weights became non-finite; names the fold folder and its last finite
    checkpoint. Also a ValueError, so that the commands report it as one line (exit status 2) like a bad
    config, which it usually is (learning rates too high)."""


def check_search_config(s: SearchConfig) -> None:
    """Raise ValueError naming the first impossible search setting."""

    def positive_int(name, value, minimum=1):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"search.{name}: expected an integer >= {minimum}, received {value!r}")

    if s.method not in METHODS:
        raise ValueError(f"search.method: expected one of {METHODS}, received {s.method!r}")
    positive_int("epochs", s.epochs)
    positive_int("batch_size", s.batch_size)
    positive_int("warmup_epochs", s.warmup_epochs, 0)
    positive_int("checkpoints_to_keep", s.checkpoints_to_keep)
    if s.steps_per_epoch is not None:
        positive_int("steps_per_epoch", s.steps_per_epoch)
    if s.max_skip is not None:
        positive_int("max_skip", s.max_skip, 0)
    if s.order not in ORDERS:
        raise ValueError(f"search.order: expected one of {ORDERS}, received {s.order!r}")
    if s.strategy not in STRATEGIES:
        raise ValueError(f"search.strategy: expected one of {STRATEGIES}, received {s.strategy!r}")
    if s.select not in SELECTIONS:
        raise ValueError(f"search.select: expected one of {SELECTIONS}, received {s.select!r}")
    if s.pt_tune_steps is not None:
        positive_int("pt_tune_steps", s.pt_tune_steps, 0)
    check_rate(s.drop_path, "search.drop_path")
    if s.drop_path > 0 and s.order != "first":
        raise ValueError(
            f"search.drop_path: expected 0 with search.order {s.order!r} (the second-order hypergradient compares "
            f"two passes that would drop different paths), received {s.drop_path!r}"
        )
    check_prune(s.prune, s.epochs - s.warmup_epochs)
    if s.prune and s.select == "perturbation":
        raise ValueError(
            f"search.prune: expected [] with search.select perturbation (its projections would rank candidates the "
            f"pruning has taken out of the mixture), received {s.prune!r}"
        )
    positive_int("partial_channels", s.partial_channels)
    if s.partial_channels > 1 and s.select == "perturbation":
        raise ValueError(
            f"search.partial_channels: expected 1 with search.select perturbation (removing an op would also rescale "
            f"the channels that bypass the mixture, and an edge projected on `none` would still pass them), "
            f"received {s.partial_channels!r}"
        )
    if s.edge_norm and s.select == "perturbation":
        raise ValueError(
            f"search.edge_norm: expected false with search.select perturbation (its edge scores read the loss, not "
            f"the edge weights), received {s.edge_norm!r}"
        )
    if not s.w_lr > 0:
        raise ValueError(f"search.w_lr: expected > 0, received {s.w_lr!r}")
    if not 0 <= s.w_lr_min <= s.w_lr:
        raise ValueError(f"search.w_lr_min: expected 0 <= w_lr_min <= w_lr = {s.w_lr}, received {s.w_lr_min!r}")
    if not s.alpha_lr > 0:
        raise ValueError(f"search.alpha_lr: expected > 0, received {s.alpha_lr!r}")
    if s.alpha_budget is not None and not s.alpha_budget > 0:
        raise ValueError(f"search.alpha_budget: expected > 0 or null, received {s.alpha_budget!r}")
    for name in ("alpha_beta1", "alpha_beta2"):
        value = getattr(s, name)
        if not 0 <= value < 1:
            raise ValueError(f"search.{name}: expected a number in [0, 1), received {value!r}")
    if not 0 <= s.w_momentum < 1:
        raise ValueError(f"search.w_momentum: expected a number in [0, 1), received {s.w_momentum!r}")


def check_search_partial_channels(config: ExperimentConfig) -> None:
    """Raise ValueError naming ``search.partial_channels`` unless it suits the CNN cells that ``config`` searches: 1
    when there are none (EmotionNAS with ``space.fusion: frames``), else a K that every CNN cell's channels allow."""
    k = config.search.partial_channels
    if config.search.two_stream and config.space.fusion == "frames":
        if k != 1:
            raise ValueError(f"search.partial_channels: expected 1 without an image stream (space.fusion 'frames' "
                             f"searches no CNN cells), received {k!r}")
        return
    check_partial_channels_space(config.space, k, "search.partial_channels")


def _json_shape(shape):
    return {name: list(s) for name, s in shape.items()} if isinstance(shape, dict) else list(shape)


def build_search_model(config: ExperimentConfig, input_shape, num_classes: int, steps_per_epoch: int) -> SearchModel:
    """The search backbone of ``config.space`` wrapped in a compiled SearchModel (paper optimisers).

    Weights: SGD with momentum, the learning rate cosine-annealed per step from ``w_lr`` to ``w_lr_min``
    over ``epochs * steps_per_epoch`` steps. Alphas: Adam(alpha_lr, beta1, beta2), with ``alpha_lr`` from
    :func:`alpha_learning_rate`.
    """
    from emodarts_tf.search_space.network import SearchBackbone
    from emodarts_tf.search_space.two_stream import TwoStreamSearchBackbone

    s = config.search
    if isinstance(input_shape, dict):  # EmotionNAS: {image name: (H, W, 1), "frames": (T, D)}
        input_shape = {name: tuple(shape) for name, shape in input_shape.items()}
        backbone = TwoStreamSearchBackbone(config.space, input_shape, int(num_classes), recompute=s.recompute_cnn,
                                           seq_grouped=s.seq_grouped, recompute_seq=s.recompute_seq,
                                           drop_path=float(s.drop_path), seed=config.seed,
                                           partial_channels=s.partial_channels, name="backbone")
    else:
        input_shape = tuple(input_shape)
        backbone = SearchBackbone(config.space, input_shape, int(num_classes), recompute=s.recompute_cnn,
                                  seq_grouped=s.seq_grouped, recompute_seq=s.recompute_seq,
                                  drop_path=float(s.drop_path), seed=config.seed,
                                  partial_channels=s.partial_channels, name="backbone")
    model = SearchModel(backbone, input_shape=input_shape, alpha_init_scale=s.alpha_init_scale, seed=config.seed,
                        prunable=bool(s.prune), edge_norm=s.edge_norm)
    if s.prune:
        for kind, names in model.candidate_ops().items():
            if len(names) <= s.prune[-1] and "none" not in names:
                log.warning("search.prune %s: the %s cell's %d candidates %s are never pruned (at most %d are kept)",
                            list(s.prune), kind, len(names), list(names), s.prune[-1])
    total_steps = max(1, s.epochs * steps_per_epoch)
    if s.w_lr_min < s.w_lr:
        lr = SearchCosineDecay(s.w_lr, decay_steps=total_steps, alpha=s.w_lr_min / s.w_lr)
    else:
        lr = s.w_lr
    model.compile(
        keras.optimizers.SGD(lr, momentum=s.w_momentum, name="w_sgd"),
        keras.optimizers.Adam(alpha_learning_rate(s, steps_per_epoch), beta_1=s.alpha_beta1, beta_2=s.alpha_beta2,
                              name="a_adam"),  # fmt: skip
        order=s.order,
        w_weight_decay=s.w_weight_decay,
        a_weight_decay=s.alpha_weight_decay,
        grad_clip=s.grad_clip,
        jit_compile=s.jit_compile,
        eager_updates=resolve_eager_updates(s.eager_updates, model),
        arch_only_passes=s.arch_only_passes,
    )
    return model


def set_search_length(model: SearchModel, s: SearchConfig, steps_per_epoch: int) -> None:
    """Set what :func:`build_search_model` derived from the fold's steps per epoch on a kept supernet
    (:mod:`emodarts_tf.search.reuse`): the length of the weights' cosine schedule and the alpha learning rate."""
    schedule = inner_optimizer(model.w_optimizer)._learning_rate
    if isinstance(schedule, SearchCosineDecay):
        schedule.set_decay_steps(max(1, s.epochs * steps_per_epoch))
    inner_optimizer(model.a_optimizer).learning_rate = alpha_learning_rate(s, steps_per_epoch)


def alpha_learning_rate(s: SearchConfig, steps_per_epoch: int) -> float:
    """``search.alpha_lr``, or ``alpha_budget / alpha steps`` when ``search.alpha_budget`` is set (the alpha
    steps are the steps of the epochs after the warm-up)."""
    if s.alpha_budget is None:
        return float(s.alpha_lr)
    alpha_steps = max(1, (s.epochs - min(s.warmup_epochs, s.epochs)) * int(steps_per_epoch))
    lr = float(s.alpha_budget) / alpha_steps
    log.info("search.alpha_budget %.3g over %d alpha steps: alpha learning rate %.3g", s.alpha_budget, alpha_steps, lr)
    return lr


# search.eager_updates = None (auto) turns eager updates on from this many weights.
EAGER_UPDATES_MIN_WEIGHTS = 10_000_000


def resolve_eager_updates(setting, model: SearchModel) -> bool:
    """``search.eager_updates``, with None (auto) decided by the supernet's size: on from
    ``EAGER_UPDATES_MIN_WEIGHTS`` weights, where the step graph's memory dominates and the eager
    dispatch is a small share of a step (see ``SearchModel.compile``)."""
    if setting is not None:
        return bool(setting)
    weights = sum(math.prod(v.shape) for v in model.weight_variables)
    eager = weights >= EAGER_UPDATES_MIN_WEIGHTS
    log.info("search.eager_updates (auto): %s for %s weights", "on" if eager else "off", f"{weights:,}")
    return eager


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_differences(old: dict, new: dict) -> list:
    """Keys whose values differ between two config dicts, ignoring what a resume may change. A key that one
    of them lacks (a setting added since the search started) counts as its default. ``features`` is compared
    on the fields its kind of map reads, or on its ``kind`` alone when that differs
    (``data.features.comparable_features``)."""
    from emodarts_tf.config import ExperimentConfig
    from emodarts_tf.data.features import comparable_features

    defaults = {k: v for k, v in _flatten(asdict(ExperimentConfig())).items() if not k.startswith("features.")}
    features = comparable_features(old.get("features") or {}, new.get("features") or {})
    old, new = {**old, "features": features[0]}, {**new, "features": features[1]}
    a, b = ({**{k: v for k, v in defaults.items() if k not in d}, **d} for d in (_flatten(old), _flatten(new)))
    keys = sorted(set(a) | set(b))
    return [
        k for k in keys
        if k not in _RESUMABLE_KEYS and k.split(".")[0] not in _IGNORED_SECTIONS
        and a.get(k, _MISSING) != b.get(k, _MISSING)
    ]  # fmt: skip


def update_genotype_index(out_dir: str | Path, fold_index: int | None = None, genotype: Genotype | None = None) -> Path:
    """Rebuild ``<out_dir>/genotypes.json`` from the finished fold folders of ``out_dir``
    (``search.genotype_index``: under a lock file that works across hosts, written atomically, checked
    again after the write), so that searches of other folds finishing at the same time on other hosts keep
    their entries. ``fold_index`` and ``genotype`` (the fold this process just finished) are only checked
    against the result: the fold's ``search.json`` and genotype file are what the index is built from."""
    index = rebuild_genotype_index(out_dir)
    if fold_index is not None and str(int(fold_index)) not in index:
        log.warning("%s: fold %d is not finished on disk (no complete search.json), so it is not in %s",
                    out_dir, int(fold_index), INDEX_FILE)
    elif genotype is not None and fold_index is not None and index[str(int(fold_index))] != genotype.to_dict():
        log.warning("%s: the genotype of fold %d on disk differs from this search's (another search of the fold "
                    "finished meanwhile?); %s holds the one on disk", out_dir, int(fold_index), INDEX_FILE)
    return Path(out_dir) / INDEX_FILE


def _has_checkpoint(directory: Path) -> bool:
    return tf.train.latest_checkpoint(str(directory)) is not None


def _finished_or_refused(fold_dir: Path, config: ExperimentConfig, resume: bool) -> dict | None:
    """Refuse to overwrite a checkpointed search without ``resume`` or to resume one with another config;
    the finished search's result when a resumed search has nothing left to do, else None."""
    s = config.search
    ckpt_dir = fold_dir / "checkpoints"
    config_path = fold_dir / "config.yaml"
    if _has_checkpoint(ckpt_dir) and not resume:
        raise ValueError(
            f"{fold_dir}: already holds a search checkpoint; pass --resume (resume=True) to continue it, "
            "or choose another --out"
        )
    if resume and config_path.is_file():
        old = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        diff = config_differences(config_from_dict(old, str(config_path)).to_dict(), config.to_dict())
        if diff:
            raise ValueError(
                f"{fold_dir}: cannot resume: the config differs from the checkpointed run's in {diff} "
                f"(see {config_path}); only {list(_RESUMABLE_KEYS)} may change"
            )

    summary_path = fold_dir / "search.json"
    if resume and summary_path.is_file() and _has_checkpoint(ckpt_dir):
        done = read_json(summary_path)
        same_selection = (done.get("select", "best") == s.select and done.get("pt_tune_steps") == s.pt_tune_steps
                          if isinstance(done, dict) else False)
        if same_selection and int(done.get("epochs_done", 0)) >= s.epochs == int(done.get("epochs", -1)):
            selected_file = fold_dir / done.get("genotype_file", "genotype_best.json")
            log.info("%s: the search already finished (%d epochs); nothing to resume", fold_dir, s.epochs)
            return {**done, "genotype": Genotype.load(selected_file)}
    return None



def _search_split_record(mode: str, fold_data, prepared) -> dict:
    """How the training part was split between weights and alphas, with each side's speakers."""
    speaker = {r.path: str(r.speaker) for r in prepared.records}
    return {
        "mode": mode,
        "weights_speakers": sorted({speaker[p] for p in fold_data.weights_paths}),
        "alphas_speakers": sorted({speaker[p] for p in fold_data.alphas_paths}),
    }


def _fit_search(model, state, fold_data, fold_dir: Path, config: ExperimentConfig, meta: dict, recorder,
                steps: int, initial_epoch: int, verbose: int | None, callbacks: list | None) -> None:
    """Run the search's epochs from ``initial_epoch`` with its callbacks (warm-up, non-finite guard,
    validation, alpha history, genotypes, TensorBoard, checkpoint, log lines, then ``callbacks``)."""
    s = config.search
    batch = s.batch_size
    num_classes = len(fold_data.classes)
    has_val = fold_data.size("val") > 0
    fold = fold_data.fold
    weights_ds, alphas_ds = fold_data.search_split(batch)
    train = tf.data.Dataset.zip((weights_ds, alphas_ds))
    if initial_epoch:
        # The same batches an uninterrupted run would see from here on.
        train = train.skip(initial_epoch * steps)
    # Several workers: each builds the same global batches and keeps its slice of each.
    train = shard_by_data(train, model.distribute_strategy)
    # The guard comes before every callback that writes: a non-finite step or epoch raises before
    # its genotype, alpha history entry or checkpoint exists.
    search_callbacks = [AlphaWarmup(s.warmup_epochs), NonFiniteGuard()]
    if s.drop_path > 0:
        search_callbacks.insert(1, SearchDropPath(float(s.drop_path), s.epochs))
    pruning = ProgressivePruning(s.prune, s.epochs, s.warmup_epochs, initial_epoch) if s.prune else None
    if pruning is not None:
        # Before the epoch's validation, alpha history, genotype and checkpoint: all of them describe the mixture
        # the epoch ends with.
        search_callbacks.append(pruning)
    if has_val:
        search_callbacks.append(ValidationMetrics(fold_data.val(batch), num_classes))
    tensorboard = keras.callbacks.TensorBoard(str(fold_dir / "tensorboard"), write_graph=False,
                                              update_freq="epoch")  # fmt: skip
    search_callbacks += [
        recorder,
        GenotypeTracker(fold_dir, state, s.max_skip, meta, s.warmup_epochs, s.epochs,
                        pruning.last if pruning is not None else None),
        tensorboard,
        SaveState(state),
        EpochLogger(s.epochs, prefix=f"fold {fold.index} ", recorder=recorder),
        *(callbacks or []),
    ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 0
    try:
        history = model.fit(
            train, epochs=s.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
            callbacks=search_callbacks, verbose=verbose, shuffle=False,
        )  # fmt: skip
    except NonFiniteError as exc:
        # fit() skips on_train_end after an exception: close the event files here.
        recorder.close()
        tensorboard.on_train_end()
        done = int(state.epoch.numpy())
        last = (
            f"the latest checkpoint, {state.last_finite} (epoch {done}), is the last finite state: --resume "
            "continues from it (with the same settings and data it takes the same steps again)"
            if state.last_finite else "no epoch finished, so there is no checkpoint to resume"
        )
        raise SearchDivergedError(
            f"{fold_dir}: the search diverged: {exc}. Nothing of that epoch was written; {last}. "
            "Lower search.w_lr or search.alpha_lr (a new search: another --out), or check the features "
            "for NaN/inf"
        ) from exc
    if model.stop_training and history.epoch and history.epoch[-1] + 1 < s.epochs:
        raise RuntimeError(
            f"{fold_dir}: the search stopped early, after epoch {history.epoch[-1] + 1} of {s.epochs} "
            "(a callback set model.stop_training)"
        )


def _perturbation_genotype(model, fold_data, fold_dir: Path, config: ExperimentConfig, meta: dict,
                           steps: int) -> Genotype:
    """The DARTS-PT genotype of the searched supernet (:mod:`emodarts_tf.search.perturbation_selection`),
    measured on the alphas part and tuned on the search's data, written to ``genotype_pt.json`` with its record
    ``perturbation.json``."""
    s = config.search
    tune_steps = steps if s.pt_tune_steps is None else int(s.pt_tune_steps)
    weights_ds, alphas_ds = fold_data.search_split(s.batch_size)
    genotype, record = select_by_perturbation(
        model, fold_data.arrays("alphas"), tf.data.Dataset.zip((weights_ds, alphas_ds)), tune_steps,
        max_skip=s.max_skip, meta=meta, seed=config.seed + 7919 * int(fold_data.fold.index),
    )  # fmt: skip
    write_json(fold_dir / "perturbation.json", record)
    genotype.save(fold_dir / PT_FILE)
    return genotype


def run_search(
    config: ExperimentConfig,
    out_dir: str | Path,
    fold_index: int,
    resume: bool = False,
    prepared=None,
    verbose: int | None = None,
    callbacks: list | None = None,
    reuse: SupernetReuse | None = None,
) -> dict:
    """Search fold ``fold_index`` (1-based) of the corpus of ``config`` into ``<out_dir>/fold<k>/``.

    Args:
        config: the experiment config (``data``, ``features``, ``space``, ``search``, ``seed``).
        out_dir: the search output folder (one sub-folder per fold).
        fold_index: the fold whose training part is searched.
        resume: continue from the fold's latest checkpoint (an error is raised when ``resume`` is False
            and the fold folder already holds a checkpoint, so that no search is overwritten by accident).
        prepared: a ``PreparedCorpus`` (default: ``prepare(config)``).
        verbose: Keras progress bar (1) or none (0); default: a bar when stdout is a terminal.
        callbacks: extra Keras callbacks, run after the search's own (after the epoch's checkpoint).
        reuse: the supernet keeper of a multi-fold search (:mod:`emodarts_tf.search.reuse`); None builds the
            supernet here.

    Returns:
        The ``search.json`` summary as a dict (plus ``"genotype"``: the selected Genotype).

    Raises:
        SearchDivergedError (a RuntimeError): the loss, alpha loss, alphas, weights or optimizer state became
            NaN or infinite. The message names the fold folder, what went non-finite, the epoch and step.
            Nothing of that epoch is written (no genotype, alpha history entry or checkpoint): the latest
            checkpoint, which ``resume=True`` restores, is the last finite epoch's.
    """
    from emodarts_tf.data.pipeline import make_fold_data
    from emodarts_tf.data.prepare import prepare

    s = config.search
    check_search_config(s)
    check_search_partial_channels(config)
    fold_dir = Path(out_dir) / f"fold{int(fold_index)}"
    ckpt_dir = fold_dir / "checkpoints"
    config_path = fold_dir / "config.yaml"
    finished = _finished_or_refused(fold_dir, config, resume)
    if finished is not None:
        return finished
    started = time.perf_counter()
    # A reused supernet keeps its instantiated steps (setting TensorFlow's seed again would drop them).
    seed_everything(config.seed, keep_compiled=reuse is not None)
    if prepared is None:
        prepared = prepare(config, two_stream=config.search.two_stream)
    if config.search.two_stream and not getattr(prepared, "frames_shape", None):
        raise ValueError("search.method emotionnas: the prepared corpus has no frame-level stream; prepare it with "
                         "two_stream=True")
    fold_data = make_fold_data(prepared, int(fold_index), config, speed_copies=False)
    fold = fold_data.fold
    train_speakers = sorted(str(x) for x in fold.train_speakers)
    val_speakers = sorted(str(x) for x in fold_data.val_speakers)
    test_speakers = sorted(str(x) for x in fold.test_speakers)
    leaked = sorted(set(test_speakers) & (set(train_speakers) | set(val_speakers)))
    if leaked:
        raise ValueError(f"fold {fold.index}: test speaker(s) {leaked} also in the training part; the folds are broken")
    batch = s.batch_size
    n_weights = fold_data.size("weights")
    if n_weights < batch or fold_data.size("alphas") < batch:
        raise ValueError(
            f"search.batch_size {batch}: the weights part ({n_weights}) and alphas part "
            f"({fold_data.size('alphas')}) of fold {fold.index} must each hold at least one full batch"
        )
    steps = s.steps_per_epoch or max(1, n_weights // batch)
    num_classes = len(fold_data.classes)
    has_val = fold_data.size("val") > 0
    if not has_val:
        log.warning("fold %d: no validation speakers; genotype_best.json is the last epoch's", fold.index)

    strategy = resolve_strategy(s.strategy)
    check_global_batch(batch, strategy, "search.batch_size")
    with precision_policy(s.mixed_precision) as policy, graph_optimization(s.graph_optimization):
        with strategy.scope():
            if reuse is not None and strategy.num_replicas_in_sync == 1 and s.strategy != "multi_worker":
                def build():
                    seed_everything(config.seed)  # a new supernet: its initial values from the seed alone
                    return build_search_model(config, fold_data.model_input_shape, num_classes, steps)

                model = reuse.supernet(supernet_key(config, fold_data.model_input_shape, num_classes), build)
                set_search_length(model, s, steps)
            else:
                if reuse is not None:  # seeded above without resetting TensorFlow's generator state
                    seed_everything(config.seed)
                model = build_search_model(config, fold_data.model_input_shape, num_classes, steps)
            state = SearchState(model, ckpt_dir, max_to_keep=s.checkpoints_to_keep)
        initial_epoch = state.restore() if resume else 0
        if resume and initial_epoch == 0:
            log.info("%s: no checkpoint to resume; starting the search", fold_dir)
        save_config(config, config_path)
        log.info(
            "search fold %d (%s): %s-order, %d epochs x %d steps of batch %d, %d weights / %d alphas / %d val "
            "examples, alphas %s, %d replica(s), %s%s",
            fold.index, fold.name, s.order, s.epochs, steps, batch, n_weights, fold_data.size("alphas"),
            fold_data.size("val"), {k: list(v.shape) for k, v in model.alpha_arrays().items()},
            strategy.num_replicas_in_sync, policy, f", resuming after epoch {initial_epoch}" if initial_epoch else "",
        )  # fmt: skip

        # Where this search came from: shared by every genotype's meta and by search.json.
        provenance = {
            "corpus": prepared.corpus,
            "protocol": prepared.protocol,
            "synthetic": bool(getattr(prepared, "synthetic", False)),
            "fold": int(fold.index),
            "fold_name": fold.name,
            "train_speakers": train_speakers,
            "val_speakers": val_speakers,
            "test_speakers": test_speakers,
            "search_split": _search_split_record(config.data.search_split, fold_data, prepared),
            "classes": list(fold_data.classes),
            "input_shape": _json_shape(fold_data.model_input_shape),
            "method": s.method,
            **({"streams": {fold_data.image_name: asdict(config.features), "frames": asdict(config.frames)}}
               if fold_data.two_stream else {}),
            "order": s.order,
            "epochs": s.epochs,
        }
        meta = {"source": "emodarts-tf search", **provenance, "max_skip": s.max_skip, "seed": config.seed}
        recorder = EpochRecorder(fold_dir / "alpha_history.json", resume_epoch=initial_epoch,
                                 tensorboard_dir=fold_dir / "tensorboard")  # fmt: skip
        if initial_epoch < s.epochs:
            _fit_search(model, state, fold_data, fold_dir, config, meta, recorder, steps, initial_epoch, verbose,
                        callbacks)  # fmt: skip
        else:
            log.info("%s: the search already finished (%d epochs); rewriting its outputs", fold_dir, initial_epoch)

        final = Genotype.load(fold_dir / "genotype.json")
        best = Genotype.load(fold_dir / "genotype_best.json")
        selected, other, other_name = (best, final, "final") if s.select == "best" else (final, best, "best")
        if s.select == "perturbation":
            selected = _perturbation_genotype(model, fold_data, fold_dir, config, {**meta, **{
                k: final.meta.get(k) for k in ("epoch", "val_ua", "val_wa", "val_f1")}}, steps)
            other, other_name = final, "final"
        plot_genotype(selected, fold_dir / "cells", title_prefix=f"fold {fold.index} ({s.select}, epoch "
                      f"{selected.meta.get('epoch')}): ")  # fmt: skip
        plot_genotype(other, fold_dir / "cells" / other_name, title_prefix=f"fold {fold.index} ({other_name}, "
                      f"epoch {other.meta.get('epoch')}): ")  # fmt: skip
        entries = recorder.entries
        summary = {
            "format": SEARCH_FORMAT,
            **provenance,
            "test_speakers_seen": False,
            "sizes": {p: fold_data.size(p) for p in ("weights", "alphas", "val")},
            "epochs_done": len(entries),
            "warmup_epochs": s.warmup_epochs,
            "steps_per_epoch": steps,
            "batch_size": batch,
            "seconds": round(sum(e.get("seconds", 0.0) for e in entries), 2),
            "epoch_seconds": [e.get("seconds") for e in entries],
            "this_run_seconds": round(time.perf_counter() - started, 2),
            **peak_memory(),
            "best": {k: best.meta.get(k) for k in ("epoch", "val_ua", "val_wa", "val_f1")},
            "final": {k: final.meta.get(k) for k in ("epoch", "val_ua", "val_wa", "val_f1")},
            "select": s.select,
            **({"pt_tune_steps": s.pt_tune_steps} if s.pt_tune_steps is not None else {}),
            "genotype_file": SELECTED_FILES[s.select],
            "strategy": type(strategy).__name__,
            "replicas": int(strategy.num_replicas_in_sync),
            "precision": policy,
            "device": device_info(),
            "config": config.to_dict(),
        }
        write_json(fold_dir / "search.json", summary)
        update_genotype_index(out_dir, int(fold.index), selected)
        # "seconds" (search.json, the command's table): the recorded epoch times of every run of the fold;
        # "this_run_seconds": this process's wall time (data, model, tracing, epochs, files).
        earlier = ""
        if initial_epoch:
            earlier = (f" over all runs (epochs 1-{initial_epoch} in earlier runs)" if initial_epoch < len(entries)
                       else " (all in earlier runs)")  # fmt: skip
        log.info(
            "fold %d done: %d epochs, %.0f s of epochs%s, %.0f s in this run: best val UA %s at epoch %s; %s "
            "genotype %s", fold.index, len(entries), summary["seconds"], earlier, summary["this_run_seconds"],
            summary["best"]["val_ua"], summary["best"]["epoch"], s.select, format_genotype(selected),
        )  # fmt: skip
    return {**summary, "genotype": selected}


def run_search_folds(
    config: ExperimentConfig, out_dir: str | Path, folds: list, resume: bool = False, prepared=None, verbose=None
) -> dict:
    """``run_search`` for each fold of ``folds`` (one prepared corpus); returns ``{fold: summary}``.

    ``<out_dir>/genotypes.json`` gains each fold's selected genotype as soon as that fold finishes.
    """
    from emodarts_tf.data.prepare import prepare

    if prepared is None:
        prepared = prepare(config, two_stream=config.search.two_stream)
    results = {}
    reuse = SupernetReuse() if config.search.reuse_supernet else None
    before = custom_gradient_names()
    for k in folds:
        results[int(k)] = run_search(config, out_dir, int(k), resume=resume, prepared=prepared, verbose=verbose,
                                     reuse=reuse)  # fmt: skip
        if reuse is None:
            release_trial(before)  # the fold's files are written; free its supernet and traced graphs
    if reuse is not None:
        reuse.clear()
        release_trial(before)  # the last fold's files are written; free the supernet and its traced graphs
    return results
