"""Mixed operations: one edge of a searchable cell, the softmax-weighted sum of every candidate op."""
from __future__ import annotations

import keras

from emodarts_tf.search_space.op_registry import make_op
from emodarts_tf.search_space.operations import Identity, drop_path_mask, reduced_shape
from emodarts_tf.search_space.recompute import recompute_grad
from emodarts_tf.search_space.validation import (
    check_bool,
    check_int,
    check_kind,
    check_ops,
    check_rate,
    check_stride,
    stride_pair,
)

_register = keras.saving.register_keras_serializable(package="emodarts_tf")


@_register
class MixedOp(keras.layers.Layer):
    """One edge of a searchable cell: ``sum_i weights[i] * op_i(x)`` over the candidate ops.

    ``none`` is never computed (it contributes zero); its weight still takes part in the softmax the
    caller applied. Every candidate comes from the op registry
    (:func:`~emodarts_tf.search_space.op_registry.make_op`); in the CNN search every op's BN is non-affine
    and the pooling ops get a non-affine BN after them, as in DARTS.

    Args:
        ops: candidate op names, in the order of the weight vector's entries.
        channels: channels of the CNN ops, or units of the SeqNN ops.
        stride: 1, 2 or ``(stride_h, stride_w)`` (CNN only).
        kind: ``"cnn"`` (candidates from ``CNN_PRIMITIVES``) or ``"seq"`` (``SEQ_PRIMITIVES``).
        recompute: gradient checkpointing (CNN only): in training, the weighted sum is computed without
            keeping the candidates' activations, and recomputed in the backward pass
            (:func:`~emodarts_tf.search_space.recompute.recompute_grad`); only the edge's input and
            output stay alive. Same values and gradients, about one extra forward per backward.
        drop_path_rate: CNN only. In training, each candidate's output except the identity's (``skip_connect``
            on a stride-1 edge; on a reduction edge it is a FactorizedReduce and is dropped too) is zeroed per
            example with this probability and the rest scaled by ``1 / (1 - rate)``: drop-path on the supernet,
            one of RobustDARTS's regularisers (Zela et al., ICLR 2020). The masks are drawn before the
            checkpointed sum, so its recomputation sees the same ones. The current rate lives in a
            non-trainable variable that a schedule sets between epochs (``network.set_search_drop_path_rate``);
            0 builds no variable and draws nothing.
        drop_path_seed: the seed of the masks' random generator. An integer leaves Python's random state alone,
            so the other layers' initial weights do not depend on whether drop-path is on; None draws one from it.
        partial_channels: CNN only. ``K > 1``: partial channel connections (PC-DARTS, Xu et al., ICLR 2020). The
            candidates are built for ``channels / K`` channels and read the first ``channels / K`` channels of the
            input; the other channels bypass the mixture (max-pooled at the edge's stride on a reduction edge),
            are concatenated after the mixture's output, and the ``channels`` are shuffled in ``K`` groups
            (:func:`channel_shuffle`), so that the next edge's ops read a different part. The bypassed channels
            are scaled by the sum of the mixing weights: 1 for a softmax, the edge's weight under edge
            normalisation (whose mixing weights are the op weights times the edge weight), which PC-DARTS applies
            to the whole edge. About ``1 / K`` of the candidates' compute and activations. 1: every channel goes
            through every candidate.

    Call arguments:
        x: the edge's input, ``(B, H, W, channels)`` for CNN ops, ``(B, T, units)`` for SeqNN ops.
        weights: a vector of ``len(ops)`` mixing weights (softmaxed alphas); cast to the compute dtype.
        training: passed to the ops.
    """

    def __init__(self, ops: tuple, channels: int, stride: int = 1, kind: str = "cnn", recompute: bool = False,
                 drop_path_rate: float = 0.0, drop_path_seed: int | None = None, partial_channels: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        check_kind(kind)
        self.partial_channels = check_partial_channels(partial_channels, channels, kind)
        if check_bool(recompute, "recompute") and kind == "seq":
            raise ValueError(f"recompute: expected False for SeqNN ops (CNN mixed ops only), received {recompute!r}")
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        if self.drop_path_rate > 0 and kind == "seq":
            raise ValueError(f"drop_path_rate: expected 0 for SeqNN ops (CNN mixed ops only), received "
                             f"{drop_path_rate!r}")
        self.recompute = recompute
        self.op_names = check_ops(ops, kind)
        self.channels = channels
        self.stride = check_stride(stride) if kind == "cnn" else stride
        self.kind = kind
        # Only the ops that compute something; `none` is left out of the sum.
        self.active_indices = tuple(i for i, op in enumerate(self.op_names) if op != "none")
        # The channels that go through the candidates: all of them, or 1 / K with partial channel connections.
        self.mixed_channels = channels // self.partial_channels
        self.candidates = [make_op(kind, self.op_names[i], self.mixed_channels, stride, affine=False, pool_bn=True,
                                   name=self.op_names[i])
                           for i in self.active_indices]
        self._zero = make_op(kind, "none", self.mixed_channels, stride, name="none")
        self._bypass = None
        if self.partial_channels > 1 and stride_pair(self.stride) != (1, 1):
            self._bypass = keras.layers.MaxPooling2D(pool_size=stride_pair(self.stride),
                                                     strides=stride_pair(self.stride), padding="same", name="bypass")
        # Positions (among the computed candidates) that drop-path may zero: every op but the identity.
        self.droppable = tuple(k for k, layer in enumerate(self.candidates) if not isinstance(layer, Identity))
        self.drop_path_seed = check_int(drop_path_seed, "drop_path_seed", minimum=0, optional=True)
        self.seed_generator = keras.random.SeedGenerator(self.drop_path_seed) if self.drop_path_rate > 0 else None
        self.drop_path_variable = None

    def op_layer(self, op_name: str) -> keras.layers.Layer:
        """The layer computing candidate ``op_name`` (``none`` has a Zero layer that is never summed)."""
        if op_name not in self.op_names:
            raise ValueError(f"op_name: expected one of {list(self.op_names)}, received {op_name!r}")
        if op_name == "none":
            return self._zero
        return self.candidates[self.active_indices.index(self.op_names.index(op_name))]

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if self.partial_channels > 1:
            if input_shape[-1] != self.channels:
                raise ValueError(f"{self.name}: expected inputs of {self.channels} channels with partial_channels="
                                 f"{self.partial_channels}, received shape {input_shape}")
            input_shape = input_shape[:-1] + (self.mixed_channels,)
        for layer in self.candidates:
            layer.build(input_shape)
        self._zero.build(input_shape)
        if self.drop_path_rate > 0:
            self.drop_path_variable = self.add_weight(
                name="drop_path_rate", shape=(), initializer=keras.initializers.Constant(self.drop_path_rate),
                trainable=False,
            )
        self.built = True

    def call(self, x, weights, training=None):
        weights = keras.ops.cast(weights, x.dtype)
        symbolic = keras.backend.is_keras_tensor(x) or keras.backend.is_keras_tensor(weights)
        masks = None
        if training and self.drop_path_variable is not None and self.droppable and not symbolic:
            masks = drop_path_mask(keras.ops.shape(x)[0], len(self.droppable), self.drop_path_variable,
                                   self.seed_generator, x.dtype)
        if self.recompute and training and self.candidates and not symbolic:
            if masks is None:
                return recompute_grad(lambda x, weights: self._weighted_sum(x, weights, training))(x, weights)
            return recompute_grad(
                lambda x, weights, masks: self._weighted_sum(x, weights, training, masks)
            )(x, weights, masks)
        return self._weighted_sum(x, weights, training, masks)

    def _weighted_sum(self, x, weights, training, masks=None):
        if self.partial_channels == 1:
            return self._mixture(x, weights, training, masks)
        mixed = self._mixture(x[..., :self.mixed_channels], weights, training, masks)
        rest = x[..., self.mixed_channels:]
        if self._bypass is not None:
            rest = self._bypass(rest)
        rest = rest * keras.ops.sum(weights)  # weights arrive cast to x.dtype: 1 up to that dtype's rounding
        return channel_shuffle(keras.ops.concatenate([mixed, rest], axis=-1), self.partial_channels)

    def _mixture(self, x, weights, training, masks=None):
        out = None
        # One Unpack (and one Pack in the gradient) instead of a slice and a slice-gradient per op.
        weights = keras.ops.unstack(weights, num=len(self.op_names))
        if masks is not None:
            masks = keras.ops.unstack(masks, num=len(self.droppable), axis=1)
        for k, (i, layer) in enumerate(zip(self.active_indices, self.candidates)):
            y = layer(x, training=training)
            if masks is not None and k in self.droppable:
                y = y * keras.ops.reshape(masks[self.droppable.index(k)], (-1,) + (1,) * (len(y.shape) - 1))
            y = weights[i] * y
            out = y if out is None else out + y
        if out is None:  # only `none` among the candidates
            out = self._zero(x)
        return out

    def compute_output_shape(self, x_shape, weights_shape=None):
        if self.kind == "seq":
            return tuple(x_shape)
        return reduced_shape(tuple(x_shape), self.stride, self.channels)

    def get_config(self):
        return {**super().get_config(), "ops": list(self.op_names), "channels": self.channels,
                "stride": self.stride, "kind": self.kind, "recompute": self.recompute,
                "drop_path_rate": self.drop_path_rate, "drop_path_seed": self.drop_path_seed,
                "partial_channels": self.partial_channels}


def check_partial_channels(partial_channels, channels: int, kind: str) -> int:
    """``partial_channels`` (K of PC-DARTS) checked against an edge of ``channels`` channels of ``kind``: an integer
    >= 1 that divides ``channels``, and 1 for SeqNN edges."""
    k = check_int(partial_channels, "partial_channels")
    if k > 1 and kind == "seq":
        raise ValueError(f"partial_channels: expected 1 for SeqNN ops (CNN mixed ops only), received {partial_channels!r}")
    if channels % k:
        raise ValueError(f"partial_channels: expected a divisor of the edge's {channels} channels, received "
                         f"{partial_channels!r}")
    return k


def channel_shuffle(x, groups: int):
    """Interleave the channels of ``(B, H, W, C)`` from ``groups`` groups of ``C / groups``: channel ``j * groups + g``
    of the output is channel ``g * C / groups + j`` of the input (ShuffleNet's shuffle, as PC-DARTS applies it
    after each edge)."""
    if groups == 1:
        return x
    shape = keras.ops.shape(x)
    channels = x.shape[-1]
    y = keras.ops.reshape(x, (-1, shape[1], shape[2], groups, channels // groups))
    y = keras.ops.transpose(y, (0, 1, 2, 4, 3))
    return keras.ops.reshape(y, (-1, shape[1], shape[2], channels))


@_register
class MixedSeqOp(MixedOp):
    """A :class:`MixedOp` over SeqNN ops: ``(B, T, units) -> (B, T, units)``.

    Args:
        ops: candidate SeqNN op names (from ``SEQ_PRIMITIVES``).
        units: features in and out.

    Call arguments:
        x: a tensor ``(B, T, units)``.
        weights: a vector of ``len(ops)`` mixing weights.
        training: passed to the ops.
    """

    def __init__(self, ops: tuple, units: int, **kwargs):
        kwargs.pop("channels", None)
        kwargs.pop("stride", None)
        kwargs.pop("kind", None)
        super().__init__(ops, units, 1, kind="seq", **kwargs)

    @property
    def units(self) -> int:
        return self.channels

    def get_config(self):
        config = super().get_config()
        for key in ("channels", "stride", "kind", "recompute", "drop_path_rate", "drop_path_seed", "partial_channels"):
            config.pop(key)
        return {**config, "units": self.units}
