"""Retraining a genotype on one fold: the emoDARTS "augment" stage on top of :func:`fitting.fit_fold`.

The discrete network of the genotype (``search_space.network.build_fixed_network``) is built from the
search space of the config with the ``train`` section's overrides (``init_channels``, ``cnn_cells``,
``seq_cells``: the retrained network may be larger than the searched one; ``dropout``: the classifier's
dropout, a regulariser of retraining, like drop-path, that the supernet need not share) and trained from
scratch:

- SGD, momentum ``train.momentum`` (0.9), learning rate cosine-annealed per step from ``train.lr`` to
  ``train.lr_min`` over ``train.epochs`` epochs, weight decay ``train.weight_decay``: coupled (added to the
  gradient before momentum, as PyTorch and the search do; ``optimizers.CoupledSGD``) by default,
  ``train.weight_decay_mode: decoupled`` for Keras' ``w -= lr * wd * w``; gradients clipped to global norm
  ``train.grad_clip`` (5);
- the shared recipe of ``config.recipe`` (balanced batches, time shift, mixup, label smoothing, EMA);
- drop-path ``train.drop_path`` on the CNN cells, raised linearly from 0 over the epochs (DARTS);
- auxiliary head after the last reduction cell when ``train.aux_weight > 0``, its loss weighted by it;
- a two-stream network with ``train.stream_heads > 0``: a classifier per stream before the fusion, each loss
  weighted by it (``build_fixed_two_stream(stream_heads=True)``); the saved model keeps the fused logits only;
- a two-stream network with ``train.stream_dropout > 0``: modality dropout before the fusion (``StreamDropout``),
  the identity in inference;
- ``train.fusion: late``: a classifier per stream, each trained on its own loss, and the saved model's logits the
  log of their mean class probabilities (``LateFusion``);
- early stopping on validation UA with ``train.patience``; optional XLA and mixed precision.
"""
from __future__ import annotations

import logging
import dataclasses
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from emodarts_tf.config import ExperimentConfig, TrainConfig
from emodarts_tf.evaluation.recipe import recipe_fingerprint, recipe_record

log = logging.getLogger(__name__)

WEIGHT_DECAY_MODES = ("coupled", "decoupled")


def sgd_factory(train: TrainConfig) -> Callable[[int], object]:
    """``(steps_per_epoch) -> keras.optimizers.SGD`` with the cosine schedule of ``train``."""
    import keras

    from emodarts_tf.evaluation.optimizers import CoupledSGD

    if train.weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"train.weight_decay_mode: expected one of {WEIGHT_DECAY_MODES}, received {train.weight_decay_mode!r}")
    if train.lr <= 0 or train.lr_min < 0 or train.lr_min > train.lr:
        raise ValueError(f"train.lr / train.lr_min: expected 0 <= lr_min <= lr and lr > 0, received {train.lr}, {train.lr_min}")

    def factory(steps_per_epoch: int):
        decay_steps = max(1, int(steps_per_epoch) * int(train.epochs))
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=float(train.lr), decay_steps=decay_steps, alpha=float(train.lr_min) / float(train.lr)
        )
        clip = float(train.grad_clip) if train.grad_clip else None
        if train.weight_decay_mode == "coupled":
            return CoupledSGD(learning_rate=schedule, momentum=float(train.momentum), l2=float(train.weight_decay),
                              global_clipnorm=clip)  # fmt: skip
        return keras.optimizers.SGD(
            learning_rate=schedule,
            momentum=float(train.momentum),
            weight_decay=float(train.weight_decay) if train.weight_decay else None,
            global_clipnorm=clip,
        )

    return factory


def build_genotype_network(genotype, space, input_shape, num_classes: int, drop_path: float = 0.0, aux: bool = False,
                           name: str = "emodarts", stream_heads: bool = False, stream_dropout: float = 0.0):
    """The fixed network of ``genotype``: ``build_fixed_network`` for an emoDARTS genotype (one MFCC input),
    ``build_fixed_two_stream`` for a two-stream EmotionNAS genotype (``input_shape`` a dict of the inputs;
    the fusion is the genotype's, whatever ``space.fusion`` says; ``stream_heads`` and ``stream_dropout`` as
    there)."""
    from emodarts_tf.search_space.network import build_fixed_network
    from emodarts_tf.search_space.two_stream import build_fixed_two_stream

    if genotype.streams is None:
        if stream_heads:
            raise ValueError("stream_heads: expected False for an emoDARTS (one-stream) genotype, received True")
        if stream_dropout:
            raise ValueError(f"stream_dropout: expected 0 for an emoDARTS (one-stream) genotype, received "
                             f"{stream_dropout}")
        if isinstance(input_shape, dict):
            raise ValueError("genotype: an emoDARTS (one-stream) genotype cannot read two input streams")
        return build_fixed_network(genotype, space, tuple(input_shape), num_classes, drop_path=drop_path, aux=aux,
                                   name=name)  # fmt: skip
    if not isinstance(input_shape, dict):
        raise ValueError(f"genotype: a two-stream genotype ({sorted(genotype.stream_cells)}) needs the frame-level "
                         "stream as well; train it with the config of its search (e.g. --config emotionnas)")
    missing = sorted(set(genotype.stream_cells) - set(input_shape))
    if missing:
        raise ValueError(f"genotype: its streams {sorted(genotype.stream_cells)} need the input(s) {missing}, but the "
                         f"data provide {sorted(input_shape)}; train it with the features config of its search "
                         "(features.kind)")
    return build_fixed_two_stream(genotype, dataclasses.replace(space, fusion=genotype.fusion), input_shape,
                                  num_classes, drop_path=drop_path, aux=aux, stream_heads=stream_heads,
                                  stream_dropout=stream_dropout, name=name)


def stream_head_weights(genotype, train) -> dict:
    """``{output: loss weight}`` of the retrained network's outputs besides the fused logits:
    ``train.stream_heads`` for each stream of a genotype that reads two; empty when off or with one stream. With
    the late fusion each stream's classifier is trained on its own loss (weight 1) and the fused logits, their
    averaged probabilities, on none: ``{"logits": 0, "aux_<input>": 1, ...}``."""
    from emodarts_tf.search_space.two_stream import stream_head_name

    weight = train.stream_heads
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise ValueError(f"train.stream_heads: expected a loss weight >= 0, received {weight!r}")
    if genotype.fusion == "late":
        return {"logits": 0.0, **{stream_head_name(name): 1.0 for name in genotype.stream_cells}}
    if not train.stream_heads or not reads_two_streams(genotype):
        return {}
    return {stream_head_name(name): float(train.stream_heads) for name in genotype.stream_cells}


def stream_dropout_rate(genotype, train) -> float:
    """The modality dropout of the retrained network: ``train.stream_dropout`` for a genotype that reads two
    streams, 0 when off or with one stream."""
    from emodarts_tf.search_space.validation import check_rate

    rate = check_rate(train.stream_dropout, "train.stream_dropout")
    return rate if reads_two_streams(genotype) else 0.0


def reads_two_streams(genotype) -> bool:
    """Whether the retrained network of ``genotype`` reads two streams (a two-stream genotype whose fusion keeps
    both), which the per-stream training aids need."""
    return genotype.streams is not None and len(genotype.stream_cells) >= 2


def retrain_space(config: ExperimentConfig):
    """The search space of the retrained network (``space`` with the ``train`` overrides applied)."""
    from emodarts_tf.search_space.network import apply_train_overrides

    return apply_train_overrides(config.space, config.train)


def training_fingerprint(genotype, config: ExperimentConfig, classes: list) -> dict:
    """What must not change between a checkpoint and its resumption."""
    genotype_cells = {k: v for k, v in genotype.to_dict().items() if k != "meta"}
    data = config.data
    return {
        "genotype": genotype_cells,
        "space": asdict(retrain_space(config)),
        # train.strategy changes where the run executes, not what it computes: a run may resume under another.
        "train": {k: v for k, v in asdict(config.train).items() if k != "strategy"},
        "recipe": recipe_fingerprint(config.recipe),
        "features": asdict(config.features),
        **({"frames": asdict(config.frames)} if genotype.streams is not None else {}),
        "classes": list(classes),
        "data": {
            "corpus": data.corpus,
            "protocol": data.protocol,
            "normalize": data.normalize,
            "val_fraction": data.val_fraction,
            "spec_augment": asdict(data.spec_augment),
        },
        "seed": config.seed,
    }


def network_complexity(genotype, config: ExperimentConfig, input_shape, num_classes: int) -> dict:
    """Parameters and FLOPs of the inference network (no aux head, no drop-path); ``{}`` if not countable."""
    try:
        from emodarts_tf.evaluation.complexity import model_complexity
    except ImportError:  # pragma: no cover - the module ships with the package
        return {}
    model = build_genotype_network(genotype, retrain_space(config), input_shape, num_classes, name="emodarts_count")
    try:
        return model_complexity(model)
    except Exception as exc:  # the profiler is best effort; a report must not fail on it
        log.warning("complexity of the network could not be counted (%s: %s)", type(exc).__name__, exc)
        return {"params": int(sum(int(w.numpy().size) for w in model.weights)), "flops": None}


def train_genotype_fold(
    genotype,
    config: ExperimentConfig,
    fold_data,
    fold_dir: str | Path,
    *,
    resume: bool = True,
    corpus: str | None = None,
    protocol: str | None = None,
    genotype_source: str | None = None,
    callbacks=(),
    extra_info: dict | None = None,
) -> dict:
    """Retrain ``genotype`` on ``fold_data`` into ``fold_dir``; returns the fold's metrics.

    Args:
        genotype: a validated ``Genotype``.
        config: the experiment config (``space``, ``train``, ``features``, ``seed`` are used).
        fold_data: the fold's ``FoldData`` (``data.pipeline.make_fold_data``).
        fold_dir: output directory (see :func:`fitting.fit_fold` for its contents).
        resume: continue a killed run from its checkpoint (and skip a finished fold).
        corpus, protocol: recorded in ``model_info.json``.
        genotype_source: where the genotype came from, recorded too.
        callbacks: extra Keras callbacks (after the epoch checkpoint).
        extra_info: more keys for ``model_info.json`` (e.g. ``unfinished_search`` from ``cli/train.py
            --allow-unfinished``); they do not change the training.
    """
    from emodarts_tf.evaluation.fitting import fit_fold
    from emodarts_tf.utils.runtime import precision_policy, resolve_strategy
    from emodarts_tf.utils.seed import seed_everything

    train = config.train
    strategy = resolve_strategy(train.strategy, "train.strategy")
    space = retrain_space(config)
    classes = list(fold_data.classes)
    input_shape = getattr(fold_data, "model_input_shape", tuple(fold_data.input_shape))
    fold_index = int(fold_data.fold.index)
    fold_dir = Path(fold_dir)
    genotype.validate(genotype_source or "genotype")
    if train.fusion is not None and train.fusion != genotype.fusion:
        genotype = genotype.with_fusion(train.fusion)
    head_weights = stream_head_weights(genotype, train)
    late = genotype.fusion == "late"
    if train.stream_heads and (late or not head_weights):
        log.info("train.stream_heads=%s: not used, the retrained network %s", train.stream_heads,
                 "trains each stream's own classifier (late fusion)" if late else "has one stream")
    stream_dropout = stream_dropout_rate(genotype, train)
    if train.stream_dropout and not stream_dropout:
        log.info("train.stream_dropout=%s: not used, the retrained network has one stream", train.stream_dropout)

    with precision_policy(bool(train.mixed_precision)):
        seed_everything(int(config.seed) * 1000 + fold_index)

        def build():
            return build_genotype_network(genotype, space, input_shape, len(classes), drop_path=float(train.drop_path),
                                          aux=train.aux_weight > 0, stream_heads=bool(head_weights) and not late,
                                          stream_dropout=stream_dropout,
                                          name="emodarts" if genotype.streams is None else "emotionnas")  # fmt: skip

        complexity = {}
        if not (fold_dir / "metrics.json").is_file() or not resume:
            complexity = network_complexity(genotype, config, input_shape, len(classes))
        extra = {
            "kind": "emodarts" if genotype.streams is None else "emotionnas",
            "genotype": genotype.to_dict(),
            "genotype_source": genotype_source,
            "space": asdict(space),
            "train": asdict(train),
            "recipe": recipe_record(config.recipe),
            "features": asdict(config.features),
            **({"frames": asdict(config.frames)} if genotype.streams is not None else {}),
            "corpus": corpus,
            "corpus_root": str(Path(config.data.root).expanduser().resolve()) if config.data.root else None,
            "protocol": protocol,
            "normalize": config.data.normalize,
            "seed": config.seed,
            "complexity": complexity,
            **dict(extra_info or {}),
        }
        return fit_fold(
            build,
            fold_data,
            fold_dir,
            epochs=int(train.epochs),
            batch_size=int(train.batch_size),
            optimizer=sgd_factory(train),
            patience=train.patience,
            resume=resume,
            aux_weight=float(train.aux_weight),
            output_weights=head_weights,
            drop_path=float(train.drop_path),
            augment=True,
            recipe=config.recipe,
            jit_compile=bool(train.jit_compile),
            callbacks=callbacks,
            extra_info=extra,
            fingerprint=training_fingerprint(genotype, config, classes),
            label=f"fold {fold_index}",
            strategy=strategy,
        )
