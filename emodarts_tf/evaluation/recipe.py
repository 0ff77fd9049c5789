"""The retraining recipe shared by every model that is trained on a fold (``config.recipe``).

emoDARTS genotypes, random genotypes and the Keras Tuner baselines all train through
:func:`~emodarts_tf.evaluation.fitting.fit_fold`, and the tuner's trials through
:func:`train_dataset` and :func:`training_loss`, so a comparison between them differs only in the
architecture (and the optimiser each family is defined with), never in how its batches are made.

Parts (each off at its neutral value):

- ``class_balanced``: each training example is drawn by first drawing a class uniformly, then an
  example of that class; an epoch keeps the number of batches of one pass over the training part.
  UA weighs every class equally; balanced batches make the loss do the same.
- ``speed_perturb``: each training example of a batch is the original utterance or one of its copies played
  ``f`` times faster (a factor of the list), drawn uniformly per example and batch
  (:mod:`emodarts_tf.data.perturbation`; the copies' maps are extracted and cached once, and normalised as
  the utterances of another speaker).
- ``time_shift``: every training example is shifted in time by a uniform whole number of frames in
  ``[-s, s]`` with ``s = round(time_shift * frames)``; vacated frames are 0, the training mean after
  normalisation (what padding of a shorter utterance also looks like).
- ``mixup``: each example is mixed with a random partner of the same batch, ``x = l x_i + (1 - l) x_j``
  and the same for the one-hot targets, ``l ~ Beta(mixup, mixup)`` per example (Zhang et al., 2018).
- ``label_smoothing``: targets ``(1 - e) y + e / C``.
- ``ema``: the weights that are validated, selected and saved are an exponential moving average of
  the trained ones, ``a_t = m a_{t-1} + (1 - m) w_t`` (``a_1 = w_1``), Keras' optimiser EMA.
- ``swa``: stochastic weight averaging (Izmailov et al., UAI 2018): the model that is validated, tested
  and saved is the mean of the weights at the end of each of the last ``round(swa * epochs)`` epochs (at
  least one), instead of the weights of the epoch with the best validation UA. Nothing is selected on the
  validation speakers, so early stopping is off, and the validation figures are the averaged model's. The
  batch-norm moving statistics are averaged like the weights (each epoch's statistics belong to that
  epoch's weights); integer variables (random-generator states) keep their last value. It applies where
  a model is trained on a fold (``fitting.fit_fold``): the baselines' tuning trials still score the epochs
  themselves, and the chosen hyperparameters are retrained with the average.
- ``refit``: after the epoch is chosen on the validation speakers, a fresh model (same architecture,
  same schedule) trains on the training and validation speakers together for that many epochs, and it
  is the model tested and saved (``fitting.fit_fold``; ``<fold>/refit/`` holds its history). Small
  corpora lose a fifth of their speakers to validation otherwise; the validation figures stay those of
  the selection run.
- ``ensemble`` (with ``refit``): the model tested and saved is the mean of the probabilities of the selection
  run's kept model and the refit, one model holding both networks (:mod:`emodarts_tf.evaluation.ensemble`);
  training is unchanged, inference runs both networks. Without ``refit`` there is one model and it is served
  alone, so that ``--set recipe.refit=false`` works on a config that serves the pair.

Targets are one-hot (soft after mixup or smoothing) and the loss is categorical cross-entropy on
logits, which equals sparse cross-entropy when every part is off.
"""
from __future__ import annotations

import contextlib
import logging

import numpy as np

from emodarts_tf.config import RecipeConfig

log = logging.getLogger(__name__)


def check_recipe(recipe: RecipeConfig) -> None:
    """Raise ValueError naming the first impossible recipe setting."""
    for name in ("class_balanced", "refit", "ensemble"):
        if not isinstance(getattr(recipe, name), bool):
            raise ValueError(f"recipe.{name}: expected a bool, received {getattr(recipe, name)!r}")
    if not 0.0 <= recipe.label_smoothing < 1.0:
        raise ValueError(f"recipe.label_smoothing: expected a number in [0, 1), received {recipe.label_smoothing!r}")
    if recipe.mixup < 0:
        raise ValueError(f"recipe.mixup: expected the Beta parameter >= 0 (0 = off), received {recipe.mixup!r}")
    if not 0.0 <= recipe.time_shift < 0.5:
        raise ValueError(f"recipe.time_shift: expected a share of the frames in [0, 0.5), received {recipe.time_shift!r}")
    if not 0.0 <= recipe.ema < 1.0:
        raise ValueError(f"recipe.ema: expected a momentum in [0, 1) (0 = off), received {recipe.ema!r}")
    if not 0.0 <= recipe.swa <= 1.0:
        raise ValueError(f"recipe.swa: expected a share of the epochs in [0, 1] (0 = off), received {recipe.swa!r}")
    from emodarts_tf.data.perturbation import check_speed_factors

    check_speed_factors(recipe.speed_perturb)
    if recipe.swa > 0 and recipe.ema > 0:
        raise ValueError(f"recipe.swa={recipe.swa!r} and recipe.ema={recipe.ema!r}: two weight averages; set one of them to 0")


def recipe_fingerprint(recipe: RecipeConfig) -> dict:
    """The recipe as a resumed training must match it. Parts added since a checkpoint was written are left out
    while they are off (``speed_perturb`` empty), so that such checkpoints still resume; ``ensemble`` is left out
    always, since it changes what is kept after training, not the training."""
    from dataclasses import asdict

    return {k: v for k, v in asdict(recipe).items() if k != "ensemble" and not (k == "speed_perturb" and not v)}


def serves_pair(recipe: RecipeConfig | None) -> bool:
    """Whether a training under ``recipe`` serves two networks: ``ensemble`` takes effect only with ``refit``."""
    return bool(getattr(recipe, "refit", False)) and bool(getattr(recipe, "ensemble", False))


def recipe_record(recipe: RecipeConfig) -> dict:
    """The recipe as ``model_info.json`` records it: ``ensemble`` true only where the pair is served."""
    from dataclasses import asdict

    return {**asdict(recipe), "ensemble": serves_pair(recipe)}


def swa_start_epoch(recipe: RecipeConfig, epochs: int) -> int | None:
    """The first epoch (1-based) whose weights enter the recipe's weight average, or None without one."""
    if recipe.swa <= 0:
        return None
    return int(epochs) - max(1, int(round(float(recipe.swa) * int(epochs)))) + 1


def shift_frames(recipe: RecipeConfig, frames: int) -> int:
    return int(round(float(recipe.time_shift) * int(frames)))


def _stateless_seed(seed):
    """A stateless-RNG seed, shape ``(2,)`` int32: from a ``(2,)`` tensor (as the training pipeline passes,
    one per batch), an int, or None (a fresh draw)."""
    import tensorflow as tf

    if seed is None:
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.cast(tf.reshape(seed, [2]), tf.int32)


def _shift_along(x, shifts, axis: int):
    """``x`` with example ``i`` shifted by ``shifts[i]`` positions along ``axis``; vacated positions are 0."""
    import tensorflow as tf

    size = tf.shape(x)[axis]
    source = tf.range(size)[tf.newaxis, :] - shifts[:, tf.newaxis]  # (B, size): source of every output position
    valid = tf.logical_and(source >= 0, source < size)
    gathered = tf.gather(x, tf.clip_by_value(source, 0, size - 1), axis=axis, batch_dims=1)
    mask = tf.cast(valid, x.dtype)
    for _ in range(axis + 1, len(x.shape)):
        mask = mask[..., tf.newaxis]
    for _ in range(1, axis):
        mask = tf.expand_dims(mask, 1)
    return gathered * mask


def time_shift_batch(x, max_shift: int, seed=None, image_name: str = "mfcc"):
    """Shift each example of ``x`` ``(B, n_mfcc, frames, 1)`` along time by a uniform integer in
    ``[-max_shift, max_shift]``; vacated frames are 0. ``seed``: see :func:`_stateless_seed`.

    A two-stream batch ``{image_name: image, "frames": (B, T, dim)}`` shifts both streams by the same
    share of their length (the frame stream's shift rounded to its own frames)."""
    import tensorflow as tf

    if max_shift <= 0:
        return x
    image = x[image_name] if isinstance(x, dict) else x
    batch = tf.shape(image)[0]
    shifts = tf.random.stateless_uniform([batch], _stateless_seed(seed), -max_shift, max_shift + 1, dtype=tf.int32)
    shifted = _shift_along(image, shifts, axis=2)
    if not isinstance(x, dict):
        return shifted
    frames = x["frames"]
    ratio = tf.cast(tf.shape(frames)[1], tf.float32) / tf.cast(tf.shape(image)[2], tf.float32)
    frame_shifts = tf.cast(tf.round(tf.cast(shifts, tf.float32) * ratio), tf.int32)
    return {**x, image_name: shifted, "frames": _shift_along(frames, frame_shifts, axis=1)}


def sample_beta(shape, concentration: float, seed=None):
    """``Beta(a, a)`` samples from two Gamma draws. ``seed``: see :func:`_stateless_seed`."""
    import tensorflow as tf

    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(_stateless_seed(seed), num=2))
    g1 = tf.random.stateless_gamma(shape, s1, concentration)
    g2 = tf.random.stateless_gamma(shape, s2, concentration)
    return g1 / (g1 + g2)


def mixup_batch(x, y, concentration: float, seed=None):
    """Mix every example (and its target row) with a random partner of the batch. ``seed``: see
    :func:`_stateless_seed`."""
    import tensorflow as tf

    if concentration <= 0:
        return x, y
    batch = tf.shape(tf.nest.flatten(x)[0])[0]
    s_lam, s_partner = tf.unstack(tf.random.experimental.stateless_split(_stateless_seed(seed), num=2))
    lam = sample_beta([batch], float(concentration), seed=s_lam)
    partner = tf.argsort(tf.random.stateless_uniform([batch], s_partner))

    def mix(t):  # the same partner and weight for every input of a (two-stream) batch
        lt = tf.reshape(tf.cast(lam, t.dtype), [-1] + [1] * (len(t.shape) - 1))
        return lt * t + (1.0 - lt) * tf.gather(t, partner)

    return tf.nest.map_structure(mix, x), mix(y)


def train_dataset(fold_data, batch_size: int, recipe: RecipeConfig, augment: bool = True):
    """The recipe's training batches ``(x, one-hot y)`` of a fold's training part (one pass per epoch).

    Each batch's time shift and mixup draw from a stateless RNG seeded by a per-batch seed pair from
    ``tf.data.Dataset.random`` (seeded by the fold's seed, new pairs every epoch), so the batches are the
    same from run to run although they are made in parallel."""
    import tensorflow as tf

    check_recipe(recipe)
    num_classes = len(fold_data.classes)
    options = {"balanced": True} if recipe.class_balanced else {}
    if recipe.speed_perturb:  # a part of the recipe, like mixup: not gated by ``augment`` (SpecAugment)
        options["versions"] = True
    ds = fold_data.train(batch_size, shuffle=True, augment=augment, **options)
    max_shift = shift_frames(recipe, fold_data.input_shape[1])
    seeds = tf.data.Dataset.random(seed=int(getattr(fold_data, "seed", 0)) + 4099, rerandomize_each_iteration=True)

    def transform(batch, seed_pair):
        x, y = batch
        s_shift, s_mix = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed_pair % (2**31 - 1), tf.int32), num=2))
        target = tf.one_hot(tf.cast(y, tf.int32), num_classes, dtype=tf.float32)
        x = time_shift_batch(x, max_shift, seed=s_shift, image_name=getattr(fold_data, "image_name", "mfcc"))
        return mixup_batch(x, target, float(recipe.mixup), seed=s_mix)

    ds = tf.data.Dataset.zip((ds, seeds.batch(2)))
    return ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def training_loss(recipe: RecipeConfig):
    """Categorical cross-entropy on logits with the recipe's label smoothing."""
    import keras

    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=float(recipe.label_smoothing))


def training_accuracy():
    import keras

    return keras.metrics.CategoricalAccuracy(name="accuracy")


def enable_ema(optimizer, recipe: RecipeConfig) -> None:
    """Turn on Keras' EMA of the trained weights in an optimiser that has not been built yet."""
    if recipe.ema <= 0:
        return
    if optimizer.built:
        raise ValueError("recipe.ema: the optimiser is already built; enable the EMA before its first step")
    optimizer.use_ema = True
    optimizer.ema_momentum = float(recipe.ema)
    optimizer.ema_overwrite_frequency = None


@contextlib.contextmanager
def averaged_weights(model, optimizer):
    """Inside the block the model's trainable weights are the optimiser's EMA; restored afterwards.

    A no-op when the optimiser keeps no EMA (or has not taken a step yet)."""
    if optimizer is None or not getattr(optimizer, "use_ema", False) or not optimizer.built:
        yield False
        return
    variables = list(model.trainable_variables)
    with restored_afterwards(variables):
        optimizer.finalize_variable_values(variables)
        yield True


@contextlib.contextmanager
def restored_afterwards(variables):
    """Whatever the block assigns to ``variables``, their values before it are put back afterwards."""
    variables = list(variables)
    saved = [np.array(v.numpy()) for v in variables]
    try:
        yield variables
    finally:
        for var, value in zip(variables, saved):
            var.assign(value)
