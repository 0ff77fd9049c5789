"""A tiny searchable backbone with SearchBackbone's interface, and synthetic data, for the search tests.

Three one-node "cells" (normal, reduce, seq), each with two mixed edges over a few candidate ops, on
dense features: small enough for float64 finite differences and for a search of a few seconds. The op
names are real primitive names (so that genotypes validate); what they compute here is:

- ``none``: zero; ``skip_connect``: identity;
- ``avg_pool_3x3`` / ``rnn_1``: a fixed non-trainable projection onto the feature mean (loses the signal);
- ``sep_conv_3x3`` / ``lstm_1``: the "solver", the only op that can represent a non-linear decision:
  a trainable Dense + tanh (``solver="tanh"``, smooth, for the finite-difference tests) or the fixed
  square ``x ** 2`` (``solver="square"``, for the synthetic search: with a linear stem and a linear
  classifier, only this op makes the ring task ``x0^2 + x1^2 > median`` solvable).

``cells`` picks which cells the network applies (in order); the alphas of every kind exist regardless
(a genotype needs all three), and the alphas of an unused cell get zero gradients.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from emodarts_tf.config import load_config
from emodarts_tf.search_space.genotype import derive_genotype

CNN_OPS = ("none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3")
SEQ_OPS = ("none", "skip_connect", "lstm_1", "rnn_1")
SOLVER = {"cnn": "sep_conv_3x3", "seq": "lstm_1"}


class _MixedEdge(keras.layers.Layer):
    def __init__(self, op_names, units, solver="tanh", norm=False, **kwargs):
        super().__init__(**kwargs)
        self.op_names = tuple(op_names)
        self.units = units
        self.solver_kind = solver
        self.solver = keras.layers.Dense(units, activation="tanh", name="solver", dtype=self.dtype_policy)
        # As in DARTS, a non-affine batch norm after each op keeps the ops' output scales comparable, so
        # that the alphas measure usefulness rather than magnitude.
        self.norms = {
            name: keras.layers.BatchNormalization(center=False, scale=False, name=f"bn_{name}", dtype=self.dtype_policy)
            for name in self.op_names if norm and name != "none"
        }

    def build(self, input_shape):
        self.solver.build(input_shape)
        for bn in self.norms.values():
            bn.build(input_shape)

    def call(self, x, w, training=None):
        out = 0.0
        for i, name in enumerate(self.op_names):
            if name == "none":
                continue
            if name == "skip_connect":
                y = x
            elif name in ("avg_pool_3x3", "rnn_1"):
                y = ops.broadcast_to(ops.mean(x, axis=-1, keepdims=True), ops.shape(x))
            elif self.solver_kind == "square":
                y = ops.square(x)
            else:
                y = self.solver(x)
            if name in self.norms:
                y = self.norms[name](y, training=training)
            out = out + w[i] * y
        return out


class _Cell(keras.layers.Layer):
    """One node over two inputs: node = edge0(s0) + edge1(s1)."""

    def __init__(self, op_names, units, solver="tanh", norm=False, **kwargs):
        super().__init__(**kwargs)
        self.edges = [
            _MixedEdge(op_names, units, solver, norm, name=f"edge{i}", dtype=self.dtype_policy) for i in range(2)
        ]

    def build(self, input_shape):
        for e in self.edges:
            e.build(input_shape)

    def call(self, s0, s1, w, training=None):
        return self.edges[0](s0, w[0], training=training) + self.edges[1](s1, w[1], training=training)


@keras.saving.register_keras_serializable(package="emodarts_tf_tests")
class TinyBackbone(keras.layers.Layer):
    """``call(x, weights, training)`` -> logits, like SearchBackbone, with (2, 4) alphas per cell kind."""

    def __init__(self, num_classes=2, units=8, solver="tanh", cells=("normal", "reduce", "seq"), norm=False,
                 shared_stem=False, stem=True, **kwargs):
        super().__init__(**kwargs)
        self.shared_stem = shared_stem
        self.stem = stem
        self.num_classes = num_classes
        self.units = units
        self.solver = solver
        self.norm = norm
        self.cells = tuple(cells)
        self.cnn_ops = CNN_OPS
        self.seq_ops = SEQ_OPS
        d = self.dtype_policy
        self.flatten = keras.layers.Flatten(dtype=d)
        self.stem0 = keras.layers.Dense(units, name="stem0", dtype=d)
        self.stem1 = keras.layers.Dense(units, name="stem1", dtype=d)
        self.normal = _Cell(CNN_OPS, units, solver, norm, name="normal", dtype=d)
        self.reduce = _Cell(CNN_OPS, units, solver, norm, name="reduce", dtype=d)
        self.seq = _Cell(SEQ_OPS, units, solver, norm, name="seq", dtype=d)
        self.classifier = keras.layers.Dense(num_classes, name="classifier", dtype=d)

    def alpha_shapes(self):
        return {"normal": (2, len(CNN_OPS)), "reduce": (2, len(CNN_OPS)), "seq": (2, len(SEQ_OPS))}

    def derive_genotype(self, alphas, max_skip=None, meta=None, edges=None):
        """One node per cell, as SearchBackbone.derive_genotype derives it."""
        alphas = {k: keras.ops.convert_to_numpy(v) for k, v in alphas.items()}
        return derive_genotype(alphas, CNN_OPS, SEQ_OPS, 1, 1, max_skip=max_skip, meta=meta, edges=edges)

    def build(self, input_shape):
        flat = (input_shape[0], int(np.prod(input_shape[1:])))
        self.stem0.build(flat)
        self.stem1.build(flat)
        width = self.units if self.stem else flat[1]
        for cell in (self.normal, self.reduce, self.seq):
            cell.build((input_shape[0], width))
        self.classifier.build((input_shape[0], width))

    def call(self, x, weights, training=None):
        f = self.flatten(x)
        if not self.stem:
            s0 = s1 = f
        else:
            s0 = self.stem0(f)
            s1 = s0 if self.shared_stem else self.stem1(f)
        for kind in self.cells:
            s0, s1 = s1, getattr(self, kind)(s0, s1, weights[kind], training=training)
        return self.classifier(s1)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "units": self.units, "solver": self.solver,
                       "cells": list(self.cells), "norm": self.norm,
                       "shared_stem": self.shared_stem, "stem": self.stem})
        return config


def xor_data(n, shape=(4, 4, 1), seed=0, dtype="float32"):
    """Inputs ~ N(0, 1); label 1 where x[0] * x[1] > 0 (a task no linear read-out can solve)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + tuple(shape)).astype(dtype)
    flat = x.reshape(n, -1)
    y = (flat[:, 0] * flat[:, 1] > 0).astype("int32")
    return x, y


def ring_data(n, shape=(4, 4, 1), seed=0, dtype="float32"):
    """Inputs ~ N(0, 1); label 1 where x0^2 + x1^2 > 1.386 (the chi-square(2) median: balanced classes)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + tuple(shape)).astype(dtype)
    flat = x.reshape(n, -1)
    y = (flat[:, 0] ** 2 + flat[:, 1] ** 2 > 1.386).astype("int32")
    return x, y


def search_dataset(n=64, batch=16, seed=0, dtype="float32", shape=(4, 4, 1), task="xor"):
    """Zipped, repeated (weights part, alphas part) batches, deterministic."""
    make = ring_data if task == "ring" else xor_data
    xw, yw = make(n, shape, seed=seed, dtype=dtype)
    xa, ya = make(n, shape, seed=seed + 1, dtype=dtype)
    w = tf.data.Dataset.from_tensor_slices((xw, yw)).batch(batch, drop_remainder=True)
    a = tf.data.Dataset.from_tensor_slices((xa, ya)).batch(batch, drop_remainder=True)
    return tf.data.Dataset.zip((w.repeat(), a.repeat())), n // batch


# A micro search space: every cell kind, 1 node each, a few candidate ops, 2 steps per epoch.
MICRO = [
    "space.init_channels=2",
    "space.stem_multiplier=1",
    "space.cnn_cells=3",
    "space.cnn_nodes=1",
    "space.seq_nodes=1",
    "space.seq_hidden=8",
    "space.cnn_ops=[none,skip_connect,max_pool_3x3,sep_conv_3x3]",
    "space.seq_ops=[none,skip_connect,rnn_1]",
    "search.steps_per_epoch=2",
]


def micro_config(cache, *overrides):
    """The demo config with the micro space, its features cached in ``cache``."""
    return load_config("demo", overrides=[*MICRO, f"data.cache_dir={cache}", *overrides])


def check_genotype_of_entry(fold_dir, config, entry) -> None:
    """``fold_dir/genotype.json`` is the genotype that the alpha history ``entry``'s mixing weights derive (log-weights
    are valid alphas: the row softmax gives them back), with its edge weights under edge normalisation."""
    from emodarts_tf.search_space.genotype import Genotype
    from emodarts_tf.search_space.primitives import resolve_ops

    with np.errstate(divide="ignore"):
        alphas = {k: np.log(np.asarray(v)) for k, v in entry["weights"].items()}
    edges = {k: np.asarray(v) for k, v in entry["edges"].items()} if config.search.edge_norm else None
    expected = derive_genotype(alphas, resolve_ops(config.space.cnn_ops, "cnn"), resolve_ops(config.space.seq_ops, "seq"),
                               config.space.cnn_nodes, config.space.seq_nodes, max_skip=config.search.max_skip,
                               edges=edges)
    final = Genotype.load(fold_dir / "genotype.json")
    for kind in ("normal", "reduce", "seq"):
        assert [[tuple(e) for e in node] for node in getattr(final, kind)] == \
            [[tuple(e) for e in node] for node in getattr(expected, kind)], kind


def model_checkpoint(run_dir) -> dict:
    """``{name: array}`` of the model variables in the latest checkpoint of ``run_dir/fold1``."""
    path = tf.train.latest_checkpoint(str(run_dir / "fold1" / "checkpoints"))
    ckpt = tf.train.load_checkpoint(path)
    return {n: ckpt.get_tensor(n) for n, _ in tf.train.list_variables(path) if n.startswith("model/")}


class Killed(Exception):
    pass


class KillAfter(keras.callbacks.Callback):
    """Simulates a kill after epoch ``n`` (after its checkpoint was written)."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.n:
            raise Killed()
