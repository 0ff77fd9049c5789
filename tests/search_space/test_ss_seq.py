"""SeqNN ops and cells: shapes, the time axis (causality), independence from the batch, configs."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.search_space.op_registry import make_seq_op
from emodarts_tf.search_space.primitives import SEQ_PRIMITIVES, num_edges
from emodarts_tf.search_space.seq_cell import FixedSeqCell, SearchSeqCell
from emodarts_tf.search_space.seq_ops import AttentionRNN, SeqZero, StackedRNN

UNIDIRECTIONAL = ("lstm_1", "lstm_2", "lstm_3", "lstm_4", "rnn_1", "rnn_2", "rnn_3", "rnn_4")
ATTENTION = ("lstm_att_1", "lstm_att_2", "rnn_att_1", "rnn_att_2")


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("units", [6, 5])
def test_every_seq_op_keeps_shape(units):
    for op in SEQ_PRIMITIVES:
        layer = make_seq_op(op, units)
        y = layer(_x((3, 4, units)), training=True)
        assert tuple(y.shape) == (3, 4, units), op
        assert tuple(layer.compute_output_shape((3, 4, units))) == (3, 4, units), op


def test_stacked_layers_and_directions():
    assert len(make_seq_op("lstm_3", 4).rnns) == 3
    assert isinstance(make_seq_op("rnn_2", 4).rnns[0], keras.layers.SimpleRNN)
    att = make_seq_op("lstm_att_2", 8)
    assert len(att.birnns) == 2 and att.projection is None
    assert att.birnns[0].forward_layer.units == 4
    assert make_seq_op("rnn_att_1", 7).projection is not None


def test_unidirectional_ops_run_causally_over_time():
    x = _x((2, 6, 4))
    x_changed = x.copy()
    x_changed[:, 3:] += 5.0
    for op in UNIDIRECTIONAL:
        layer = make_seq_op(op, 4)
        y, y_changed = (keras.ops.convert_to_numpy(layer(v)) for v in (x, x_changed))
        np.testing.assert_allclose(y[:, :3], y_changed[:, :3], rtol=1e-6, atol=1e-6, err_msg=op)
        assert np.abs(y[:, 3:] - y_changed[:, 3:]).max() > 1e-3, op


def test_attention_ops_see_the_whole_sequence():
    x = _x((2, 6, 4))
    x_changed = x.copy()
    x_changed[:, -1] += 5.0
    for op in ATTENTION:
        layer = make_seq_op(op, 4)
        y, y_changed = (keras.ops.convert_to_numpy(layer(v)) for v in (x, x_changed))
        assert np.abs(y[:, 0] - y_changed[:, 0]).max() > 1e-4, op  # t=0 depends on the last step


def test_examples_do_not_mix_across_the_batch():
    """The PyTorch original ran its recurrence across the batch; here each example stands alone."""
    x = _x((3, 5, 4))
    for op in ("lstm_2", "rnn_1") + ATTENTION:
        layer = make_seq_op(op, 4)
        y = keras.ops.convert_to_numpy(layer(x))
        for i in range(3):
            alone = keras.ops.convert_to_numpy(layer(x[i:i + 1]))[0]
            np.testing.assert_allclose(y[i], alone, rtol=1e-5, atol=1e-6, err_msg=op)


def test_attention_op_runs_at_different_batch_sizes_in_one_traced_function():
    layer = make_seq_op("lstm_att_1", 6)
    fn = tf.function(lambda x: layer(x, training=True), reduce_retracing=True)
    for batch in (2, 5, 16, 3):
        assert tuple(fn(tf.random.normal((batch, 4, 6))).shape) == (batch, 4, 6)
    assert all("batch" not in v.path for v in layer.weights)
    shapes = {tuple(v.shape) for v in layer.weights}
    assert all(16 not in s and 5 not in s for s in shapes)


def test_search_seq_cell_shapes_and_gradients():
    ops = ("none", "skip_connect", "lstm_1", "rnn_att_1")
    cell = SearchSeqCell(3, 6, ops)
    weights = tf.nn.softmax(tf.random.normal((num_edges(3), len(ops))))
    s0, s1 = _x((2, 5, 8)), _x((2, 5, 6), seed=1)  # inputs of different widths
    with tf.GradientTape() as tape:
        tape.watch(weights)
        y = cell([s0, s1], weights, training=True)
        loss = tf.reduce_sum(y * y)
    assert tuple(y.shape) == (2, 5, 6)
    grads = tape.gradient(loss, cell.trainable_weights + [weights])
    assert all(g is not None for g in grads)
    assert np.all(grads[-1].numpy()[:, 0] == 0) and np.any(grads[-1].numpy()[:, 1:] != 0)
    with pytest.raises(ValueError, match="weights"):
        cell([s0, s1], tf.zeros((num_edges(2), len(ops))))


def test_fixed_seq_cell_instantiates_only_chosen_ops():
    genotype = [[["lstm_2", 0], ["skip_connect", 1]], [["rnn_att_1", 2], ["none", 0]], [["none", 1], ["none", 3]]]
    cell = FixedSeqCell(genotype, [2, 3, 4], 6)
    y = cell([_x((2, 5, 6)), _x((2, 5, 6), 1)], training=True)
    assert tuple(y.shape) == (2, 5, 6)
    kinds = [type(op).__name__ for op in cell.edge_ops]
    assert kinds == ["StackedRNN", "Identity", "AttentionRNN", "SeqZero", "SeqZero", "SeqZero"]
    clone = FixedSeqCell.from_config(cell.get_config())
    assert clone.get_config() == cell.get_config()


def test_fixed_seq_cell_all_none_node_is_zero():
    cell = FixedSeqCell([[["none", 0], ["none", 1]]], [2], 4)
    y = keras.ops.convert_to_numpy(cell([_x((2, 3, 4)), _x((2, 3, 4), 1)]))
    bias = keras.ops.convert_to_numpy(cell.output_projection.bias)
    np.testing.assert_allclose(y, np.broadcast_to(bias, y.shape), atol=1e-7)  # Dense(0) = bias


def test_seq_cells_reject_bad_input():
    with pytest.raises(ValueError, match="genotype_cell"):
        FixedSeqCell([[["sep_conv_3x3", 0]]], None, 4)
    with pytest.raises(ValueError, match="genotype_cell"):
        FixedSeqCell([[["lstm_1", 2]]], None, 4)
    with pytest.raises(ValueError, match="units"):
        make_seq_op("lstm_1", 0)
    with pytest.raises(ValueError, match="num_heads"):
        AttentionRNN("lstm", 1, 6, num_heads=4)
    with pytest.raises(ValueError, match="same length"):
        SearchSeqCell(1, 4, ("lstm_1",))([_x((2, 3, 4)), _x((2, 5, 4))], tf.ones((2, 1)))


def test_seq_config_round_trip():
    for layer in (SeqZero(), StackedRNN("rnn", 2, 5), AttentionRNN("lstm", 2, 6, num_heads=2),
                  SearchSeqCell(2, 4, ("none", "lstm_1"))):
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config


def test_search_seq_cell_rejects_wrong_weight_shape_naming_the_cell():
    import tensorflow as tf

    from emodarts_tf.search_space.seq_cell import SearchSeqCell

    cell = SearchSeqCell(2, 4, ("none", "skip_connect", "rnn_1"), name="seqcell")
    x = np.zeros((2, 5, 4), "float32")
    with pytest.raises(ValueError, match=r"seqcell: weights: expected shape \(5, 3\), received \(5, 2\)"):
        cell([x, x], tf.ones((5, 2)))
