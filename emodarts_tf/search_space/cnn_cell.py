"""DARTS CNN cells: the searchable cell (every edge a MixedOp) and the fixed cell of a genotype.

A cell reads the outputs of the two previous cells ``[s0, s1]``. Both are preprocessed to ``channels``
channels at the resolution of ``s1`` (``s0`` with a FactorizedReduce when the previous cell was a
reduction cell, so it is twice the size of ``s1``; otherwise ReLU-Conv1x1-BN; ``s1`` with
ReLU-Conv1x1-BN). Node ``i`` sums one op over each of its inputs (the 2 preprocessed inputs, then the
earlier nodes); in a reduction cell the ops on the 2 cell inputs have stride 2 (or ``(2, 1)``: frequency
only, when the space keeps the time resolution). The output
concatenates the nodes along channels.
"""
from __future__ import annotations

import keras
from keras import ops

from emodarts_tf.search_space.genotype import check_cell
from emodarts_tf.search_space.mixed_op import MixedOp
from emodarts_tf.search_space.op_registry import make_op
from emodarts_tf.search_space.operations import (
    FactorizedReduce,
    Identity,
    ReLUConvBN,
    Zero,
    drop_path_mask,
    reduced_shape,
)
from emodarts_tf.search_space.primitives import CNN_PRIMITIVES, num_edges
from emodarts_tf.search_space.validation import (
    check_bool,
    check_edge_weights,
    check_int,
    check_ops,
    check_pair,
    check_rate,
    check_stride,
)

_register = keras.saving.register_keras_serializable(package="emodarts_tf")


def _preprocess(channels: int, reduction_prev: bool, affine: bool, stride=2):
    pre0 = (FactorizedReduce(channels, affine=affine, stride=stride, name="preprocess0") if reduction_prev
            else ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess0"))
    pre1 = ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess1")
    return pre0, pre1


def _build_preprocess(cell, input_shape):
    s0_shape, s1_shape = (tuple(s) for s in check_pair(input_shape, cell.name))
    if len(s0_shape) != 4 or len(s1_shape) != 4:
        raise ValueError(f"{cell.name}: expected two 4-D inputs (B, H, W, C), received shapes {s0_shape}, {s1_shape}")
    cell.preprocess0.build(s0_shape)
    cell.preprocess1.build(s1_shape)
    pre0 = cell.preprocess0.compute_output_shape(s0_shape)
    pre1 = cell.preprocess1.compute_output_shape(s1_shape)
    for axis, label in ((1, "H"), (2, "W")):
        if pre0[axis] is not None and pre1[axis] is not None and pre0[axis] != pre1[axis]:
            raise ValueError(
                f"{cell.name}: expected s0 and s1 at the same resolution after preprocessing "
                f"(reduction_prev={cell.reduction_prev}), received {label} {pre0[axis]} and {pre1[axis]} "
                f"from input shapes {s0_shape} and {s1_shape}"
            )
    return pre1


def _output_shape(cell, input_shape, n_concat: int):
    _, s1_shape = input_shape
    return reduced_shape(tuple(s1_shape), cell.reduction_stride if cell.reduction else 1, cell.channels * n_concat)


@_register
class SearchCNNCell(keras.layers.Layer):
    """A searchable DARTS cell: every edge is a :class:`MixedOp` over ``ops`` (non-affine BN).

    Args:
        nodes: intermediate nodes ``N``; the cell has ``num_edges(N) = 2 + 3 + ... + (N + 1)`` edges,
            node 0's 2 edges first, then node 1's 3, and so on.
        channels: channels of every node; the output has ``channels * nodes``.
        reduction: a reduction cell (stride ``reduction_stride`` on the edges from the cell inputs).
        reduction_prev: the previous cell was a reduction cell (``s0`` is twice as large as ``s1``).
        reduction_stride: the stride of the network's reduction cells: 2 (frequency and time) or ``(2, 1)``
            (frequency only, keeping every frame); also ``preprocess0``'s after a reduction cell.
        ops: candidate op names (the columns of the weight matrix).
        recompute: gradient checkpointing of every edge (``MixedOp(recompute=True)``): in training only
            the edges' inputs and outputs are kept for the backward pass, which recomputes each edge.
        drop_path_rate: drop-path of every edge's candidates in training (``MixedOp(drop_path_rate=...)``);
            0 disables it.
        drop_path_seed: edge ``e``'s masks are seeded with ``drop_path_seed + e`` (None: from Python's random).
        partial_channels: partial channel connections of every edge (``MixedOp(partial_channels=K)``, PC-DARTS):
            each edge's candidates see ``channels / K`` of its input's channels; 1: all of them.

    Call arguments:
        inputs: ``[s0, s1]``, the outputs of the cells two and one steps back.
        weights: ``(num_edges(nodes), len(ops))`` mixing weights (softmaxed alphas).
        training: BN mode.
    """

    def __init__(self, nodes: int, channels: int, reduction: bool, reduction_prev: bool,
                 ops: tuple = CNN_PRIMITIVES, recompute: bool = False, reduction_stride=2,
                 drop_path_rate: float = 0.0, drop_path_seed: int | None = None, partial_channels: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        self.recompute = check_bool(recompute, "recompute")
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.drop_path_seed = check_int(drop_path_seed, "drop_path_seed", minimum=0, optional=True)
        self.nodes = check_int(nodes, "nodes")
        self.channels = check_int(channels, "channels")
        self.reduction = bool(reduction)
        self.reduction_prev = bool(reduction_prev)
        self.reduction_stride = check_stride(reduction_stride)
        self.op_names = check_ops(ops, "cnn")
        self.preprocess0, self.preprocess1 = _preprocess(channels, self.reduction_prev, affine=False,
                                                         stride=self.reduction_stride)
        self.edges = []
        for node in range(nodes):
            for j in range(node + 2):
                stride = self.reduction_stride if self.reduction and j < 2 else 1
                self.edges.append(MixedOp(self.op_names, channels, stride, kind="cnn", recompute=recompute,
                                          drop_path_rate=self.drop_path_rate,
                                          drop_path_seed=(None if self.drop_path_seed is None
                                                          else self.drop_path_seed + len(self.edges)),
                                          partial_channels=partial_channels, name=f"edge_{node}_{j}"))
        self.partial_channels = self.edges[0].partial_channels  # each edge checks K against its channels

    @property
    def num_edges(self) -> int:
        return num_edges(self.nodes)

    def build(self, input_shape):
        pre = _build_preprocess(self, input_shape)
        reduced = reduced_shape(pre, self.reduction_stride, self.channels)
        e = 0
        for node in range(self.nodes):
            for j in range(node + 2):
                self.edges[e].build(pre if j < 2 else (reduced if self.reduction else pre))
                e += 1
        self.built = True

    def call(self, inputs, weights, training=None):
        s0, s1 = check_pair(inputs, self.name)
        check_edge_weights(weights, self)
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        rows = ops.unstack(weights, num=self.num_edges)  # one op, not a slice per edge
        e = 0
        for _ in range(self.nodes):
            total = None
            for state in states:
                y = self.edges[e](state, rows[e], training=training)
                total = y if total is None else total + y
                e += 1
            states.append(total)
        return ops.concatenate(states[2:], axis=-1)

    def compute_output_shape(self, inputs_shape, weights_shape=None):
        return _output_shape(self, inputs_shape, self.nodes)

    def get_config(self):
        return {**super().get_config(), "nodes": self.nodes, "channels": self.channels,
                "reduction": self.reduction, "reduction_prev": self.reduction_prev, "ops": list(self.op_names),
                "recompute": self.recompute, "reduction_stride": self.reduction_stride,
                "drop_path_rate": self.drop_path_rate, "drop_path_seed": self.drop_path_seed,
                "partial_channels": self.partial_channels}


def check_genotype_cell(genotype_cell, concat, kind: str) -> tuple:
    """A fixed cell's ``genotype_cell`` and ``concat``, checked by the genotype validator
    (:func:`~emodarts_tf.search_space.genotype.check_cell`, without its input-dependence rule) and
    normalised to a list of lists of ``[op, int]`` and a list of ints (the layers' configs)."""
    nodes, concat = check_cell(genotype_cell, concat, kind, source="genotype_cell", require_input=False)
    return [[[op, idx] for op, idx in node] for node in nodes], concat


def drop_path(x, rate, seed_generator):
    """Zero whole examples of ``x`` with probability ``rate`` and scale the rest by ``1 / (1 - rate)``."""
    mask = drop_path_mask(ops.shape(x)[0], 1, rate, seed_generator, x.dtype)
    return x * ops.reshape(mask, (-1,) + (1,) * (len(x.shape) - 1))


@_register
class FixedCNNCell(keras.layers.Layer):
    """The discrete cell of a genotype: only the chosen ops, with affine BN, and optional drop-path.

    Args:
        genotype_cell: one entry per node, each a list of ``[op_name, input_index]`` pairs (input 0 and 1
            are the cell inputs, 2.. the earlier nodes). The node count is the genotype's.
        concat: the states concatenated into the output (default: every node).
        channels: channels of every node; the output has ``channels * len(concat)``.
        reduction: a reduction cell (stride ``reduction_stride`` on edges from the cell inputs).
        reduction_prev: the previous cell was a reduction cell.
        reduction_stride: 2 (frequency and time) or ``(2, 1)`` (frequency only), as in :class:`SearchCNNCell`.
        drop_path_rate: during training, each non-identity edge output is zeroed per example with this
            probability (and rescaled), as in DARTS. The rate lives in a non-trainable variable so that
            a schedule can change it between epochs (:func:`set_drop_path_rate`); 0 disables drop-path
            altogether (no variable).

    Call arguments:
        inputs: ``[s0, s1]``.
        training: BN and drop-path mode; drop-path is inactive at inference.
    """

    def __init__(self, genotype_cell, concat, channels: int, reduction: bool, reduction_prev: bool,
                 drop_path_rate: float = 0.0, reduction_stride=2, **kwargs):
        super().__init__(**kwargs)
        self.channels = check_int(channels, "channels")
        self.reduction = bool(reduction)
        self.reduction_prev = bool(reduction_prev)
        self.reduction_stride = check_stride(reduction_stride)
        self.genotype_cell, self.concat = check_genotype_cell(
            genotype_cell, concat, "reduce" if self.reduction else "normal"
        )
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.nodes = len(self.genotype_cell)
        self.preprocess0, self.preprocess1 = _preprocess(channels, self.reduction_prev, affine=True,
                                                         stride=self.reduction_stride)
        self.edge_ops = []
        for n, node in enumerate(self.genotype_cell):
            for k, (op, idx) in enumerate(node):
                stride = self.reduction_stride if self.reduction and idx < 2 else 1
                self.edge_ops.append(make_op("cnn", op, channels, stride, affine=True, name=f"node{n}_{k}_{op}"))
        self.seed_generator = keras.random.SeedGenerator() if self.drop_path_rate > 0 else None
        self.drop_path_variable = None

    def build(self, input_shape):
        pre = _build_preprocess(self, input_shape)
        reduced = reduced_shape(pre, self.reduction_stride, self.channels)
        e = 0
        for node in self.genotype_cell:
            for _, idx in node:
                self.edge_ops[e].build(pre if idx < 2 else (reduced if self.reduction else pre))
                e += 1
        if self.drop_path_rate > 0:
            self.drop_path_variable = self.add_weight(
                name="drop_path_rate", shape=(), initializer=keras.initializers.Constant(self.drop_path_rate),
                trainable=False,
            )
        self.built = True

    def call(self, inputs, training=None):
        s0, s1 = check_pair(inputs, self.name)
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        e = 0
        for node in self.genotype_cell:
            total, first = None, None
            for _, idx in node:
                layer = self.edge_ops[e]
                e += 1
                if first is None:
                    first = (layer, states[idx])
                if isinstance(layer, Zero):
                    continue
                y = layer(states[idx], training=training)
                if training and self.drop_path_variable is not None and not isinstance(layer, Identity):
                    y = drop_path(y, self.drop_path_variable, self.seed_generator)
                total = y if total is None else total + y
            if total is None:  # every incoming op is `none`
                layer, state = first
                total = layer(state)
            states.append(total)
        return ops.concatenate([states[i] for i in self.concat], axis=-1)

    def compute_output_shape(self, input_shape):
        return _output_shape(self, input_shape, len(self.concat))

    def get_config(self):
        return {**super().get_config(), "genotype_cell": self.genotype_cell, "concat": self.concat,
                "channels": self.channels, "reduction": self.reduction, "reduction_prev": self.reduction_prev,
                "drop_path_rate": self.drop_path_rate, "reduction_stride": self.reduction_stride}
