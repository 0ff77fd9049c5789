"""Partial channel connections (PC-DARTS, ``MixedOp(partial_channels=K)``): the edge against a NumPy computation of
the published rule (mixture on the first C/K channels, the rest bypassed or max-pooled, then the channel shuffle),
recomputation, the settings' checks and the backbone's config."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.config import SearchSpaceConfig
from emodarts_tf.search_space.cnn_cell import SearchCNNCell
from emodarts_tf.search_space.mixed_op import MixedOp, MixedSeqOp, channel_shuffle
from emodarts_tf.search_space.network import SearchBackbone

OPS = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "dil_conv_3x3")


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _numpy_shuffle(x, groups):
    """Output channel ``j * groups + g`` is input channel ``g * C / groups + j`` (PyTorch's view-transpose-view)."""
    c = x.shape[-1]
    out = np.empty_like(x)
    for g in range(groups):
        for j in range(c // groups):
            out[..., j * groups + g] = x[..., g * (c // groups) + j]
    return out


def _numpy_max_pool_same(x, stride):
    """Max over non-overlapping ``stride`` windows, the last window of an odd axis holding the rows that are left."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    b, h, w, c = x.shape
    hh, ww = -(-h // sh), -(-w // sw)
    out = np.empty((b, hh, ww, c), x.dtype)
    for i in range(hh):
        for j in range(ww):
            out[:, i, j] = x[:, i * sh:(i + 1) * sh, j * sw:(j + 1) * sw].max(axis=(1, 2))
    return out


def test_channel_shuffle_interleaves_the_groups():
    x = _x((2, 3, 4, 12))
    for groups in (1, 2, 3, 4):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(channel_shuffle(x, groups)), _numpy_shuffle(x, groups))


@pytest.mark.parametrize("stride", [1, 2, (2, 1)])
@pytest.mark.parametrize("k", [2, 4])
def test_edge_equals_the_published_rule(stride, k):
    """Mixture of the candidates on the first C/K channels, the rest as they are (or max-pooled at the stride),
    concatenated and shuffled in K groups, computed here in NumPy from the edge's own candidate layers."""
    channels = 8
    x = _x((2, 7, 5, channels))
    edge = MixedOp(OPS, channels, stride, partial_channels=k)
    weights = np.random.default_rng(1).dirichlet(np.ones(len(OPS))).astype("float32")
    y = keras.ops.convert_to_numpy(edge(x, weights, training=False))

    part, rest = x[..., :channels // k], x[..., channels // k:]
    mixture = sum(weights[i] * keras.ops.convert_to_numpy(edge.op_layer(op)(part, training=False))
                  for i, op in enumerate(OPS) if op != "none")
    if stride != 1:
        rest = _numpy_max_pool_same(rest, stride)
    expected = _numpy_shuffle(np.concatenate([mixture, rest * weights.sum()], axis=-1), k)
    assert y.shape == expected.shape == edge.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # The candidates are built for C/K channels: 1/K of the weights of a full edge's convolutions.
    full = MixedOp(OPS, channels, stride)
    full(x, weights)
    assert edge.op_layer("sep_conv_3x3").count_params() < full.op_layer("sep_conv_3x3").count_params()
    assert {v.shape[-2] for v in edge.op_layer("sep_conv_3x3").weights if len(v.shape) == 4} == {channels // k}


@pytest.mark.parametrize("stride", [1, 2])
def test_edge_normalisation_scales_the_whole_edge(stride):
    """Under edge normalisation the mixing weights are the op weights times the edge weight ``b``; PC-DARTS multiplies
    the whole edge (bypassed channels included) by ``b``."""
    x = _x((2, 6, 5, 8))
    edge = MixedOp(OPS, 8, stride, partial_channels=2)
    ops_weights = np.random.default_rng(4).dirichlet(np.ones(len(OPS))).astype("float32")
    plain = keras.ops.convert_to_numpy(edge(x, ops_weights, training=False))
    for b in (0.0, 0.3):
        scaled = keras.ops.convert_to_numpy(edge(x, b * ops_weights, training=False))
        np.testing.assert_allclose(scaled, b * plain, rtol=1e-5, atol=1e-6)


def test_mixing_weight_gradients_are_the_candidates_outputs_on_the_part():
    x = _x((2, 6, 5, 8))
    edge = MixedOp(OPS, 8, 1, partial_channels=2)
    weights = tf.constant(np.full(len(OPS), 1 / len(OPS), "float32"))
    probe = _x((2, 6, 5, 8), seed=3)
    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = tf.reduce_sum(edge(x, weights, training=False) * probe)
    grad = tape.gradient(loss, weights).numpy()
    # d loss / d w_i = <probe at the mixture's channels after the shuffle, op_i(part)> + <probe at the rest, rest>
    unshuffled = np.empty_like(probe)
    shuffled_index = _numpy_shuffle(np.arange(8, dtype="float32").reshape(1, 1, 1, 8), 2).ravel().astype(int)
    unshuffled[..., shuffled_index] = probe
    # The bypassed channels are scaled by the sum of the weights: each weight's gradient also has their share.
    bypass = np.sum(x[..., 4:] * unshuffled[..., 4:])
    np.testing.assert_allclose(grad[0], bypass, rtol=1e-4, atol=1e-4)
    for i, op in enumerate(OPS[1:], start=1):
        y = keras.ops.convert_to_numpy(edge.op_layer(op)(x[..., :4], training=False))
        np.testing.assert_allclose(grad[i], np.sum(y * unshuffled[..., :4]) + bypass, rtol=1e-4, atol=1e-4)


def test_recomputation_gives_the_same_values_and_gradients():
    x = _x((2, 6, 6, 8))
    weights = np.random.default_rng(2).dirichlet(np.ones(len(OPS))).astype("float32")
    results = []
    for recompute in (False, True):
        keras.utils.set_random_seed(0)
        edge = MixedOp(OPS, 8, 2, recompute=recompute, partial_channels=2)
        edge(x, weights, training=True)
        xt, wt = tf.constant(x), tf.constant(weights)
        with tf.GradientTape() as tape:
            tape.watch([xt, wt])
            y = edge(xt, wt, training=True)
            loss = tf.reduce_sum(y * y)
        grads = tape.gradient(loss, [xt, wt, *edge.trainable_variables])
        results.append((y.numpy(), [g.numpy() for g in grads]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="partial_channels: expected a divisor of the edge's 6 channels"):
        MixedOp(OPS, 6, 1, partial_channels=4)
    with pytest.raises(ValueError, match="partial_channels: expected an integer >= 1"):
        MixedOp(OPS, 8, 1, partial_channels=0)
    with pytest.raises(ValueError, match="partial_channels: expected 1 for SeqNN ops"):
        MixedOp(("none", "skip_connect"), 8, kind="seq", partial_channels=2)
    with pytest.raises(ValueError, match="partial_channels: expected a divisor"):
        SearchCNNCell(2, 6, False, False, OPS, partial_channels=4)
    space = SearchSpaceConfig(init_channels=3, cnn_cells=3, cnn_nodes=1, seq_cells=1, seq_nodes=1, seq_hidden=4)
    with pytest.raises(ValueError, match=r"space.init_channels 3 gives cells of \[3\]\), received 2"):
        SearchBackbone(space, (8, 8, 1), 4, partial_channels=2)
    thin = SearchSpaceConfig(init_channels=2, stem_multiplier=1, cnn_cells=2, cnn_nodes=1, seq_cells=1, seq_nodes=1,
                             seq_hidden=4, cnn_ops=list(OPS))
    with pytest.raises(ValueError, match=r"at least 2 channels per reduction edge .* cells of \[4\] channels"):
        SearchBackbone(thin, (8, 8, 1), 4, partial_channels=4)
    SearchBackbone(dataclasses.replace(thin, cnn_ops=["none", "sep_conv_3x3"]), (8, 8, 1), 4, partial_channels=4)
    edge = MixedOp(OPS, 8, 1, partial_channels=2)
    with pytest.raises(ValueError, match="expected inputs of 8 channels"):
        edge.build((2, 6, 6, 4))


def test_config_round_trips_and_the_seq_op_ignores_it():
    edge = MixedOp(OPS, 8, (2, 1), partial_channels=4)
    again = MixedOp.from_config(edge.get_config())
    assert again.partial_channels == 4 and again.mixed_channels == 2
    assert "partial_channels" not in MixedSeqOp(("none", "skip_connect"), 4).get_config()
    space = SearchSpaceConfig(init_channels=4, cnn_cells=3, cnn_nodes=1, seq_cells=1, seq_nodes=1, seq_hidden=4,
                              cnn_ops=list(OPS), seq_ops=["none", "skip_connect", "rnn_1"])
    net = SearchBackbone(space, (8, 8, 1), 4, partial_channels=2)
    rebuilt = SearchBackbone.from_config(net.get_config())
    assert rebuilt.partial_channels == 2
    assert {e.partial_channels for cell in rebuilt.cnn_cells for e in cell.edges} == {2}
    weights = {k: keras.ops.softmax(keras.ops.zeros(s)) for k, s in net.alpha_shapes().items()}
    x = _x((2, 8, 8, 1))
    assert tuple(net(x, weights).shape) == (2, 4)
