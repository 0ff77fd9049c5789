"""CNN candidate ops: shapes at any size, values against independent NumPy computations, configs."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from emodarts_tf.search_space.operations import (
    BN_EPSILON,
    DilConv,
    FactorizedReduce,
    Identity,
    PoolBN,
    ReLUConvBN,
    SepConv,
    Zero,
)
from emodarts_tf.search_space.op_registry import make_cnn_op
from emodarts_tf.search_space.primitives import CNN_PRIMITIVES

BN_SCALE = 1.0 / math.sqrt(1.0 + BN_EPSILON)  # a fresh BN at inference: (x - 0) / sqrt(1 + eps)


def _x(h, w, c=4, b=2, seed=0):
    return np.random.default_rng(seed).normal(size=(b, h, w, c)).astype("float32")


@pytest.mark.parametrize("stride", [1, 2, (2, 1)])
def test_every_op_outputs_ceil_size(stride):
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    for op in CNN_PRIMITIVES:
        for h, w in ((8, 8), (7, 9), (1, 5)):
            layer = make_cnn_op(op, 4, stride, affine=False, pool_bn=True)
            y = layer(_x(h, w), training=True)
            case = f"{op} stride {stride} input {h}x{w}"
            assert tuple(y.shape) == (2, math.ceil(h / sh), math.ceil(w / sw), 4), case
            assert tuple(layer.compute_output_shape((2, h, w, 4))) == tuple(y.shape), case


def test_skip_connect_is_identity_at_stride_1_and_factorized_reduce_at_2():
    assert isinstance(make_cnn_op("skip_connect", 4, 1), Identity)
    assert isinstance(make_cnn_op("skip_connect", 4, 2), FactorizedReduce)
    x = _x(5, 5)
    np.testing.assert_array_equal(make_cnn_op("skip_connect", 4, 1)(x), x)


def test_zero_is_zero_and_strided():
    y = Zero(stride=2)(_x(7, 8))
    assert tuple(y.shape) == (2, 4, 4, 4)
    assert not np.any(keras.ops.convert_to_numpy(y))
    assert tuple(Zero(stride=1, channels=6)(_x(3, 3)).shape) == (2, 3, 3, 6)


def _np_pool(x, kind):
    """3x3 stride-1 pooling over the valid neighbours only (count_include_pad=False)."""
    b, h, w, c = x.shape
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            win = x[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, :]
            out[:, i, j, :] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_numpy_without_counting_padding(kind):
    x = _x(5, 6)
    y = PoolBN(kind, stride=1)(x)
    np.testing.assert_allclose(y, _np_pool(x, kind), rtol=1e-5, atol=1e-6)


def test_pool_bn_is_non_affine_in_search():
    layer = make_cnn_op("max_pool_3x3", 4, 1, affine=False, pool_bn=True)
    layer.build((2, 8, 8, 4))
    assert layer.trainable_weights == []
    assert len(layer.non_trainable_weights) == 2  # moving mean and variance
    plain = make_cnn_op("avg_pool_3x3", 4, 2)
    plain.build((2, 8, 8, 4))
    assert plain.weights == []


def _np_depthwise(x, kernel, dilation):
    """'same' depthwise convolution, stride 1, symmetric zero padding (odd effective kernel)."""
    k = kernel.shape[0]
    pad = dilation * (k - 1) // 2
    xp = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    for a in range(k):
        for b in range(k):
            out += xp[:, a * dilation:a * dilation + h, b * dilation:b * dilation + w, :] * kernel[a, b, :, 0]
    return out


def test_dil_conv_matches_numpy():
    x = _x(7, 6, c=3)
    for stride in (1, 2):
        for kernel_size in (3, 5):
            layer = DilConv(5, kernel_size, stride, dilation=2, affine=True)
            y = keras.ops.convert_to_numpy(layer(x, training=False))
            dw = keras.ops.convert_to_numpy(layer.depthwise.kernel)
            pw = keras.ops.convert_to_numpy(layer.pointwise.kernel)[0, 0]
            expected = _np_depthwise(np.maximum(x, 0), dw, 2)[:, ::stride, ::stride, :] @ pw * BN_SCALE
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5, err_msg=f"{kernel_size} {stride}")


def test_sep_conv_is_two_stacked_blocks():
    x = _x(6, 6, c=4)
    layer = SepConv(4, 3, 1, affine=True)
    y = keras.ops.convert_to_numpy(layer(x, training=False))
    h = x
    for block in (layer.block1, layer.block2):
        dw = keras.ops.convert_to_numpy(block.depthwise.kernel)
        pw = keras.ops.convert_to_numpy(block.pointwise.kernel)[0, 0]
        h = _np_depthwise(np.maximum(h, 0), dw, 1) @ pw * BN_SCALE
    np.testing.assert_allclose(y, h, rtol=1e-4, atol=1e-5)


def test_factorized_reduce_odd_sizes_against_numpy():
    for h, w in ((8, 8), (7, 7), (9, 4), (1, 1)):
        x = _x(h, w, c=3)
        layer = FactorizedReduce(5)  # odd channel count: 2 + 3
        y = keras.ops.convert_to_numpy(layer(x, training=False))
        assert y.shape == (2, math.ceil(h / 2), math.ceil(w / 2), 5)
        r = np.maximum(x, 0)
        even = r[:, ::2, ::2]
        odd = np.zeros_like(even)  # odd rows/columns, zero past the end
        odd_part = r[:, 1::2, 1::2]
        odd[:, :odd_part.shape[1], :odd_part.shape[2]] = odd_part
        ka = keras.ops.convert_to_numpy(layer.conv_even.kernel)[0, 0]
        kb = keras.ops.convert_to_numpy(layer.conv_odd.kernel)[0, 0]
        expected = np.concatenate([even @ ka, odd @ kb], axis=-1) * BN_SCALE
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5, err_msg=f"{h}x{w}")


def test_relu_conv_bn_changes_channels():
    y = ReLUConvBN(6, 1, 1, affine=False)(_x(5, 3, c=4), training=True)
    assert tuple(y.shape) == (2, 5, 3, 6)


def test_affine_flag_controls_bn_parameters():
    names = lambda layer: [v.path for v in layer.trainable_weights]  # noqa: E731
    for op in CNN_PRIMITIVES:
        for stride in (1, 2):
            searched = make_cnn_op(op, 4, stride, affine=False, pool_bn=True)
            fixed = make_cnn_op(op, 4, stride, affine=True)
            searched.build((2, 8, 8, 4))
            fixed.build((2, 8, 8, 4))
            assert not any("gamma" in n or "beta" in n for n in names(searched)), op
            if op.startswith(("sep", "dil")) or (op == "skip_connect" and stride == 2):
                assert any("gamma" in n for n in names(fixed)), op


def test_get_config_round_trip():
    for layer in (Zero(2, 3), Identity(), PoolBN("avg", 2, bn=True), ReLUConvBN(4, 1, 2, affine=False),
                  DilConv(4, 5, 2, 2, affine=False), SepConv(4, 3, 2), FactorizedReduce(6, affine=False)):
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(restored) is type(layer)
        assert restored.get_config() == config


def test_make_cnn_op_rejects_bad_arguments():
    for kwargs, match in (
        ({"op_name": "conv_7x7", "channels": 4}, "op_name"),
        ({"op_name": "sep_conv_3x3", "channels": 0}, "channels"),
        ({"op_name": "sep_conv_3x3", "channels": 4, "stride": 3}, "stride"),
        ({"op_name": "skip_connect", "channels": 1, "stride": 2}, "channels"),
    ):
        with pytest.raises(ValueError, match=match):
            make_cnn_op(**kwargs)
    with pytest.raises(ValueError, match="pool_type"):
        PoolBN("min")
    with pytest.raises(ValueError, match="kernel_size"):
        DilConv(4, 4)


def test_frequency_only_stride_against_numpy():
    """Stride (2, 1) halves H (frequency) and keeps every W (time) position."""
    x = _x(7, 6, c=3)
    layer = DilConv(5, 3, (2, 1), dilation=2, affine=True)
    y = keras.ops.convert_to_numpy(layer(x, training=False))
    dw = keras.ops.convert_to_numpy(layer.depthwise.kernel)
    pw = keras.ops.convert_to_numpy(layer.pointwise.kernel)[0, 0]
    np.testing.assert_allclose(y, _np_depthwise(np.maximum(x, 0), dw, 2)[:, ::2, :, :] @ pw * BN_SCALE,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(Zero(stride=(2, 1))(x), np.zeros((2, 4, 6, 3)))
    for h, w in ((8, 5), (7, 3)):
        x = _x(h, w, c=3)
        layer = FactorizedReduce(4, stride=(2, 1))
        y = keras.ops.convert_to_numpy(layer(x, training=False))
        r = np.maximum(x, 0)
        even = r[:, ::2]
        odd = np.zeros_like(even)  # odd rows, zero past the end; every column
        odd[:, : r[:, 1::2].shape[1]] = r[:, 1::2]
        ka = keras.ops.convert_to_numpy(layer.conv_even.kernel)[0, 0]
        kb = keras.ops.convert_to_numpy(layer.conv_odd.kernel)[0, 0]
        np.testing.assert_allclose(y, np.concatenate([even @ ka, odd @ kb], axis=-1) * BN_SCALE,
                                   rtol=1e-4, atol=1e-5, err_msg=f"{h}x{w}")
    with pytest.raises(ValueError, match="halves at least one axis"):
        FactorizedReduce(4, stride=1)
    with pytest.raises(ValueError, match="stride: expected 1, 2 or a pair"):
        make_cnn_op("sep_conv_3x3", 4, (2, 3))


@pytest.mark.parametrize("stride", [(2, 1), (1, 2)])
def test_undilated_unequal_stride_equals_a_strided_convolution(stride):
    """An undilated depthwise convolution at stride (2, 1) or (1, 2), which TensorFlow's own depthwise kernel
    refuses (oneDNN's takes it), equals a "same"-padded strided ``tf.nn.conv2d`` with the depthwise kernel
    on the diagonal of a full kernel, at even and odd sizes."""
    import tensorflow as tf

    for h, w in ((8, 6), (7, 9), (6, 7)):
        for kernel_size in (3, 5):
            x = _x(h, w, c=3)
            layer = DilConv(5, kernel_size, stride, dilation=1, affine=True)
            y = keras.ops.convert_to_numpy(layer(x, training=False))
            dw = keras.ops.convert_to_numpy(layer.depthwise.kernel)[:, :, :, 0]  # (k, k, C)
            full = np.einsum("abc,cd->abcd", dw, np.eye(3, dtype="float32"))  # (k, k, C, C), diagonal in C
            conv = tf.nn.conv2d(np.maximum(x, 0), full, strides=[1, *stride, 1], padding="SAME").numpy()
            pw = keras.ops.convert_to_numpy(layer.pointwise.kernel)[0, 0]
            case = f"stride {stride} input {h}x{w} kernel {kernel_size}"
            assert y.shape == (2, math.ceil(h / stride[0]), math.ceil(w / stride[1]), 5), case
            np.testing.assert_allclose(y, conv @ pw * BN_SCALE, rtol=1e-4, atol=1e-5, err_msg=case)


@pytest.mark.parametrize("op", ["sep_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "skip_connect"])
def test_frequency_only_stride_is_time_equivariant(op):
    """Delaying the input by 2 frames delays the output by 2 frames (away from the borders): time is not
    subsampled, unlike at stride 2."""
    x = _x(8, 16, c=4, seed=3)
    x[:, :, -2:] = 0.0
    delayed = np.roll(x, 2, axis=2)
    layer = make_cnn_op(op, 4, (2, 1), affine=True)
    y = keras.ops.convert_to_numpy(layer(x, training=False))
    y_delayed = keras.ops.convert_to_numpy(layer(delayed, training=False))
    assert y.shape == (2, 4, 16, 4)
    np.testing.assert_allclose(y_delayed[:, :, 6:12], y[:, :, 4:10], rtol=1e-4, atol=1e-5)
    y2 = keras.ops.convert_to_numpy(make_cnn_op(op, 4, 2, affine=True)(x, training=False))
    assert y2.shape == (2, 4, 8, 4)
