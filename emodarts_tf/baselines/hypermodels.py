"""Keras Tuner HyperModels of the hand-designed baselines: CNN, LSTM, CNN-LSTM, CNN-LSTM with attention.

Every family reads the same MFCC input as emoDARTS, ``(batch, coefficients, frames, 1)`` through an
``Input`` named ``mfcc`` (so exports get the same signature), and ends in a ``Dense`` named ``logits``.
Axis 1 is frequency (the MFCC coefficients), axis 2 is time (the frames).

- ``cnn``: Conv-BN-ReLU blocks, each followed by 2 x 2 pooling (filters doubling per block), global average
  pooling, a dense layer, logits.
- ``lstm``: frames are the time steps and coefficients the features; stacked (bi)LSTMs, the last state,
  logits.
- ``cnn_lstm``: the CNN blocks pool frequency by 2 and time by ``time_pool`` (1 keeps every frame); the map
  is pooled over frequency into a (time, channels) sequence for stacked (bi)LSTMs; the last state, logits.
- ``cnn_lstm_att``: as ``cnn_lstm``, with every LSTM returning sequences and additive attention pooling
  over time instead of the last state.

The search spaces live in ``configs/baselines.yaml`` (see its header); ``build(hp)`` declares the
hyperparameters inline, in the order of the file. ``fit()`` adds the ``ValidationUA`` callback, so the
tuner's objective ``val_ua`` is computed over the whole validation set.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt

from emodarts_tf.baselines.layers import AttentionPooling
from emodarts_tf.search_space.network import FrequencyPooling
from emodarts_tf.search_space.operations import BN_MOMENTUM
from emodarts_tf.baselines.objective import ValidationUA
from emodarts_tf.baselines.names import FAMILIES
from emodarts_tf.config import load_yaml_dict

MAX_FILTERS = 256

_COMMON = ("dropout", "learning_rate")
_CONV = ("conv_blocks", "filters", "kernel_size", "pooling")
_RECURRENT = ("lstm_layers", "lstm_units", "bidirectional")
HP_NAMES = {
    "cnn": _CONV + ("dense_units",) + _COMMON,
    "lstm": _RECURRENT + _COMMON,
    "cnn_lstm": _CONV + ("time_pool",) + _RECURRENT + _COMMON,
    "cnn_lstm_att": _CONV + ("time_pool",) + _RECURRENT + ("attention_units",) + _COMMON,
}


# --------------------------------------------------------------------------------------------- spaces
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_spec(name: str, spec: Any, where: str) -> dict:
    """Normalise one entry of a search space into {"kind": int|float|choice|bool|fixed, ...}."""
    if not isinstance(spec, dict):
        if spec is None or isinstance(spec, (list, tuple)):
            raise ValueError(f"{where}.{name}: expected a value, {{min, max}} or {{choices}}, received {spec!r}")
        return {"kind": "fixed", "value": spec}
    unknown = set(spec) - {"min", "max", "step", "sampling", "choices", "default"}
    if unknown:
        raise ValueError(f"{where}.{name}: unknown key(s) {sorted(unknown)}; expected min/max/step/sampling/default or choices/default")
    if "choices" in spec:
        if set(spec) - {"choices", "default"}:
            raise ValueError(f"{where}.{name}: `choices` cannot be combined with min/max/step/sampling")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}.{name}: choices expected a non-empty list, received {choices!r}")
        default = spec.get("default", choices[0])
        if default not in choices:
            raise ValueError(f"{where}.{name}: default {default!r} is not among the choices {choices}")
        if all(isinstance(c, bool) for c in choices):
            return {"kind": "bool", "default": bool(default), "choices": [bool(c) for c in choices]}
        if all(_is_number(c) for c in choices):
            if any(isinstance(c, float) for c in choices):
                choices, default = [float(c) for c in choices], float(default)
        elif not all(isinstance(c, str) for c in choices):
            raise ValueError(f"{where}.{name}: choices must be all numbers, all strings or all booleans, received {choices!r}")
        return {"kind": "choice", "choices": choices, "default": default}
    if "min" not in spec or "max" not in spec:
        raise ValueError(f"{where}.{name}: expected both min and max (or choices), received {spec!r}")
    lo, hi = spec["min"], spec["max"]
    step, sampling = spec.get("step"), spec.get("sampling", "linear")
    if not (_is_number(lo) and _is_number(hi)) or lo > hi:
        raise ValueError(f"{where}.{name}: expected numbers with min <= max, received min={lo!r}, max={hi!r}")
    if sampling not in ("linear", "log", "reverse_log"):
        raise ValueError(f"{where}.{name}: sampling expected linear, log or reverse_log, received {sampling!r}")
    if step is not None and (not _is_number(step) or step <= 0):
        raise ValueError(f"{where}.{name}: step expected a positive number, received {step!r}")
    is_int = all(isinstance(v, int) for v in (lo, hi)) and (step is None or isinstance(step, int))
    default = spec.get("default", lo)
    if not _is_number(default) or not lo <= default <= hi:
        raise ValueError(f"{where}.{name}: default {default!r} outside [{lo}, {hi}]")
    if is_int:
        return {"kind": "int", "min": lo, "max": hi, "step": step or 1, "sampling": sampling, "default": int(default)}
    return {"kind": "float", "min": float(lo), "max": float(hi), "step": None if step is None else float(step),
            "sampling": sampling, "default": float(default)}


def parse_space(family: str, raw: dict, where: str = "space") -> dict:
    """Check one family's section of a search-space file; returns {name: normalised spec} in HP_NAMES order."""
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, received {family!r}")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of hyperparameter entries, received {raw!r}")
    wanted = HP_NAMES[family]
    missing = [n for n in wanted if n not in raw]
    unknown = [n for n in raw if n not in wanted]
    if missing or unknown:
        raise ValueError(
            f"{where}: the {family} family takes exactly the hyperparameters {list(wanted)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else "")
        )
    return {name: _check_spec(name, raw[name], where) for name in wanted}


def load_space(family: str, space_file: str | Path = "baselines.yaml") -> dict:
    """The parsed search space of ``family`` from a YAML file (a path, or a name in configs/)."""
    raw = load_yaml_dict(space_file)
    if family not in raw:
        raise ValueError(f"search space file {space_file}: no section {family!r}; it has {sorted(raw)}")
    return parse_space(family, raw[family], where=f"{space_file}:{family}")


def smallest_values(space: dict) -> dict:
    """The smallest setting of every hyperparameter (min, smallest number, False, or the first choice)."""
    values = {}
    for name, spec in space.items():
        kind = spec["kind"]
        if kind == "fixed":
            values[name] = spec["value"]
        elif kind in ("int", "float"):
            values[name] = spec["min"]
        elif kind == "bool":
            values[name] = False if False in spec["choices"] else True
        elif all(_is_number(c) for c in spec["choices"]):
            values[name] = min(spec["choices"])
        else:
            values[name] = spec["choices"][0]
    return values


def default_values(space: dict) -> dict:
    return {name: (spec["value"] if spec["kind"] == "fixed" else spec["default"]) for name, spec in space.items()}


def fixed_hyperparameters(values: dict) -> kt.HyperParameters:
    """HyperParameters pinning each name to a value; ``build()`` then uses these instead of sampling."""
    hp = kt.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


# ---------------------------------------------------------------------------------------- hypermodels
class BaselineHyperModel(kt.HyperModel):
    """Base of the baseline families: input ``mfcc``, a family body, ``logits``, Adam and cross-entropy.

    Args:
        input_shape: one example's shape, ``(n_mfcc, frames, 1)``.
        num_classes: the number of emotion classes (logits).
        space: the family's parsed search space (``load_space``); None reads ``configs/baselines.yaml``.
        jit_compile: XLA for training (off by default; slow on CPUs).
        recipe: the shared training recipe (``config.RecipeConfig``); its loss (label smoothing) and EMA
            are used by the tuner's trials, whose batches come from ``evaluation.recipe.train_dataset``.
            None: every part off.
    """

    family = ""

    def __init__(self, input_shape, num_classes: int, space: dict | None = None, jit_compile: bool = False,
                 recipe=None, **kwargs):  # fmt: skip
        super().__init__(name=kwargs.pop("name", f"baseline_{self.family}"), **kwargs)
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != 1 or any(not isinstance(s, int) or s <= 0 for s in shape):
            raise ValueError(f"input_shape: expected (n_mfcc, frames, 1) with positive sizes, received {input_shape!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: expected an int >= 2, received {num_classes!r}")
        self.input_shape = shape
        self.num_classes = num_classes
        if space is None:
            space = load_space(self.family)
        elif _is_raw(space):
            space = parse_space(self.family, space)
        self.space = space
        self.jit_compile = bool(jit_compile)
        from emodarts_tf.config import RecipeConfig

        self.recipe = recipe if recipe is not None else RecipeConfig()

    # Inline declaration of one hyperparameter from its spec in the space file.
    def _hp(self, hp: kt.HyperParameters, name: str):
        spec = self.space[name]
        kind = spec["kind"]
        if kind == "fixed":
            return hp.Fixed(name, spec["value"])
        if kind == "int":
            return hp.Int(name, spec["min"], spec["max"], step=spec["step"], sampling=spec["sampling"], default=spec["default"])
        if kind == "float":
            return hp.Float(name, spec["min"], spec["max"], step=spec["step"], sampling=spec["sampling"], default=spec["default"])
        if kind == "bool":
            if len(set(spec["choices"])) == 1:
                return hp.Fixed(name, spec["choices"][0])
            return hp.Boolean(name, default=spec["default"])
        return hp.Choice(name, spec["choices"], default=spec["default"])

    def body(self, hp: kt.HyperParameters, inputs):
        raise NotImplementedError(f"{type(self).__name__}: a baseline family must implement body()")

    def network(self, hp: kt.HyperParameters) -> keras.Model:
        """The uncompiled network: ``mfcc`` input, the family body, dropout, ``logits``."""
        inputs = keras.Input(self.input_shape, name="mfcc")
        features = self.body(hp, inputs)
        dropout = self._hp(hp, "dropout")
        if dropout > 0:
            features = keras.layers.Dropout(dropout, name="head_dropout")(features)
        logits = keras.layers.Dense(self.num_classes, name="logits")(features)
        return keras.Model(inputs, logits, name=f"baseline_{self.family}")

    def optimizer(self, hp: kt.HyperParameters) -> keras.optimizers.Optimizer:
        """Adam at the tuned learning rate (the paper code's baselines: Adam, 1e-3)."""
        return keras.optimizers.Adam(learning_rate=self._hp(hp, "learning_rate"))

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """The network compiled with the recipe's loss on one-hot targets (``recipe.train_dataset``)."""
        from emodarts_tf.evaluation import recipe as recipes

        model = self.network(hp)
        optimizer = self.optimizer(hp)
        recipes.enable_ema(optimizer, self.recipe)
        model.compile(
            optimizer=optimizer,
            loss=recipes.training_loss(self.recipe),
            metrics=[recipes.training_accuracy()],
            jit_compile=self.jit_compile,
        )
        return model

    def fit(self, hp, model, *args, validation_data=None, callbacks=None, **kwargs):
        """``model.fit`` with ``ValidationUA`` first among the callbacks (validation is done by it alone)."""
        if validation_data is None:
            raise ValueError(f"{self.name}.fit: validation_data is required (the objective is UA on it)")
        callbacks = [ValidationUA(validation_data, self.num_classes)] + list(callbacks or [])
        if args and _is_dataset(args[0]):
            kwargs.setdefault("shuffle", False)  # a tf.data pipeline shuffles itself
            args = (_one_hot_targets(args[0], self.num_classes), *args[1:])
        return model.fit(*args, callbacks=callbacks, **kwargs)

    # Shared pieces -----------------------------------------------------------------------------------
    def _conv_blocks(self, hp, x, time_pool: int | None = None):
        """Conv-BN-ReLU-pool blocks; ``time_pool`` None reads the ``time_pool`` hyperparameter."""
        blocks = self._hp(hp, "conv_blocks")
        filters = self._hp(hp, "filters")
        kernel = self._hp(hp, "kernel_size")
        pooling = self._hp(hp, "pooling")
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling: expected max or avg, received {pooling!r}")
        if time_pool is None:
            time_pool = self._hp(hp, "time_pool")
        if not isinstance(time_pool, int) or isinstance(time_pool, bool) or time_pool < 1:
            raise ValueError(f"time_pool: expected a positive int, received {time_pool!r}")
        pool_layer = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
        for b in range(blocks):
            width = min(filters * 2**b, MAX_FILTERS)
            x = keras.layers.Conv2D(width, kernel, padding="same", use_bias=False, name=f"conv{b + 1}")(x)
            x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{b + 1}")(x)
            x = keras.layers.ReLU(name=f"relu{b + 1}")(x)
            freq, time = int(x.shape[1]), int(x.shape[2])
            pool = (2 if freq >= 2 else 1, time_pool if time >= time_pool else 1)
            if pool != (1, 1):
                x = pool_layer(pool, name=f"pool{b + 1}")(x)
        return x, pooling

    def _recurrent(self, hp, x, return_sequences: bool):
        layers = self._hp(hp, "lstm_layers")
        units = self._hp(hp, "lstm_units")
        bidirectional = self._hp(hp, "bidirectional")
        for i in range(layers):
            sequences = return_sequences or i < layers - 1
            lstm = keras.layers.LSTM(units, return_sequences=sequences, name=f"lstm{i + 1}")
            if bidirectional:
                lstm = keras.layers.Bidirectional(lstm, name=f"bilstm{i + 1}")
            x = lstm(x)
        return x


def _one_hot_targets(dataset, num_classes: int):
    """``(x, class id)`` batches as ``(x, one-hot)`` for the recipe's categorical loss; one-hot (or mixed)
    targets, as ``evaluation.recipe.train_dataset`` makes them, pass unchanged."""
    import tensorflow as tf

    target = dataset.element_spec[1]
    if target.dtype.is_floating and target.shape.rank == 2:
        return dataset
    return dataset.map(lambda x, y: (x, tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), num_classes)))


def _is_dataset(x) -> bool:
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)


def _is_raw(space: dict) -> bool:
    """A space straight from YAML (entries without the normalised ``kind`` key)."""
    return not all(isinstance(v, dict) and "kind" in v for v in space.values())


class CNNHyperModel(BaselineHyperModel):
    family = "cnn"

    def body(self, hp, inputs):
        x, _ = self._conv_blocks(hp, inputs, time_pool=2)
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
        x = keras.layers.Dense(self._hp(hp, "dense_units"), activation="relu", name="dense")(x)
        return x


class LSTMHyperModel(BaselineHyperModel):
    family = "lstm"

    def body(self, hp, inputs):
        n_mfcc, frames, _ = self.input_shape
        x = keras.layers.Reshape((n_mfcc, frames), name="squeeze")(inputs)
        x = keras.layers.Permute((2, 1), name="time_major")(x)  # (frames, coefficients)
        return self._recurrent(hp, x, return_sequences=False)


class CNNLSTMHyperModel(BaselineHyperModel):
    family = "cnn_lstm"

    def _sequence(self, hp, inputs):
        x, pooling = self._conv_blocks(hp, inputs)
        return FrequencyPooling(pooling, name="freq_pool")(x)

    def body(self, hp, inputs):
        return self._recurrent(hp, self._sequence(hp, inputs), return_sequences=False)


class CNNLSTMAttentionHyperModel(CNNLSTMHyperModel):
    family = "cnn_lstm_att"

    def body(self, hp, inputs):
        x = self._recurrent(hp, self._sequence(hp, inputs), return_sequences=True)
        return AttentionPooling(self._hp(hp, "attention_units"), name="attention")(x)


HYPERMODELS = {
    "cnn": CNNHyperModel,
    "lstm": LSTMHyperModel,
    "cnn_lstm": CNNLSTMHyperModel,
    "cnn_lstm_att": CNNLSTMAttentionHyperModel,
}


def make_hypermodel(family: str, input_shape, num_classes: int, space_file: str | Path = "baselines.yaml",
                    jit_compile: bool = False, recipe=None) -> BaselineHyperModel:
    """The HyperModel of ``family`` with its search space read from ``space_file``."""
    if family not in HYPERMODELS:
        raise ValueError(f"family: expected one of {FAMILIES}, received {family!r}")
    space = load_space(family, space_file)
    return HYPERMODELS[family](input_shape, num_classes, space=space, jit_compile=jit_compile, recipe=recipe)


def count_combinations(space: dict) -> float:
    """Number of distinct settings of a space (inf when a float range has no step)."""
    total = 1.0
    for spec in space.values():
        if spec["kind"] == "fixed":
            continue
        if spec["kind"] in ("choice", "bool"):
            total *= len(set(spec["choices"]))
        elif spec["step"] is None:
            return math.inf
        else:
            total *= int(round((spec["max"] - spec["min"]) / spec["step"])) + 1
    return total
