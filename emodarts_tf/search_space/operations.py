"""The layers of the candidate CNN operations of the emoDARTS search space (DARTS ops), NHWC.

The op registry (:mod:`~emodarts_tf.search_space.op_registry`) builds them by name. Every op it builds
maps ``(B, H, W, C)`` to ``(B, ceil(H/s), ceil(W/s), channels)`` at stride ``s`` ("same" padding), for
any ``H`` and ``W``, odd ones included, so that cells work at any input size. Inside a cell the input already has ``channels`` channels (the cell's preprocessing sees
to that), as in DARTS.

Batch normalisation follows PyTorch's defaults as DARTS uses them (momentum 0.1 there, 0.9 in Keras'
convention; epsilon 1e-5); in the search every op's BN is non-affine (``affine=False``), in the
retrained network affine. Every BN is a :class:`BatchNormalization`, which skips its moving-statistics update
while a gradient checkpoint recomputes the forward (``recompute.py``), so that it updates once per step.
"""
from __future__ import annotations

import math

import keras
from keras import ops

from emodarts_tf.search_space.recompute import is_recomputing
from emodarts_tf.search_space.validation import check_int, check_rank, check_stride, stride_pair

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

_register = keras.saving.register_keras_serializable(package="emodarts_tf")


@_register
class BatchNormalization(keras.layers.BatchNormalization):
    # Named like its base class so that Keras files its weights under the same key
    # ("batch_normalization"): weights of a plain keras.layers.BatchNormalization load into it by name.
    """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel, and aware of gradient
    checkpointing.

    - On 4-D NHWC inputs (every BN of the CNN ops) the forward is one ``FusedBatchNormV3`` op and its
      gradient one ``FusedBatchNormGradV3``, instead of the ~45 ops Keras 3 builds from ``moments``. The
      paper's CNN search space has about 470 BNs, so this removes roughly half of the nodes of every
      traced search step (graph memory and tracing time) and is faster on CPUs. As in PyTorch (and so
      in DARTS), the moving variance averages the unbiased batch variance.
    - The training forward updates the moving statistics once; the recomputation of that forward in the
      backward pass (``MixedOp(recompute=True)``,
      :func:`~emodarts_tf.search_space.recompute.is_recomputing`) normalises with the same batch
      statistics but does not update them a second time.

    - Under MultiWorkerMirroredStrategy (``search.strategy`` / ``train.strategy: multi_worker``) the
      training forward normalises with the statistics of the global batch, all-reduced over the workers
      (:func:`sync_batch_statistics`), so that several workers compute what one process does.

    Other inputs (rank other than 4, float64, a mask, renorm) take Keras' own path. Same arguments,
    config and variables as the base class, so checkpoints of either load into the other.

    Call arguments:
        inputs: the tensor to normalise.
        training: batch statistics (and, outside a recomputation, moving-average updates) when truthy.
        mask: as for ``keras.layers.BatchNormalization``.
    """

    _FUSED_DTYPES = ("float16", "bfloat16", "float32")

    def _fusable(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and keras.backend.standardize_dtype(inputs.dtype) in self._FUSED_DTYPES)

    def call(self, inputs, training=None, mask=None):
        training = bool(training) and self.trainable
        if self._fusable(inputs, mask):
            if training and sync_batch_statistics():
                return self._synced(inputs)
            return self._fused(inputs, training)
        if not (training and is_recomputing()):
            return super().call(inputs, training=training, mask=mask)
        if self.renorm:
            raise ValueError(f"{self.name}: renorm: expected False under gradient checkpointing, received True")
        # The base class's training branch without the moving-average assignments.
        inputs = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(inputs, mask)
        outputs = ops.batch_normalization(
            x=inputs,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=ops.cast(self.beta, inputs.dtype) if self.center else None,
            scale=ops.cast(self.gamma, inputs.dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def _moments(self, inputs, mask):
        # Keras' own path (ranks other than 4): global-batch moments under several workers (see _synced).
        if mask is not None or self.synchronized or not sync_batch_statistics():
            return super()._moments(inputs, mask)
        import tensorflow as tf

        return _global_moments(tf.cast(inputs, tf.float32), list(self._reduction_axes))

    def _synced(self, inputs):
        """The fused kernel's training forward with the statistics of the GLOBAL batch, all-reduced over the
        replicas of a multi-worker strategy (``sync_batch_statistics``), so that several workers normalise,
        and update the moving statistics, exactly as one process does with the whole batch: the mean, the
        biased variance for normalising and the unbiased one for the moving average (as the fused kernel)."""
        import tensorflow as tf

        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        mean, variance, n = _global_moments(x, [0, 1, 2], with_count=True)
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        outputs = tf.nn.batch_normalization(x, mean, variance, offset, scale, max(self.epsilon, 1.001e-5))
        if not is_recomputing():
            unbiased = variance * n / tf.maximum(n - 1.0, 1.0)
            m = self.momentum
            self.moving_mean.assign(tf.cast(m * tf.cast(self.moving_mean, tf.float32) + (1.0 - m) * mean,
                                            self.moving_mean.dtype))  # fmt: skip
            self.moving_variance.assign(tf.cast(m * tf.cast(self.moving_variance, tf.float32) + (1.0 - m) * unbiased,
                                                self.moving_variance.dtype))  # fmt: skip
        return ops.cast(outputs, self.compute_dtype)

    def _fused(self, inputs, training: bool):
        import tensorflow as tf  # the fused kernel is TensorFlow's (checked by _fusable)

        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset,
            mean=tf.cast(self.moving_mean, tf.float32), variance=tf.cast(self.moving_variance, tf.float32),
            epsilon=max(self.epsilon, 1.001e-5),  # the kernels' minimum (cuDNN)
            exponential_avg_factor=(1.0 - self.momentum) if training else 1.0,
            data_format="NHWC", is_training=training,
        )  # fmt: skip
        if training and not is_recomputing():
            # With is_training and exponential_avg_factor != 1 the kernel returns the updated averages.
            self.moving_mean.assign(tf.cast(mean, self.moving_mean.dtype))
            self.moving_variance.assign(tf.cast(variance, self.moving_variance.dtype))
        return ops.cast(outputs, self.compute_dtype)


def sync_batch_statistics() -> bool:
    """True (at trace time) inside a replica of a MultiWorkerMirroredStrategy with several replicas: batch
    normalisation then uses the statistics of the global batch (all-reduced), as one process with the whole
    batch would. Other strategies (MirroredStrategy) keep per-replica statistics."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync < 2:
        return False
    return isinstance(ctx.strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _replica_sum(values: list) -> list:
    """Sum each tensor of ``values`` over the replicas of the multi-worker strategy in scope, without
    ``merge_call`` (so that it works inside the nested, non-inlined functions of the search step, where
    ``ReplicaContext.all_reduce`` refuses to run); differentiable: the gradient of a sum over replicas is
    the sum over replicas of the gradients. Uses TensorFlow's ``_replica_ctx_all_reduce``, the collective
    all-reduce its replica context itself calls when merge_call is off."""
    import tensorflow as tf

    extended = tf.distribute.get_replica_context().strategy.extended

    def reduce(xs):
        if tf.executing_eagerly():
            return list(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, list(xs)))
        return list(extended._replica_ctx_all_reduce(tf.distribute.ReduceOp.SUM, list(xs)))

    @tf.custom_gradient
    def summed(*xs):
        return reduce(xs), lambda *dys: reduce(dys)

    return list(summed(*values))


def _global_moments(x, axes: list, with_count: bool = False):
    """Mean and biased variance of ``x`` (float32) over ``axes`` and over every replica's batch (two passes:
    the mean, then the squared deviations from it); with ``with_count`` also the global count."""
    import tensorflow as tf

    local_n = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), tf.float32)
    total, n = _replica_sum([tf.reduce_sum(x, axis=axes, keepdims=True), local_n])
    n = tf.maximum(n, 1.0)
    mean = total / n
    (squares,) = _replica_sum([tf.reduce_sum(tf.square(x - mean), axis=axes, keepdims=True)])
    mean, variance = tf.squeeze(mean, axes), tf.squeeze(squares / n, axes)
    return (mean, variance, n) if with_count else (mean, variance)


def batch_norm(affine: bool, name: str | None = None) -> BatchNormalization:
    """A BatchNormalization with DARTS' settings; ``affine=False`` drops beta and gamma."""
    return BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=affine, scale=affine, name=name)


def drop_path_mask(batch, paths: int, rate, seed_generator, dtype):
    """``(batch, paths)`` keep factors of drop-path: each entry is 0 with probability ``rate`` and
    ``1 / (1 - rate)`` otherwise, independently per example and path (``rate`` may be a variable)."""
    keep = 1.0 - ops.cast(rate, dtype)
    noise = keras.random.uniform((batch, paths), dtype=dtype, seed=seed_generator)
    return ops.floor(keep + noise) / keep


def reduced_dim(size, stride: int):
    """Spatial size after a "same"-padded op at ``stride``: ``ceil(size / stride)`` (None stays None)."""
    return None if size is None else int(math.ceil(size / stride))


def reduced_shape(shape, stride, channels=None) -> tuple:
    """``(B, H, W, C)`` after a "same"-padded op at ``stride`` (an int or ``(stride_h, stride_w)``);
    ``channels`` replaces C where given."""
    b, h, w, c = shape
    sh, sw = stride_pair(stride)
    return (b, reduced_dim(h, sh), reduced_dim(w, sw), c if channels is None else channels)


def _subsample(x, stride):
    sh, sw = stride_pair(stride)
    return x if sh == sw == 1 else x[:, ::sh, ::sw, :]


def _same_strided(y, stride, height, width):
    """The rows and columns of ``y``, the stride-1 "same" output of an odd kernel on an ``height x width`` map,
    that the same kernel outputs at ``stride`` (1 or 2 per axis) with "same" padding.

    TensorFlow pads a "same" op at stride 2 by one row less at the start of an even axis, so its outputs are
    centred on the odd positions of an even axis and on the even positions of an odd one. ``height`` and
    ``width`` may be tensors (a dynamic size).
    """
    sh, sw = stride_pair(stride)
    oh = (height + 1) % 2 if sh == 2 else 0
    ow = (width + 1) % 2 if sw == 2 else 0
    return y[:, oh::sh, ow::sw, :]


@_register
class Zero(keras.layers.Layer):
    """The ``none`` op: zeros of the shape the op at ``stride`` would output.

    Args:
        stride: 1, 2 or ``(stride_h, stride_w)``; at 2 the output is ``ceil(H/2) x ceil(W/2)``.
        channels: output channels; None keeps the input's.

    Call arguments:
        x: a 4-D tensor ``(B, H, W, C)``.
        training: unused.
    """

    def __init__(self, stride: int = 1, channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stride = check_stride(stride)
        self.channels = None if channels is None else check_int(channels, "channels")

    def build(self, input_shape):
        check_rank(input_shape, 4, self.name)
        self.built = True

    def call(self, x, training=None):
        x = _subsample(x, self.stride)
        if self.channels is not None:
            x = x[..., :1]
            return ops.zeros_like(x) * ops.zeros((self.channels,), dtype=x.dtype)
        return ops.zeros_like(x)

    def compute_output_shape(self, input_shape):
        return reduced_shape(input_shape, self.stride, self.channels or input_shape[3])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "channels": self.channels}


@_register
class Identity(keras.layers.Layer):
    """``skip_connect`` at stride 1: returns its input.

    Call arguments:
        x: any tensor.
        training: unused.
    """

    def call(self, x, training=None):
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


@_register
class PoolBN(keras.layers.Layer):
    """3x3 max or average pooling ("same" padding), optionally followed by BN (DARTS' search adds a
    non-affine BN after every pool).

    Average pooling ignores the padding (PyTorch's ``count_include_pad=False``): border outputs are
    means over the valid inputs only, which is what TensorFlow's "same" average pooling computes.

    Args:
        pool_type: ``"max"`` or ``"avg"``.
        stride: 1, 2 or ``(stride_h, stride_w)``.
        pool_size: window size (3 in DARTS).
        bn: add a BatchNormalization after the pool.
        affine: whether that BN has beta and gamma.

    Call arguments:
        x: a 4-D tensor ``(B, H, W, C)``.
        training: BN mode.
    """

    def __init__(self, pool_type: str, stride: int = 1, pool_size: int = 3, bn: bool = False,
                 affine: bool = False, **kwargs):
        super().__init__(**kwargs)
        if pool_type not in ("max", "avg"):
            raise ValueError(f"pool_type: expected 'max' or 'avg', received {pool_type!r}")
        self.pool_type = pool_type
        self.stride = check_stride(stride)
        self.pool_size = check_int(pool_size, "pool_size")
        self.bn = bool(bn)
        self.affine = bool(affine)
        cls = keras.layers.MaxPooling2D if pool_type == "max" else keras.layers.AveragePooling2D
        self.pool = cls(pool_size=pool_size, strides=stride, padding="same", name="pool")
        self.norm = batch_norm(affine, name="bn") if bn else None

    def build(self, input_shape):
        check_rank(input_shape, 4, self.name)
        self.pool.build(input_shape)
        if self.norm is not None:
            self.norm.build(self.compute_output_shape(input_shape))
        self.built = True

    def call(self, x, training=None):
        y = self.pool(x)
        if self.norm is not None:
            y = self.norm(y, training=training)
        return y

    def compute_output_shape(self, input_shape):
        return reduced_shape(input_shape, self.stride)

    def get_config(self):
        return {**super().get_config(), "pool_type": self.pool_type, "stride": self.stride,
                "pool_size": self.pool_size, "bn": self.bn, "affine": self.affine}


@_register
class ReLUConvBN(keras.layers.Layer):
    """ReLU -> Conv2D (no bias, "same") -> BN: the cells' preprocessing of their inputs.

    Args:
        channels: output channels.
        kernel_size: convolution size (1 for the preprocessing).
        stride: 1, 2 or ``(stride_h, stride_w)``.
        affine: BN with beta and gamma.

    Call arguments:
        x: a 4-D tensor ``(B, H, W, C_in)``.
        training: BN mode.
    """

    def __init__(self, channels: int, kernel_size: int = 1, stride: int = 1, affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.channels = check_int(channels, "channels")
        self.kernel_size = check_int(kernel_size, "kernel_size")
        self.stride = check_stride(stride)
        self.affine = bool(affine)
        self.conv = keras.layers.Conv2D(channels, kernel_size, strides=stride, padding="same",
                                        use_bias=False, name="conv")
        self.norm = batch_norm(affine, name="bn")

    def build(self, input_shape):
        check_rank(input_shape, 4, self.name)
        self.conv.build(input_shape)
        self.norm.build(self.compute_output_shape(input_shape))
        self.built = True

    def call(self, x, training=None):
        return self.norm(self.conv(ops.relu(x)), training=training)

    def compute_output_shape(self, input_shape):
        return reduced_shape(input_shape, self.stride, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "affine": self.affine}


@_register
class DilConv(keras.layers.Layer):
    """ReLU -> depthwise conv (dilated) -> pointwise 1x1 conv -> BN (DARTS' ``dil_conv_kxk``).

    TensorFlow cannot stride a dilated depthwise convolution, so at stride 2 with dilation > 1 the
    stride-1 result is subsampled (``[::2, ::2]``), which picks the windows centred on even positions,
    as PyTorch's symmetric padding does. Output ``ceil(H/s) x ceil(W/s) x channels``.

    Args:
        channels: output channels.
        kernel_size: depthwise kernel size (odd).
        stride: 1, 2 or ``(stride_h, stride_w)``.
        dilation: depthwise dilation rate.
        affine: BN with beta and gamma.

    Call arguments:
        x: a 4-D tensor ``(B, H, W, C_in)``.
        training: BN mode.
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 2,
                 affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.channels = check_int(channels, "channels")
        self.kernel_size = check_int(kernel_size, "kernel_size")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size: expected an odd size, received {kernel_size}")
        self.stride = check_stride(stride)
        self.dilation = check_int(dilation, "dilation")
        self.affine = bool(affine)
        sh, sw = stride_pair(self.stride)
        # A dilated depthwise convolution takes no stride: it runs at stride 1 and keeps every other row and column.
        self._subsample = max(sh, sw) > 1 and dilation > 1
        # TensorFlow's own depthwise kernel takes equal strides only (oneDNN's takes any, but TensorFlow turns
        # oneDNN on by default only on CPUs with AVX-512 VNNI/BF16, AVX-VNNI or AMX), so on every machine an unequal
        # stride such as (2, 1) runs at stride 1 and keeps the rows and columns that the strided op outputs (the same
        # values).
        self._same_strided = sh != sw and not self._subsample
        self.depthwise = keras.layers.DepthwiseConv2D(
            kernel_size, strides=1 if self._subsample or self._same_strided else stride, dilation_rate=dilation,
            padding="same", use_bias=False, name="depthwise",
        )
        self.pointwise = keras.layers.Conv2D(channels, 1, use_bias=False, name="pointwise")
        self.norm = batch_norm(affine, name="bn")

    def build(self, input_shape):
        check_rank(input_shape, 4, self.name)
        b, _, _, c = input_shape
        self.depthwise.build(input_shape)
        out = self.compute_output_shape(input_shape)
        self.pointwise.build((b, out[1], out[2], c))
        self.norm.build(out)
        self.built = True

    def call(self, x, training=None):
        y = self.depthwise(ops.relu(x))
        if self._subsample:
            y = _subsample(y, self.stride)
        elif self._same_strided:
            y = _same_strided(y, self.stride, *ops.shape(x)[1:3])  # ints, or tensors where a size is dynamic
        return self.norm(self.pointwise(y), training=training)

    def compute_output_shape(self, input_shape):
        return reduced_shape(input_shape, self.stride, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "dilation": self.dilation, "affine": self.affine}


@_register
class SepConv(keras.layers.Layer):
    """Two stacked ReLU -> depthwise -> pointwise -> BN blocks (DARTS' ``sep_conv_kxk``); the first
    carries the stride.

    Args:
        channels: output channels (also the channels between the two blocks).
        kernel_size: depthwise kernel size (odd).
        stride: 1, 2 or ``(stride_h, stride_w)``.
        affine: BN with beta and gamma.

    Call arguments:
        x: a 4-D tensor ``(B, H, W, C_in)``.
        training: BN mode.
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.channels = check_int(channels, "channels")
        self.kernel_size = check_int(kernel_size, "kernel_size")
        self.stride = check_stride(stride)
        self.affine = bool(affine)
        self.block1 = DilConv(channels, kernel_size, stride, dilation=1, affine=affine, name="block1")
        self.block2 = DilConv(channels, kernel_size, 1, dilation=1, affine=affine, name="block2")

    def build(self, input_shape):
        check_rank(input_shape, 4, self.name)
        self.block1.build(input_shape)
        self.block2.build(self.block1.compute_output_shape(input_shape))
        self.built = True

    def call(self, x, training=None):
        return self.block2(self.block1(x, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return reduced_shape(input_shape, self.stride, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "affine": self.affine}


@_register
class FactorizedReduce(keras.layers.Layer):
    """ReLU, then two 1x1 convolutions at stride 2, one on the even and one on the odd positions,
    concatenated, then BN: halves H and W without losing the odd rows and columns.

    Works for odd sizes: the input is padded by one row and column at the end before the odd
    positions are taken, so both branches output ``ceil(H/2) x ceil(W/2)`` (for even sizes this is
    exactly DARTS' ``x[:, :, 1:, 1:]`` branch). At ``stride=(2, 1)`` only H is halved: the branches
    read the even and the odd rows, every column.

    Args:
        channels: output channels (``channels // 2`` from the first branch, the rest from the second).
        affine: BN with beta and gamma.
        stride: 2 (both axes) or ``(2, 1)`` / ``(1, 2)``.

    Call arguments:
        x: a 4-D tensor ``(B, H, W, C_in)``.
        training: BN mode.
    """

    def __init__(self, channels: int, affine: bool = True, stride=2, **kwargs):
        super().__init__(**kwargs)
        self.channels = check_int(channels, "channels")
        if channels < 2:
            raise ValueError(f"channels: expected at least 2 for a factorized reduce, received {channels}")
        self.stride = check_stride(stride)
        if stride_pair(self.stride) == (1, 1):
            raise ValueError(f"stride: a factorized reduce halves at least one axis, received {stride!r}")
        self.affine = bool(affine)
        self.conv_even = keras.layers.Conv2D(channels // 2, 1, use_bias=False, name="conv_even")
        self.conv_odd = keras.layers.Conv2D(channels - channels // 2, 1, use_bias=False, name="conv_odd")
        self.norm = batch_norm(affine, name="bn")

    def build(self, input_shape):
        check_rank(input_shape, 4, self.name)
        half = reduced_shape(input_shape, self.stride)
        self.conv_even.build(half)
        self.conv_odd.build(half)
        self.norm.build(self.compute_output_shape(input_shape))
        self.built = True

    def call(self, x, training=None):
        x = ops.relu(x)
        sh, sw = stride_pair(self.stride)
        even = _subsample(x, self.stride)
        padded = ops.pad(x, [[0, 0], [0, sh - 1], [0, sw - 1], [0, 0]])
        odd = padded[:, sh - 1 :: sh, sw - 1 :: sw, :]
        y = ops.concatenate([self.conv_even(even), self.conv_odd(odd)], axis=-1)
        return self.norm(y, training=training)

    def compute_output_shape(self, input_shape):
        return reduced_shape(input_shape, self.stride, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "affine": self.affine, "stride": self.stride}
