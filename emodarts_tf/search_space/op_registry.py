"""The registry of candidate operations: one table, op name -> layer factory, for the CNN and the SeqNN ops.

``OPS[kind][op_name]`` (``kind`` ``"cnn"`` or ``"seq"``, names from ``primitives.PRIMITIVES[kind]``) is a
factory ``factory(width, stride, affine, pool_bn, name) -> keras.layers.Layer``, as pt.darts's ``OPS`` dict
maps a name to ``lambda C, stride, affine: ...``. The searchable edges (``MixedOp``) and the fixed cells of
a genotype (``FixedCNNCell``, ``FixedSeqCell``) build every op through :func:`make_op`.

- CNN ops (``operations.py``) map ``(B, H, W, width)`` to ``(B, ceil(H/stride), ceil(W/stride), width)``;
  ``affine`` gives their BN beta and gamma (False in the search, True when retraining); ``pool_bn`` adds a
  non-affine BN after the pooling ops (the search's mixed ops, as in DARTS).
- SeqNN ops (``seq_ops.py``) map ``(B, T, width)`` to itself; their stride is 1 and they have no BN, so
  ``affine`` and ``pool_bn`` play no part.

``none`` and ``skip_connect`` exist in both kinds with different layers (``Zero`` / ``SeqZero``; identity,
or a factorized reduce at stride 2 / identity), hence one table per kind.
"""
from __future__ import annotations

import keras

from emodarts_tf.search_space.operations import DilConv, FactorizedReduce, Identity, PoolBN, SepConv, Zero
from emodarts_tf.search_space.primitives import PRIMITIVES
from emodarts_tf.search_space.seq_ops import AttentionRNN, SeqZero, StackedRNN, parse_recurrent
from emodarts_tf.search_space.validation import check_int, check_kind, check_stride


def _cnn_skip(c, s, affine, pool_bn, name):
    return Identity(name=name) if s == 1 else FactorizedReduce(c, affine=affine, stride=s, name=name)


def _seq_factory(op_name: str):
    if op_name == "none":
        return lambda c, s, affine, pool_bn, name: SeqZero(name=name)
    if op_name == "skip_connect":
        return lambda c, s, affine, pool_bn, name: Identity(name=name)
    cell_type, attention, depth = parse_recurrent(op_name)
    if attention:
        return lambda c, s, affine, pool_bn, name: AttentionRNN(cell_type, depth, c, name=name)
    return lambda c, s, affine, pool_bn, name: StackedRNN(cell_type, depth, c, name=name)


# kind -> op name -> factory(width, stride, affine, pool_bn, name)
OPS = {
    "cnn": {
        "none": lambda c, s, affine, pool_bn, name: Zero(stride=s, name=name),
        "max_pool_3x3": lambda c, s, affine, pool_bn, name: PoolBN("max", s, 3, bn=pool_bn, affine=False, name=name),
        "avg_pool_3x3": lambda c, s, affine, pool_bn, name: PoolBN("avg", s, 3, bn=pool_bn, affine=False, name=name),
        "skip_connect": _cnn_skip,
        "sep_conv_3x3": lambda c, s, affine, pool_bn, name: SepConv(c, 3, s, affine=affine, name=name),
        "sep_conv_5x5": lambda c, s, affine, pool_bn, name: SepConv(c, 5, s, affine=affine, name=name),
        "dil_conv_3x3": lambda c, s, affine, pool_bn, name: DilConv(c, 3, s, 2, affine=affine, name=name),
        "dil_conv_5x5": lambda c, s, affine, pool_bn, name: DilConv(c, 5, s, 2, affine=affine, name=name),
    },
    "seq": {op: _seq_factory(op) for op in PRIMITIVES["seq"]},
}
assert all(tuple(OPS[kind]) == PRIMITIVES[kind] for kind in PRIMITIVES)

_WIDTH = {"cnn": "channels", "seq": "units"}


def make_op(kind: str, op_name: str, width: int, stride: int = 1, affine: bool = True, pool_bn: bool = False,
            name: str | None = None) -> keras.layers.Layer:
    """Build the candidate op ``op_name`` of ``kind``.

    Args:
        kind: ``"cnn"`` or ``"seq"``.
        op_name: one of ``primitives.PRIMITIVES[kind]``, e.g. ``"sep_conv_3x3"`` or ``"lstm_2"``.
        width: channels of a CNN op (input and output), units of a SeqNN op (features in and out).
        stride: 1, or for CNN ops on the edges from the cell inputs of a reduction cell 2 (both axes) or
            ``(2, 1)`` (frequency only); SeqNN ops: 1.
        affine: BN with beta and gamma (CNN ops; False in the search, True when retraining).
        pool_bn: a non-affine BN after the pooling ops (CNN ops; the search's mixed ops, as in DARTS).
        name: the layer's name.
    """
    table = OPS[check_kind(kind)]
    if op_name not in table:
        raise ValueError(f"op_name: expected one of {list(PRIMITIVES[kind])}, received {op_name!r}")
    width = check_int(width, _WIDTH[kind])
    if kind == "cnn":
        stride = check_stride(stride)
    elif isinstance(stride, bool) or stride != 1:
        raise ValueError(f"stride: expected 1 for SeqNN ops, received {stride!r}")
    return table[op_name](width, stride, bool(affine), bool(pool_bn), name)


def make_cnn_op(op_name: str, channels: int, stride: int = 1, affine: bool = True, name: str | None = None,
                pool_bn: bool = False) -> keras.layers.Layer:
    """``make_op("cnn", ...)``: the CNN op ``op_name`` of ``channels`` at ``stride``."""
    return make_op("cnn", op_name, channels, stride, affine=affine, pool_bn=pool_bn, name=name)


def make_seq_op(op_name: str, units: int, name: str | None = None) -> keras.layers.Layer:
    """``make_op("seq", ...)``: the SeqNN op ``op_name`` mapping ``(B, T, units)`` to itself."""
    return make_op("seq", op_name, units, name=name)
