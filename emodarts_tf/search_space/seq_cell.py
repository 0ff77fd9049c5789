"""SeqNN cells over a real time axis: the searchable cell (every edge a mixed SeqNN op) and the fixed cell.

A cell reads two sequences ``[s0, s1]`` (the outputs of the two previous sequence cells; for the first
cell both are the projected CNN sequence), maps each with its own Dense to ``units`` features, and
builds ``N`` nodes, node ``i`` summing one op over each of its inputs (the 2 preprocessed inputs, then
the earlier nodes). The output is a Dense of the concatenated nodes back to ``units``:
``(B, T, units)``.
"""
from __future__ import annotations

import keras
from keras import ops

from emodarts_tf.search_space.cnn_cell import check_genotype_cell
from emodarts_tf.search_space.mixed_op import MixedSeqOp
from emodarts_tf.search_space.op_registry import make_op
from emodarts_tf.search_space.primitives import SEQ_PRIMITIVES, num_edges
from emodarts_tf.search_space.seq_bank import GroupedSeqEdges
from emodarts_tf.search_space.seq_ops import SeqZero
from emodarts_tf.search_space.validation import check_bool, check_edge_weights, check_int, check_ops, check_pair

_register = keras.saving.register_keras_serializable(package="emodarts_tf")


def _build_seq_preprocess(cell, input_shape):
    s0_shape, s1_shape = (tuple(s) for s in check_pair(input_shape, cell.name))
    if len(s0_shape) != 3 or len(s1_shape) != 3:
        raise ValueError(
            f"{cell.name}: expected two sequences (B, T, features), received shapes {s0_shape}, {s1_shape}"
        )
    if s0_shape[1] is not None and s1_shape[1] is not None and s0_shape[1] != s1_shape[1]:
        raise ValueError(
            f"{cell.name}: expected s0 and s1 of the same length T, received {s0_shape[1]} and {s1_shape[1]}"
        )
    cell.preprocess0.build(s0_shape)
    cell.preprocess1.build(s1_shape)
    return (s1_shape[0], s1_shape[1], cell.units)


def edge_index(node: int, state: int) -> int:
    """Row of the mixing weights of the edge from ``state`` (0, 1: the cell inputs; 2..: nodes) to ``node``."""
    return sum(i + 2 for i in range(node)) + state


def readers(nodes: int, state: int) -> list:
    """The nodes that read ``state`` (0, 1: the cell inputs, 2 + k: node k), in order."""
    return [node for node in range(nodes) if state < node + 2]


@_register
class SearchSeqCell(keras.layers.Layer):
    """A searchable SeqNN cell: every edge a mixed op over ``ops``.

    Two implementations of the same function (the test suite checks that they agree):

    - ``grouped=True`` (default): the edges that read the same state (a cell input or a node) are one
      :class:`~emodarts_tf.search_space.seq_bank.GroupedSeqEdges`, which runs all their recurrent
      candidates in one or two time loops. Far less graph and memory than one loop per candidate
      (the paper's space has 32 recurrent layers per edge).
    - ``grouped=False``: one :class:`MixedSeqOp` per edge, each candidate a plain Keras layer (cuDNN
      kernels on a GPU).

    Args:
        nodes: intermediate nodes ``N`` (``num_edges(N)`` edges, node 0's 2 first).
        units: features of every node and of the output.
        ops: candidate SeqNN op names (the columns of the weight matrix).
        grouped: the implementation (see above).
        recompute: gradient checkpointing of the grouped banks (``GroupedSeqEdges(recompute=True)``);
            grouped cells only.

    Call arguments:
        inputs: ``[s0, s1]``, two sequences ``(B, T, features)``.
        weights: ``(num_edges(nodes), len(ops))`` mixing weights (softmaxed alphas).
        training: passed to the ops.
    """

    def __init__(self, nodes: int, units: int, ops: tuple = SEQ_PRIMITIVES, grouped: bool = True,
                 recompute: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.nodes = check_int(nodes, "nodes")
        self.units = check_int(units, "units")
        self.op_names = check_ops(ops, "seq")
        self.grouped = check_bool(grouped, "grouped")
        if check_bool(recompute, "recompute") and not grouped:
            raise ValueError(f"recompute: expected False with grouped=False (only grouped cells recompute), "
                             f"received {recompute!r}")
        self.recompute = recompute
        self.preprocess0 = keras.layers.Dense(units, name="preprocess0")
        self.preprocess1 = keras.layers.Dense(units, name="preprocess1")
        if grouped:
            # One bank per state that some node reads (the last node is read by none).
            self.banks = [GroupedSeqEdges(self.op_names, units, len(readers(nodes, state)), recompute=recompute,
                                          name=f"state_{state}")
                          for state in range(nodes + 1)]
            self.edges = []
        else:
            self.banks = []
            self.edges = [MixedSeqOp(self.op_names, units, name=f"edge_{node}_{j}")
                          for node in range(nodes) for j in range(node + 2)]
        self.output_projection = keras.layers.Dense(units, name="output_projection")

    @property
    def num_edges(self) -> int:
        return num_edges(self.nodes)

    def build(self, input_shape):
        shape = _build_seq_preprocess(self, input_shape)
        for layer in self.banks + self.edges:
            layer.build(shape)
        self.output_projection.build((shape[0], shape[1], self.units * self.nodes))
        self.built = True

    def call(self, inputs, weights, training=None):
        s0, s1 = check_pair(inputs, self.name)
        check_edge_weights(weights, self)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        rows = ops.unstack(weights, num=self.num_edges)  # one op, not a slice per edge
        if self.grouped:
            nodes = [None] * self.nodes
            for state, bank in enumerate(self.banks):
                if state >= 2:  # node state - 2 has all its inputs once the states before it are read
                    states.append(nodes[state - 2])
                targets = readers(self.nodes, state)
                # Rows stacked (not gathered) keep the alphas' gradient dense.
                bank_weights = ops.stack([rows[edge_index(node, state)] for node in targets], axis=0)
                for node, y in zip(targets, bank(states[state], bank_weights, training=training)):
                    nodes[node] = y if nodes[node] is None else nodes[node] + y
            states.append(nodes[-1])
        else:
            e = 0
            for _ in range(self.nodes):
                total = None
                for state in states:
                    y = self.edges[e](state, rows[e], training=training)
                    total = y if total is None else total + y
                    e += 1
                states.append(total)
        return self.output_projection(ops.concatenate(states[2:], axis=-1))

    def compute_output_shape(self, inputs_shape, weights_shape=None):
        return (inputs_shape[1][0], inputs_shape[1][1], self.units)

    def get_config(self):
        return {**super().get_config(), "nodes": self.nodes, "units": self.units, "ops": list(self.op_names),
                "grouped": self.grouped, "recompute": self.recompute}


@_register
class FixedSeqCell(keras.layers.Layer):
    """The discrete SeqNN cell of a genotype: only the chosen ops.

    Args:
        genotype_cell: one entry per node, each a list of ``[op_name, input_index]`` pairs with SeqNN op
            names (input 0 and 1 are the cell inputs, 2.. the earlier nodes).
        concat: the states concatenated before the output Dense (default: every node).
        units: features of every node and of the output.

    Call arguments:
        inputs: ``[s0, s1]``, two sequences ``(B, T, features)``.
        training: passed to the ops.
    """

    def __init__(self, genotype_cell, concat, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = check_int(units, "units")
        self.genotype_cell, self.concat = check_genotype_cell(genotype_cell, concat, "seq")
        self.nodes = len(self.genotype_cell)
        self.preprocess0 = keras.layers.Dense(units, name="preprocess0")
        self.preprocess1 = keras.layers.Dense(units, name="preprocess1")
        self.edge_ops = [make_op("seq", op, units, name=f"node{n}_{k}_{op}")
                         for n, node in enumerate(self.genotype_cell) for k, (op, _) in enumerate(node)]
        self.output_projection = keras.layers.Dense(units, name="output_projection")

    def build(self, input_shape):
        shape = _build_seq_preprocess(self, input_shape)
        for layer in self.edge_ops:
            layer.build(shape)
        self.output_projection.build((shape[0], shape[1], self.units * len(self.concat)))
        self.built = True

    def call(self, inputs, training=None):
        s0, s1 = check_pair(inputs, self.name)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for node in self.genotype_cell:
            total, first = None, None
            for _, idx in node:
                layer = self.edge_ops[e]
                e += 1
                if first is None:
                    first = states[idx]
                if isinstance(layer, SeqZero):
                    continue
                y = layer(states[idx], training=training)
                total = y if total is None else total + y
            states.append(ops.zeros_like(first) if total is None else total)
        return self.output_projection(ops.concatenate([states[i] for i in self.concat], axis=-1))

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], input_shape[1][1], self.units)

    def get_config(self):
        return {**super().get_config(), "genotype_cell": self.genotype_cell, "concat": self.concat,
                "units": self.units}
