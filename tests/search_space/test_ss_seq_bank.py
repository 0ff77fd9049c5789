"""Grouped SeqNN edges: the same functions as the plain Keras ops, in a few time loops."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.search_space.op_registry import make_seq_op
from emodarts_tf.search_space.primitives import SEQ_PRIMITIVES, num_edges
from emodarts_tf.search_space.seq_bank import GroupedSeqEdges, share_functions
from emodarts_tf.search_space.seq_cell import SearchSeqCell, edge_index, readers


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _plain_mixture(bank, x, weights, edge):
    """``sum_o w[o] * op_o(x)`` with every candidate a plain Keras layer holding the bank's weights."""
    out = np.zeros_like(x)
    for o, op in enumerate(bank.op_names):
        if op == "none":
            continue
        if op == "skip_connect":
            y = x
        else:
            layer = make_seq_op(op, bank.units)
            layer.build(x.shape)
            layer.set_weights(bank.candidate_weights(edge, op))
            y = keras.ops.convert_to_numpy(layer(x, training=True))
        out += weights[edge, o] * y
    return out


@pytest.mark.parametrize("units", [6, 5])  # odd units: 3 per direction and a projection back
def test_bank_equals_the_plain_keras_ops(units):
    keras.utils.set_random_seed(1)
    bank = GroupedSeqEdges(SEQ_PRIMITIVES, units, num_edges=3)
    x = _x((2, 7, units))
    weights = np.random.default_rng(2).random((3, len(SEQ_PRIMITIVES))).astype("float32")
    outs = bank(x, weights, training=True)
    assert len(outs) == 3
    for edge, y in enumerate(outs):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(y), _plain_mixture(bank, x, weights, edge),
                                   rtol=1e-5, atol=2e-6, err_msg=f"edge {edge}")


@pytest.mark.parametrize("ops", [("none", "lstm_2"), ("skip_connect", "rnn_att_2"), ("rnn_1", "rnn_3"),
                                 ("none",), ("none", "skip_connect")])
def test_bank_on_restricted_scopes(ops):
    bank = GroupedSeqEdges(ops, 4, num_edges=2)
    x = _x((3, 5, 4))
    weights = np.full((2, len(ops)), 1.0 / len(ops), "float32")
    for edge, y in enumerate(bank(x, weights)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(y), _plain_mixture(bank, x, weights, edge),
                                   rtol=1e-5, atol=2e-6)


def test_bank_initial_weights_follow_keras_lstm_conventions():
    keras.utils.set_random_seed(3)
    bank = GroupedSeqEdges(("lstm_1",), 8, num_edges=2)
    bank.build((None, 5, 8))
    kernel, recurrent, bias = bank.candidate_weights(1, "lstm_1")
    np.testing.assert_allclose(bias, np.r_[np.zeros(8), np.ones(8), np.zeros(16)])  # unit forget bias
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(8), atol=1e-5)  # orthogonal rows
    assert np.abs(kernel).max() <= np.sqrt(6.0 / (8 + 32)) + 1e-6  # Glorot uniform bound
    other = bank.candidate_weights(0, "lstm_1")[1]
    assert np.abs(other - recurrent).max() > 1e-3  # each cell drawn on its own


def _transplant(grouped: SearchSeqCell, plain: SearchSeqCell) -> None:
    """Give the per-edge cell the grouped cell's weights, edge by edge."""
    for layer in ("preprocess0", "preprocess1", "output_projection"):
        getattr(plain, layer).set_weights(getattr(grouped, layer).get_weights())
    for state, bank in enumerate(grouped.banks):
        for position, node in enumerate(readers(grouped.nodes, state)):
            edge = plain.edges[edge_index(node, state)]
            for op in grouped.op_names:
                if op not in ("none", "skip_connect"):
                    edge.op_layer(op).set_weights(bank.candidate_weights(position, op))


def test_grouped_cell_equals_the_per_edge_cell_in_values_and_gradients():
    keras.utils.set_random_seed(4)
    ops = ("none", "skip_connect", "lstm_1", "lstm_2", "rnn_2", "lstm_att_2", "rnn_att_1")
    nodes, units = 3, 6
    grouped = SearchSeqCell(nodes, units, ops, grouped=True)
    plain = SearchSeqCell(nodes, units, ops, grouped=False)
    s0, s1 = _x((2, 5, 8)), _x((2, 5, units), seed=1)
    grouped.build([s0.shape, s1.shape])
    plain.build([s0.shape, s1.shape])
    _transplant(grouped, plain)
    weights = tf.nn.softmax(tf.random.stateless_normal((num_edges(nodes), len(ops)), (5, 6)))
    results = []
    for cell in (grouped, plain):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            y = cell([s0, s1], weights, training=True)
            loss = tf.reduce_sum(tf.sin(y))
        results.append((y.numpy(), tape.gradient(loss, weights).numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)
    assert np.all(results[0][1][:, 0] == 0)  # `none` gets no gradient
    assert grouped.count_params() == plain.count_params()


def _while_loops(fn, *args) -> int:
    graph = fn.get_concrete_function(*args).graph
    return sum(op.type in ("While", "StatelessWhile") for op in graph.get_operations())


def test_grouped_cell_runs_few_time_loops():
    """All 14 candidates on 9 edges: 2 loops per read state (the 2nd for bidirectional layer 2), where each
    edge alone runs 32 (one cell of 1 node, 2 edges, ungrouped: 64)."""
    nodes = 3
    cell = SearchSeqCell(nodes, 4, SEQ_PRIMITIVES, grouped=True)
    x = tf.constant(_x((2, 5, 4)))
    weights = tf.nn.softmax(tf.zeros((num_edges(nodes), len(SEQ_PRIMITIVES))))
    fn = tf.function(lambda x: cell([x, x], weights, training=True))
    assert _while_loops(fn, x) == 2 * (nodes + 1)
    plain = SearchSeqCell(1, 4, SEQ_PRIMITIVES, grouped=False)
    one_node = tf.nn.softmax(tf.zeros((num_edges(1), len(SEQ_PRIMITIVES))))
    fn_plain = tf.function(lambda x: plain([x, x], one_node, training=True))
    assert _while_loops(fn_plain, x) == num_edges(1) * 32


def _library_while_bodies(concrete) -> int:
    """Distinct while-loop body functions in a traced function's library (all nesting levels)."""
    library = concrete.graph.as_graph_def().library.function
    return sum(1 for f in library if "while_body" in f.signature.name)


def test_banks_of_equal_structure_share_one_traced_function():
    """Two cells whose banks call the shared functions: the same values and gradients (w.r.t. input, mixing
    weights and every variable) as each bank computing inline, and a gradient graph with the loop bodies
    of one cell, not two."""
    keras.utils.set_random_seed(6)
    ops = ("none", "skip_connect", "lstm_2", "rnn_1", "lstm_att_2")
    nodes, units = 2, 4
    cells = [SearchSeqCell(nodes, units, ops, name=f"cell{i}") for i in range(2)]
    x = tf.constant(_x((2, 5, units)))
    for cell in cells:
        cell.build([x.shape, x.shape])
    banks = [bank for cell in cells for bank in cell.banks]
    weights = tf.nn.softmax(tf.random.stateless_normal((num_edges(nodes), len(ops)), (1, 2)))
    variables = [v for cell in cells for v in cell.trainable_variables]

    def gradients(x, weights):
        with tf.GradientTape() as tape:
            tape.watch([x, weights])
            y = cells[1]([cells[0]([x, x], weights, training=True), x], weights, training=True)
            loss = tf.reduce_sum(tf.sin(y))
        return [y] + tape.gradient(loss, [x, weights] + variables)

    inline = tf.function(gradients).get_concrete_function(x, weights)
    # Per cell: the inputs' banks are read by 2 edges each, node 0's by 1: two structures for all six banks.
    assert share_functions(banks) == 2
    assert banks[0]._shared_function is banks[1]._shared_function is banks[nodes + 1]._shared_function
    assert banks[2]._shared_function is banks[5]._shared_function is not banks[0]._shared_function
    shared = tf.function(gradients).get_concrete_function(x, weights)
    for a, b in zip(inline(x, weights), shared(x, weights)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # Inline: each bank traces its own loops (6 banks); shared: one set of bodies per structure (2).
    assert _library_while_bodies(inline) == 3 * _library_while_bodies(shared)
    with pytest.raises(ValueError, match="GroupedSeqEdges"):
        share_functions([keras.layers.Dense(2)])


@pytest.mark.parametrize("graph", [False, True])
def test_recomputed_bank_equals_the_plain_bank_in_values_and_gradients(graph):
    """recompute=True (the backward re-runs the bank's loops) gives the same outputs and gradients w.r.t. the
    input, the mixing weights and every weight; in graphs through the shared function as well."""
    ops = ("none", "skip_connect", "lstm_2", "rnn_att_2")
    banks = []
    for recompute in (False, True):
        keras.utils.set_random_seed(8)
        bank = GroupedSeqEdges(ops, 4, num_edges=2, recompute=recompute)
        bank.build((2, 5, 4))
        banks.append(bank)
    share_functions(banks[1:])
    x = tf.constant(_x((2, 5, 4)))
    weights = tf.nn.softmax(tf.random.stateless_normal((2, len(ops)), (3, 4)))

    def gradients(bank, x, weights):
        with tf.GradientTape() as tape:
            tape.watch([x, weights])
            outs = bank(x, weights, training=True)
            loss = sum(tf.reduce_sum(tf.sin(y) * (i + 1)) for i, y in enumerate(outs))
        return outs + tape.gradient(loss, [x, weights] + bank.trainable_variables)

    results = []
    for bank in banks:
        fn = tf.function(lambda x, w, bank=bank: gradients(bank, x, w)) if graph else (
            lambda x, w, bank=bank: gradients(bank, x, w))
        results.append(fn(x, weights))
    assert len(results[0]) == 2 + 2 + len(banks[0].trainable_variables)
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert GroupedSeqEdges.from_config(banks[1].get_config()).recompute is True
    with pytest.raises(ValueError, match="recompute"):
        GroupedSeqEdges(ops, 4, num_edges=1, recompute="yes")
    with pytest.raises(ValueError, match="recompute"):
        SearchSeqCell(1, 4, ops, grouped=False, recompute=True)


def test_bank_mixed_precision_and_config():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        bank = GroupedSeqEdges(("lstm_2", "rnn_att_1"), 4, num_edges=2, name="bank")
        outs = bank(_x((2, 3, 4)).astype("float16"), np.ones((2, 2), "float32"))
        assert all(o.dtype == "float16" for o in outs)
        assert all(v.dtype == "float32" for v in bank.weights)
    finally:
        keras.config.set_dtype_policy("float32")
    config = bank.get_config()
    assert GroupedSeqEdges.from_config(config).get_config() == config
    assert SearchSeqCell.from_config(SearchSeqCell(2, 4, ("lstm_1",), grouped=False).get_config()).grouped is False


def test_bank_rejects_bad_arguments():
    for kwargs, match in (({"units": 0}, "units"), ({"num_edges": 0}, "num_edges"),
                          ({"units": 5, "num_heads": 2}, "num_heads"), ({"ops": ("sep_conv_3x3",)}, "ops")):
        args = {"ops": ("lstm_1",), "units": 4, "num_edges": 1, **kwargs}
        with pytest.raises(ValueError, match=match):
            GroupedSeqEdges(**args)
    bank = GroupedSeqEdges(("lstm_1",), 4, num_edges=2, name="bank")
    with pytest.raises(ValueError, match=r"bank: weights: expected shape \(2, 1\)"):
        bank(_x((2, 3, 4)), np.ones((3, 1), "float32"))
    with pytest.raises(ValueError, match="4 input features"):
        GroupedSeqEdges(("lstm_1",), 4, num_edges=1)(_x((2, 3, 5)), np.ones((1, 1), "float32"))
    with pytest.raises(ValueError, match="edge"):
        bank.candidate_weights(2, "lstm_1")
    with pytest.raises(ValueError, match="op"):
        bank.candidate_weights(0, "skip_connect")
    with pytest.raises(ValueError, match="grouped"):
        SearchSeqCell(1, 4, ("lstm_1",), grouped="yes")
