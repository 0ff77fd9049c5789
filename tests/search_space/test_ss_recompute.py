"""Gradient checkpointing of the CNN mixed ops: with the same weights, recompute=True gives the same
outputs, gradients (input, mixing weights, every trainable variable) and moving statistics (updated once)
as recompute=False, eagerly and in tf.function, under an alphas-only tape, under mixed precision, in the
search's first- and second-order steps and under MirroredStrategy; configs and BatchNormalization serialisation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.config import SearchSpaceConfig
from emodarts_tf.search.model import SearchModel
from emodarts_tf.search_space import operations
from emodarts_tf.search_space.cnn_cell import SearchCNNCell
from emodarts_tf.search_space.mixed_op import MixedOp, MixedSeqOp
from emodarts_tf.search_space.network import SearchBackbone
from emodarts_tf.search_space.operations import BatchNormalization, batch_norm
from emodarts_tf.search_space.primitives import CNN_PRIMITIVES
from emodarts_tf.search_space.recompute import is_recomputing, recompute_grad

SHAPE = (9, 8, 1)  # an odd size on purpose
SPACE = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=2, stem_multiplier=2, seq_cells=0)
SMALL_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]


def _x(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype("float32"))


def _pair(make, build):
    """The same layer twice, without and with recomputation, with identical weights."""
    plain, checkpointed = make(False), make(True)
    build(plain)
    build(checkpointed)
    checkpointed.set_weights(plain.get_weights())
    return plain, checkpointed


def _run(layer, inputs, weights, graph: bool, arch_only: bool = False):
    """Output, gradients (inputs, mixing weights, then trainable variables) and moving statistics."""

    def step(inputs, weights):
        with tf.GradientTape(watch_accessed_variables=not arch_only) as tape:
            tape.watch([inputs, weights])
            y = layer(inputs, weights, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.cos(tf.cast(y, tf.float32)))
        variables = [] if arch_only else layer.trainable_variables
        return y, tape.gradient(loss, [inputs, weights] + variables)

    fn = tf.function(step) if graph else step
    y, grads = fn(inputs, weights)
    stats = [v.numpy().copy() for v in layer.non_trainable_variables]
    return y.numpy(), [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads], stats


class _CellOn(keras.layers.Layer):
    """``cell([x, s1])`` (``s1=None``: ``cell([x, x])``) as a layer of one input, for :func:`_run`."""

    def __init__(self, cell, s1=None, **kwargs):
        super().__init__(name="cell_on", **kwargs)
        self.cell = cell
        self.s1 = s1

    def call(self, x, weights, training=None):
        return self.cell([x, x if self.s1 is None else self.s1], weights, training=training)


def _assert_same(plain, checkpointed, atol=1e-5):
    (y0, g0, s0), (y1, g1, s1) = plain, checkpointed
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=atol)
    assert len(g0) == len(g1)
    for i, (a, b) in enumerate(zip(g0, g1)):
        assert (a is None) == (b is None), i
        if a is not None:
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=atol, err_msg=f"gradient {i}")
    assert len(s0) == len(s1) > 0
    for a, b in zip(s0, s1):  # moving statistics: updated once by the forward, not again by the recomputation
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("stride,graph", [(1, False), (2, True)])
def test_mixed_op_same_values_gradients_and_moving_statistics(stride, graph):
    x = _x((2, 9, 8, 4))
    w = tf.nn.softmax(_x((len(CNN_PRIMITIVES),), seed=1))
    plain, checkpointed = _pair(lambda rc: MixedOp(CNN_PRIMITIVES, 4, stride, recompute=rc), lambda m: m.build(x.shape))
    assert checkpointed.recompute and not plain.recompute
    _assert_same(_run(plain, x, w, graph), _run(checkpointed, x, w, graph))


def test_recomputation_happens_and_bn_updates_once(monkeypatch):
    """The backward really recomputes (the flag is seen set), and the moving mean is one momentum step."""
    seen = []

    def spy():
        flag = is_recomputing()
        seen.append(flag)
        return flag

    monkeypatch.setattr(operations, "is_recomputing", spy)
    x = _x((4, 6, 6, 3))
    mixed = MixedOp(("none", "max_pool_3x3"), 3, 1, recompute=True)
    mixed.build(x.shape)
    bn = mixed.op_layer("max_pool_3x3").norm
    w = tf.constant([0.3, 0.7])
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = tf.reduce_sum(mixed(x, w, training=True))
    assert seen == [False]  # the forward
    tape.gradient(loss, w)
    assert seen == [False, True]  # the recomputation
    pooled = keras.layers.MaxPooling2D(3, 1, padding="same")(x).numpy()
    expected = (1.0 - operations.BN_MOMENTUM) * pooled.mean(axis=(0, 1, 2))  # from the initial zeros, once
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not is_recomputing()


@pytest.mark.parametrize("graph", [False, True])
def test_cell_same_values_gradients_and_moving_statistics(graph):
    s0, s1 = _x((2, 10, 9, 3)), _x((2, 5, 5, 5), seed=2)
    w = tf.nn.softmax(_x((5, len(CNN_PRIMITIVES)), seed=3))

    def make(rc):
        return SearchCNNCell(2, 4, reduction=True, reduction_prev=True, ops=CNN_PRIMITIVES, recompute=rc)

    plain, checkpointed = _pair(make, lambda c: c.build([s0.shape, s1.shape]))
    assert all(edge.recompute for edge in checkpointed.edges)
    _assert_same(_run(_CellOn(plain, s1), s0, w, graph), _run(_CellOn(checkpointed, s1), s0, w, graph))


def test_cell_alphas_only_tape_in_tf_function():
    """SearchModel's wrt="arch" pass: watch_accessed_variables=False, only the mixing weights watched."""
    s = _x((2, 8, 8, 4))
    w = tf.nn.softmax(_x((5, len(SMALL_OPS)), seed=4))

    def make(rc):
        return SearchCNNCell(2, 4, reduction=False, reduction_prev=False, ops=tuple(SMALL_OPS), recompute=rc)

    plain, checkpointed = _pair(make, lambda c: c.build([s.shape, s.shape]))
    a, b = (_run(_CellOn(c), s, w, graph=True, arch_only=True) for c in (plain, checkpointed))
    _assert_same(a, b)
    assert np.abs(b[1][1]).sum() > 0  # the mixing weights get a gradient


def test_backbone_same_logits_and_gradients():
    x = _x((2,) + SHAPE)
    plain, checkpointed = _pair(lambda rc: SearchBackbone(SPACE, SHAPE, 3, recompute=rc),
                                lambda net: net.build((2,) + SHAPE))
    assert all(cell.recompute for cell in checkpointed.cnn_cells)
    weights = {k: tf.nn.softmax(_x(s, seed=i)) for i, (k, s) in enumerate(plain.alpha_shapes().items())}
    results = []
    for net in (plain, checkpointed):
        with tf.GradientTape() as tape:
            tape.watch(list(weights.values()))
            logits = net(x, weights, training=True)
            loss = tf.reduce_sum(logits ** 2)
        grads = tape.gradient(loss, [weights["normal"], weights["reduce"]] + net.trainable_variables)
        results.append((logits.numpy(), [g.numpy() for g in grads],
                        [v.numpy().copy() for v in net.non_trainable_variables]))
    _assert_same(*results)
    # inference does not go through the checkpoint, and gives the same logits
    np.testing.assert_allclose(checkpointed(x, weights, training=False), plain(x, weights, training=False),
                               rtol=1e-5, atol=1e-6)


def test_mixed_precision_same_values_and_gradients():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x = _x((2, 8, 8, 4))
        w = tf.nn.softmax(_x((len(CNN_PRIMITIVES),), seed=5))
        plain, checkpointed = _pair(lambda rc: MixedOp(CNN_PRIMITIVES, 4, 1, recompute=rc), lambda m: m.build(x.shape))
        a, b = (_run(m, tf.cast(x, "float16"), w, graph=True) for m in (plain, checkpointed))
        assert b[0].dtype == np.float16
        _assert_same(a, b, atol=1e-3)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _search_model(recompute: bool, order: str) -> SearchModel:
    space = SearchSpaceConfig(init_channels=2, cnn_cells=2, cnn_nodes=1, stem_multiplier=1, seq_cells=0,
                              cnn_ops=SMALL_OPS)
    model = SearchModel(SearchBackbone(space, (8, 8, 1), 3, recompute=recompute), input_shape=(8, 8, 1), seed=0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.03), order=order)
    return model


@pytest.mark.parametrize("order", ["first", "second"])
def test_search_model_step_matches_without_recompute(order):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 4).astype("int32")
    data = tf.data.Dataset.from_tensors(((x, y), (x[::-1].copy(), y[::-1].copy()))).repeat()
    after = []
    for recompute in (False, True):
        model = _search_model(recompute, order)
        if after:
            model.set_weights(before)
        before = model.get_weights()
        model.fit(data, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
        after.append(model.get_weights())
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after[0]))  # the step moved something
    for a, b in zip(after[0], after[1]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


MIRRORED_SCRIPT = r"""
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from test_ss_recompute import _search_model

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
x, y = rng.normal(size=(4, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 4).astype("int32")
data = tf.data.Dataset.from_tensors(((x, y), (x[::-1].copy(), y[::-1].copy()))).repeat()
after = []
for recompute in (False, True):
    with strategy.scope():
        model = _search_model(recompute, "second")
    if after:
        model.set_weights(before)
    before = model.get_weights()
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    after.append(model.get_weights())
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "diff": max(float(np.abs(a - b).max()) for a, b in zip(*after)),
                  "moved": max(float(np.abs(a - b).max()) for a, b in zip(before, after[0]))}))
"""


@pytest.mark.slow
def test_second_order_step_under_mirrored_strategy_matches_without_recompute():
    here = Path(__file__).resolve().parent
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([str(here), str(here.parent.parent)]))
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=600, cwd=here)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["moved"] > 0
    assert result["diff"] < 1e-5


def test_recompute_grad_helper_on_a_plain_function_and_a_layer():
    dense = keras.layers.Dense(3)
    dense.build((2, 4))
    x = _x((2, 4))

    def f(x, s):
        return s * dense(tf.nn.relu(x))

    g = recompute_grad(f)
    s = tf.constant(0.5)
    results = []
    for fn in (f, g):
        with tf.GradientTape() as tape:
            tape.watch([x, s])
            y = tf.reduce_sum(fn(x, s) ** 2)
        results.append(tape.gradient(y, [x, s] + dense.trainable_variables))
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    # no variables at all
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(recompute_grad(lambda t: tf.sin(t) * t)(x))
    np.testing.assert_allclose(tape.gradient(y, x), np.cos(x) * x + np.sin(x), rtol=1e-6)
    with pytest.raises(ValueError, match="fn: expected a callable"):
        recompute_grad(3)


def test_configs_round_trip_and_bad_arguments_are_named():
    mixed = MixedOp(CNN_PRIMITIVES, 4, 2, recompute=True)
    assert MixedOp.from_config(mixed.get_config()).recompute is True
    assert MixedOp.from_config(MixedOp(CNN_PRIMITIVES, 4).get_config()).recompute is False
    assert "recompute" not in MixedSeqOp(("none", "skip_connect"), 4).get_config()
    cell = SearchCNNCell(1, 4, False, False, recompute=True)
    clone = SearchCNNCell.from_config(cell.get_config())
    assert clone.recompute and all(edge.recompute for edge in clone.edges)
    net = SearchBackbone(SPACE, SHAPE, 3, recompute=True)
    clone = SearchBackbone.from_config(net.get_config())
    assert clone.recompute and all(c.recompute for c in clone.cnn_cells)
    assert SearchBackbone(SPACE, SHAPE, 3).get_config()["recompute"] is False
    with pytest.raises(ValueError, match="recompute: expected False for SeqNN ops"):
        MixedOp(("none", "skip_connect"), 4, kind="seq", recompute=True)
    with pytest.raises(ValueError, match="recompute: expected a bool, received 1"):
        MixedOp(CNN_PRIMITIVES, 4, recompute=1)
    with pytest.raises(ValueError, match="recompute: expected a bool, received 'yes'"):
        SearchCNNCell(1, 4, False, False, recompute="yes")
    with pytest.raises(ValueError, match="recompute: expected a bool, received None"):
        SearchBackbone(SPACE, SHAPE, 3, recompute=None)


def test_batch_norm_is_the_registered_subclass_with_an_unchanged_config():
    bn = batch_norm(False, name="bn")
    assert isinstance(bn, BatchNormalization) and isinstance(bn, keras.layers.BatchNormalization)
    config = bn.get_config()
    assert config == keras.layers.BatchNormalization(**config).get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(bn))
    assert type(clone) is BatchNormalization and clone.get_config() == config
