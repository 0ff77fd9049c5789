"""MixedOp: one-hot weights give the plain op, weighted sums, gradients, mixed precision."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.search_space.mixed_op import MixedOp, MixedSeqOp
from emodarts_tf.search_space.primitives import CNN_PRIMITIVES, SEQ_PRIMITIVES

SEQ_SUBSET = ("none", "skip_connect", "lstm_1", "rnn_2", "lstm_att_1", "rnn_att_1")


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("stride", [1, 2])
def test_one_hot_weights_equal_the_plain_op(stride):
    x = _x((2, 7, 6, 4))
    mixed = MixedOp(CNN_PRIMITIVES, 4, stride)
    for i, op in enumerate(CNN_PRIMITIVES):
        weights = np.eye(len(CNN_PRIMITIVES), dtype="float32")[i]
        y_mixed = mixed(x, weights, training=True)
        y_plain = mixed.op_layer(op)(x, training=True)  # the same layer, the same variables
        np.testing.assert_allclose(y_mixed, y_plain, rtol=1e-5, atol=1e-6, err_msg=op)
    # `none` contributes zero
    y_none = mixed(x, np.eye(len(CNN_PRIMITIVES), dtype="float32")[0])
    assert not np.any(keras.ops.convert_to_numpy(y_none))


def test_weighted_sum_of_ops_and_none_skipped():
    x = _x((2, 6, 6, 4))
    mixed = MixedOp(CNN_PRIMITIVES, 4, 1)
    weights = np.random.default_rng(1).dirichlet(np.ones(len(CNN_PRIMITIVES))).astype("float32")
    y = keras.ops.convert_to_numpy(mixed(x, weights, training=False))
    expected = sum(weights[i] * keras.ops.convert_to_numpy(mixed.op_layer(op)(x, training=False))
                   for i, op in enumerate(CNN_PRIMITIVES) if op != "none")
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert len(mixed.candidates) == len(CNN_PRIMITIVES) - 1  # no layer computes `none`


def test_gradient_wrt_weights_is_each_op_output():
    x = _x((2, 5, 5, 4))
    ops = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
    mixed = MixedOp(ops, 4, 1)
    weights = tf.constant([0.1, 0.2, 0.3, 0.4])
    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = tf.reduce_sum(mixed(x, weights, training=False))
    grad = tape.gradient(loss, weights).numpy()
    assert grad[0] == 0.0
    for i, op in enumerate(ops[1:], start=1):
        np.testing.assert_allclose(grad[i], np.sum(mixed.op_layer(op)(x, training=False)), rtol=1e-4)


def test_only_none_gives_zeros_of_the_strided_shape():
    mixed = MixedOp(("none",), 4, 2)
    y = mixed(_x((2, 7, 7, 4)), np.ones(1, "float32"))
    assert tuple(y.shape) == (2, 4, 4, 4)


def test_mixed_seq_op_one_hot_equals_plain_op():
    x = _x((2, 5, 6))
    mixed = MixedSeqOp(SEQ_SUBSET, 6)
    assert mixed.units == 6
    for i, op in enumerate(SEQ_SUBSET):
        weights = np.eye(len(SEQ_SUBSET), dtype="float32")[i]
        np.testing.assert_allclose(mixed(x, weights), mixed.op_layer(op)(x), rtol=1e-5, atol=1e-6, err_msg=op)


def test_config_round_trips():
    for layer in (MixedOp(CNN_PRIMITIVES, 4, 2), MixedSeqOp(SEQ_PRIMITIVES, 8), MixedOp(SEQ_SUBSET, 4, kind="seq")):
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config
        assert clone.op_names == layer.op_names


def test_bad_arguments():
    for args, match in (
        ((("sep_conv_3x3", "lstm_1"), 4), "ops"), (((), 4), "ops"), ((("skip_connect", "skip_connect"), 4), "ops"),
        ((("lstm_1",), 4, 2, "seq"), "stride"), ((("lstm_1",), 4, 1, "rnn"), "kind"), (("skip_connect", 4), "ops"),
    ):
        with pytest.raises(ValueError, match=match):
            MixedOp(*args)


def test_mixed_precision_casts_weights():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = MixedOp(("skip_connect", "sep_conv_3x3", "avg_pool_3x3"), 4, 1)
        y = mixed(_x((2, 6, 6, 4)), np.array([0.2, 0.3, 0.5], "float32"), training=True)
        assert y.dtype == "float16"
        seq = MixedSeqOp(("skip_connect", "lstm_1", "lstm_att_1"), 4)
        assert seq(_x((2, 5, 4)), np.array([0.2, 0.3, 0.5], "float32")).dtype == "float16"
    finally:
        keras.config.set_dtype_policy("float32")
