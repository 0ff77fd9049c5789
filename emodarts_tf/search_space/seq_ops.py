"""The layers of the candidate sequence (SeqNN) operations: ``(B, T, units) -> (B, T, units)`` over the
TIME axis. The op registry (:mod:`~emodarts_tf.search_space.op_registry`) builds them by name:

- ``lstm_k`` / ``rnn_k``: ``k`` stacked unidirectional ``keras.layers.LSTM`` / ``SimpleRNN`` layers of
  ``units`` returning sequences (causal: the output at ``t`` depends on inputs up to ``t`` only).
- ``lstm_att_k`` / ``rnn_att_k``: ``k`` stacked bidirectional LSTM / SimpleRNN layers (``units // 2``
  per direction; an odd ``units`` gets ``units // 2 + 1`` per direction and a Dense back to ``units``),
  then single-head dot-product self-attention over time (``keras.layers.MultiHeadAttention``, key size
  ``units``) added residually: ``h + attention(h, h)``. Every size comes from ``units``; none from the
  batch (the PyTorch original sized a linear layer from the batch size, so it ran only at batch 16).
- ``skip_connect``: identity; ``none``: zeros.

The LSTMs keep Keras' cuDNN-compatible defaults (tanh, sigmoid, no recurrent dropout, no unrolling),
so GPUs get the fused kernel.
"""
from __future__ import annotations

import re

import keras
from keras import ops

from emodarts_tf.search_space.validation import check_int, check_num_heads, check_rank

_register = keras.saving.register_keras_serializable(package="emodarts_tf")

RNN_TYPES = ("lstm", "rnn")


def _recurrent(cell_type: str, units: int, name: str) -> keras.layers.Layer:
    if cell_type == "lstm":
        return keras.layers.LSTM(units, return_sequences=True, name=name)
    return keras.layers.SimpleRNN(units, return_sequences=True, name=name)


def direction_units(units: int) -> int:
    """Units per direction of the bidirectional layers of an attention op of width ``units``."""
    return max(1, (units + 1) // 2)


def _check_cell_type(cell_type) -> str:
    if cell_type not in RNN_TYPES:
        raise ValueError(f"cell_type: expected one of {RNN_TYPES}, received {cell_type!r}")
    return cell_type


@_register
class SeqZero(keras.layers.Layer):
    """The SeqNN ``none`` op: zeros shaped like the input.

    Call arguments:
        x: a tensor ``(B, T, units)``.
        training: unused.
    """

    def call(self, x, training=None):
        return ops.zeros_like(x)

    def compute_output_shape(self, input_shape):
        return input_shape


@_register
class StackedRNN(keras.layers.Layer):
    """``num_layers`` stacked unidirectional recurrent layers of ``units``, returning sequences.

    Args:
        cell_type: ``"lstm"`` (keras LSTM) or ``"rnn"`` (keras SimpleRNN).
        num_layers: how many layers are stacked.
        units: features in and out.

    Call arguments:
        x: a tensor ``(B, T, features)``.
        training: passed to the recurrent layers.

    Example:
        >>> op = StackedRNN("lstm", 2, 16)
        >>> op(keras.ops.ones((2, 5, 16))).shape
        TensorShape([2, 5, 16])
    """

    def __init__(self, cell_type: str, num_layers: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.cell_type = _check_cell_type(cell_type)
        self.num_layers = check_int(num_layers, "num_layers")
        self.units = check_int(units, "units")
        self.rnns = [_recurrent(cell_type, units, f"{cell_type}_{i}") for i in range(num_layers)]

    def build(self, input_shape):
        check_rank(input_shape, 3, self.name)
        shape = tuple(input_shape)
        for rnn in self.rnns:
            rnn.build(shape)
            shape = (shape[0], shape[1], self.units)
        self.built = True

    def call(self, x, training=None):
        for rnn in self.rnns:
            x = rnn(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.units)

    def get_config(self):
        return {**super().get_config(), "cell_type": self.cell_type, "num_layers": self.num_layers,
                "units": self.units}


@_register
class AttentionRNN(keras.layers.Layer):
    """``num_layers`` stacked bidirectional recurrent layers, then self-attention over time, residual.

    Each direction has ``units // 2`` units (``units // 2 + 1`` and a Dense back to ``units`` when
    ``units`` is odd). The attention is ``keras.layers.MultiHeadAttention`` with ``num_heads`` heads
    of ``units // num_heads`` features, query = key = value = the recurrent output ``h``; the op returns
    ``h + attention(h, h)``, one context vector per time step. No size depends on the batch.

    Args:
        cell_type: ``"lstm"`` or ``"rnn"``.
        num_layers: stacked bidirectional layers.
        units: features in and out.
        num_heads: attention heads; must divide ``units``.

    Call arguments:
        x: a tensor ``(B, T, features)``.
        training: passed to the recurrent and attention layers.
    """

    def __init__(self, cell_type: str, num_layers: int, units: int, num_heads: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.cell_type = _check_cell_type(cell_type)
        self.num_layers = check_int(num_layers, "num_layers")
        self.units = check_int(units, "units")
        self.num_heads = check_num_heads(num_heads, units)
        self._direction_units = direction_units(units)
        self.birnns = [
            keras.layers.Bidirectional(
                _recurrent(cell_type, self._direction_units, f"{cell_type}_{i}"), merge_mode="concat",
                name=f"bi{cell_type}_{i}",
            )
            for i in range(num_layers)
        ]
        self.projection = (
            keras.layers.Dense(units, name="projection") if 2 * self._direction_units != units else None
        )
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=units // num_heads, name="attention"
        )

    def build(self, input_shape):
        check_rank(input_shape, 3, self.name)
        shape = tuple(input_shape)
        for birnn in self.birnns:
            birnn.build(shape)
            shape = (shape[0], shape[1], 2 * self._direction_units)
        if self.projection is not None:
            self.projection.build(shape)
        seq_shape = (shape[0], shape[1], self.units)
        self.attention.build(seq_shape, seq_shape)
        self.built = True

    def call(self, x, training=None):
        for birnn in self.birnns:
            x = birnn(x, training=training)
        if self.projection is not None:
            x = self.projection(x)
        return x + self.attention(x, x, training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.units)

    def get_config(self):
        return {**super().get_config(), "cell_type": self.cell_type, "num_layers": self.num_layers,
                "units": self.units, "num_heads": self.num_heads}


_PATTERN = re.compile(r"^(lstm|rnn)(_att)?_(\d+)$")


def parse_recurrent(op_name: str):
    """``(cell_type, attention, depth)`` of a recurrent SeqNN op (``"rnn_att_2"`` -> ``("rnn", True, 2)``),
    None for ``none`` and ``skip_connect``."""
    match = _PATTERN.match(op_name)
    if match is None:
        return None
    cell_type, att, depth = match.groups()
    return cell_type, bool(att), int(depth)
