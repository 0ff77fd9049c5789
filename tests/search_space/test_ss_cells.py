"""CNN cells: searchable cell shapes and wiring, fixed cell ops, all-none/all-skip nodes, drop-path."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.search_space.cnn_cell import FixedCNNCell, SearchCNNCell
from emodarts_tf.search_space.operations import FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero
from emodarts_tf.search_space.primitives import CNN_PRIMITIVES, num_edges


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _weights(nodes, ops=CNN_PRIMITIVES, seed=0):
    return tf.nn.softmax(tf.random.stateless_normal((num_edges(nodes), len(ops)), seed=(seed, 0)))


@pytest.mark.parametrize(
    "reduction, reduction_prev, s0, s1, out_hw",
    [(False, False, (9, 7), (9, 7), (9, 7)), (True, False, (9, 7), (9, 7), (5, 4)),
     (False, True, (9, 7), (5, 4), (5, 4)), (True, True, (9, 7), (5, 4), (3, 2))],
)
def test_search_cell_output_shape(reduction, reduction_prev, s0, s1, out_hw):
    cell = SearchCNNCell(3, 4, reduction, reduction_prev, CNN_PRIMITIVES)
    y = cell([_x((2, *s0, 6)), _x((2, *s1, 5))], _weights(3), training=True)
    assert tuple(y.shape) == (2, *out_hw, 4 * 3)
    assert tuple(cell.compute_output_shape([(2, *s0, 6), (2, *s1, 5)])) == tuple(y.shape)
    assert len(cell.edges) == num_edges(3) == 9
    assert isinstance(cell.preprocess0, FactorizedReduce if reduction_prev else ReLUConvBN)
    strides = [edge.stride for edge in cell.edges]
    assert strides == [2 if reduction and j < 2 else 1 for n in range(3) for j in range(n + 2)]


def test_search_cell_is_the_sum_of_its_mixed_ops():
    """Rebuild the cell output from its parts: node i = sum_j edge(state_j, w[e])."""
    ops = ("none", "skip_connect", "avg_pool_3x3", "dil_conv_3x3")
    cell = SearchCNNCell(2, 3, False, False, ops)
    s0, s1 = _x((2, 5, 5, 3)), _x((2, 5, 5, 4), 1)
    w = _weights(2, ops)
    y = keras.ops.convert_to_numpy(cell([s0, s1], w, training=False))
    states = [cell.preprocess0(s0, training=False), cell.preprocess1(s1, training=False)]
    n0 = cell.edges[0](states[0], w[0]) + cell.edges[1](states[1], w[1])
    n1 = cell.edges[2](states[0], w[2]) + cell.edges[3](states[1], w[3]) + cell.edges[4](n0, w[4])
    np.testing.assert_allclose(y, np.concatenate([n0, n1], axis=-1), rtol=1e-5, atol=1e-5)


def test_search_cell_rejects_bad_weights_and_inputs():
    cell = SearchCNNCell(2, 4, False, False, ("skip_connect", "max_pool_3x3"))
    with pytest.raises(ValueError, match="weights"):
        cell([_x((2, 4, 4, 4)), _x((2, 4, 4, 4))], tf.ones((4, 2)))
    with pytest.raises(ValueError, match="same resolution"):
        SearchCNNCell(2, 4, False, False, ("skip_connect",))([_x((2, 8, 8, 4)), _x((2, 4, 4, 4))], tf.ones((5, 1)))
    with pytest.raises(ValueError, match="nodes"):
        SearchCNNCell(0, 4, False, False)
    with pytest.raises(ValueError, match="ops"):
        SearchCNNCell(2, 4, False, False, ("lstm_1",))


def test_search_cell_config_round_trip():
    cell = SearchCNNCell(2, 4, True, False, ("none", "sep_conv_5x5"))
    assert SearchCNNCell.from_config(cell.get_config()).get_config() == cell.get_config()


def test_fixed_cell_instantiates_only_chosen_ops():
    genotype = [[["sep_conv_3x3", 0], ["skip_connect", 1]], [["skip_connect", 0], ["none", 2]],
                [["max_pool_3x3", 3], ["dil_conv_5x5", 2]]]
    cell = FixedCNNCell(genotype, [2, 3, 4], 4, reduction=True, reduction_prev=False)
    y = cell([_x((2, 7, 9, 6)), _x((2, 7, 9, 6), 1)], training=True)
    assert tuple(y.shape) == (2, 4, 5, 12)
    kinds = [type(op).__name__ for op in cell.edge_ops]
    assert kinds == ["SepConv", "FactorizedReduce", "FactorizedReduce", "Zero", "PoolBN", "DilConv"]
    assert cell.edge_ops[0].stride == 2 and cell.edge_ops[5].stride == 1
    assert cell.nodes == 3  # the genotype's node count
    assert FixedCNNCell.from_config(cell.get_config()).get_config() == cell.get_config()


def test_fixed_cell_all_skip_is_sum_of_preprocessed_inputs():
    genotype = [[["skip_connect", 0], ["skip_connect", 1]], [["skip_connect", 2], ["skip_connect", 1]]]
    cell = FixedCNNCell(genotype, [2, 3], 3, reduction=False, reduction_prev=False)
    s0, s1 = _x((2, 4, 5, 3)), _x((2, 4, 5, 3), 1)
    y = keras.ops.convert_to_numpy(cell([s0, s1], training=False))
    p0 = keras.ops.convert_to_numpy(cell.preprocess0(s0, training=False))
    p1 = keras.ops.convert_to_numpy(cell.preprocess1(s1, training=False))
    np.testing.assert_allclose(y, np.concatenate([p0 + p1, p0 + 2 * p1], axis=-1), rtol=1e-5, atol=1e-6)
    assert all(isinstance(op, Identity) for op in cell.edge_ops)


def test_fixed_cell_all_none_node_outputs_zeros():
    genotype = [[["none", 0], ["none", 1]], [["none", 2]]]
    for reduction in (False, True):
        cell = FixedCNNCell(genotype, None, 4, reduction=reduction, reduction_prev=False)
        y = keras.ops.convert_to_numpy(cell([_x((2, 5, 5, 3)), _x((2, 5, 5, 3))], training=True))
        side = 3 if reduction else 5
        assert y.shape == (2, side, side, 8)
        assert not np.any(y)
        assert all(isinstance(op, Zero) for op in cell.edge_ops)


def test_fixed_cell_rejects_bad_genotypes():
    with pytest.raises(ValueError, match="genotype_cell"):
        FixedCNNCell([[["lstm_1", 0]]], None, 4, False, False)
    with pytest.raises(ValueError, match="genotype_cell"):
        FixedCNNCell([[["skip_connect", 3]]], None, 4, False, False)
    with pytest.raises(ValueError, match="concat"):
        FixedCNNCell([[["skip_connect", 0]]], [0, 2], 4, True, False)  # unreduced input in a reduction cell
    with pytest.raises(ValueError, match="drop_path_rate"):
        FixedCNNCell([[["skip_connect", 0]]], None, 4, False, False, drop_path_rate=1.0)


def test_drop_path_only_in_training_and_not_on_identity():
    genotype = [[["sep_conv_3x3", 0], ["max_pool_3x3", 1]]]
    x = [_x((8, 4, 4, 3)), _x((8, 4, 4, 3), 1)]
    cell = FixedCNNCell(genotype, None, 3, False, False, drop_path_rate=0.5)
    inference = keras.ops.convert_to_numpy(cell(x, training=False))
    cell.drop_path_variable.assign(0.0)
    np.testing.assert_array_equal(inference, cell(x, training=False))  # the rate plays no part
    reference = keras.ops.convert_to_numpy(cell(x, training=True))
    cell.drop_path_variable.assign(0.5)
    dropped = keras.ops.convert_to_numpy(cell(x, training=True))
    # per example, each edge output is either dropped (0) or scaled by 2: the examples differ
    assert not np.allclose(dropped, reference)
    sep = keras.ops.convert_to_numpy(cell.edge_ops[0](cell.preprocess0(x[0], training=True), training=True))
    pool = keras.ops.convert_to_numpy(cell.edge_ops[1](cell.preprocess1(x[1], training=True), training=True))
    for b in range(8):
        options = [a * sep[b] + c * pool[b] for a in (0, 2) for c in (0, 2)]
        assert any(np.allclose(dropped[b], o, atol=1e-5) for o in options)

    skip_cell = FixedCNNCell([[["skip_connect", 0], ["skip_connect", 1]]], None, 3, False, False,
                             drop_path_rate=0.9)
    a = skip_cell(x, training=True)
    skip_cell.drop_path_variable.assign(0.0)
    np.testing.assert_allclose(a, skip_cell(x, training=True), rtol=1e-6)  # identities are never dropped


def test_sep_conv_cell_op_uses_affine_bn():
    cell = FixedCNNCell([[["sep_conv_5x5", 0]]], None, 4, False, False)
    cell.build([(2, 6, 6, 4), (2, 6, 6, 4)])
    assert isinstance(cell.edge_ops[0], SepConv)
    assert any("gamma" in v.path for v in cell.trainable_weights)


def test_searched_reduction_cell_at_odd_sizes_with_reduction_prev():
    cell = SearchCNNCell(2, 2, True, True, CNN_PRIMITIVES)
    s0, s1 = _x((2, 11, 3, 4)), _x((2, 6, 2, 4))
    y = cell([s0, s1], _weights(2), training=True)
    assert tuple(y.shape) == (2, math.ceil(6 / 2), 1, 4)
