"""The op registry (one table for CNN and SeqNN ops), the argument validators, and the genotype validator
shared by genotypes and the fixed cells."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from emodarts_tf.config import SearchSpaceConfig
from emodarts_tf.search_space.cnn_cell import FixedCNNCell
from emodarts_tf.search_space.genotype import Genotype, check_cell
from emodarts_tf.search_space.network import SearchBackbone
from emodarts_tf.search_space.op_registry import OPS, make_cnn_op, make_op, make_seq_op
from emodarts_tf.search_space.operations import DilConv, FactorizedReduce, Identity, PoolBN, SepConv, Zero
from emodarts_tf.search_space.primitives import CNN_PRIMITIVES, PRIMITIVES, SEQ_PRIMITIVES
from emodarts_tf.search_space.seq_bank import GroupedSeqEdges
from emodarts_tf.search_space.seq_cell import FixedSeqCell
from emodarts_tf.search_space.seq_ops import AttentionRNN, SeqZero, StackedRNN
from emodarts_tf.search_space.validation import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_ops,
    check_rate,
    check_stride,
)


def test_registry_has_one_factory_per_primitive_of_each_kind():
    assert set(OPS) == {"cnn", "seq"}
    assert tuple(OPS["cnn"]) == CNN_PRIMITIVES and tuple(OPS["seq"]) == SEQ_PRIMITIVES
    assert PRIMITIVES == {"cnn": CNN_PRIMITIVES, "seq": SEQ_PRIMITIVES}


@pytest.mark.parametrize("kind, op, stride, expected", [
    ("cnn", "none", 2, (Zero, {"stride": 2})),
    ("cnn", "skip_connect", 1, (Identity, {})),
    ("cnn", "skip_connect", 2, (FactorizedReduce, {"channels": 4})),
    ("cnn", "max_pool_3x3", 2, (PoolBN, {"pool_type": "max", "stride": 2, "pool_size": 3})),
    ("cnn", "avg_pool_3x3", 1, (PoolBN, {"pool_type": "avg", "stride": 1, "pool_size": 3})),
    ("cnn", "sep_conv_5x5", 2, (SepConv, {"kernel_size": 5, "stride": 2, "channels": 4})),
    ("cnn", "dil_conv_3x3", 1, (DilConv, {"kernel_size": 3, "dilation": 2, "channels": 4})),
    ("seq", "none", 1, (SeqZero, {})),
    ("seq", "skip_connect", 1, (Identity, {})),
    ("seq", "rnn_3", 1, (StackedRNN, {"cell_type": "rnn", "num_layers": 3, "units": 4})),
    ("seq", "lstm_att_2", 1, (AttentionRNN, {"cell_type": "lstm", "num_layers": 2, "units": 4})),
])
def test_make_op_builds_the_named_layer(kind, op, stride, expected):
    cls, config = expected
    layer = make_op(kind, op, 4, stride, name="edge")
    assert type(layer) is cls and layer.name == "edge"
    assert {k: layer.get_config()[k] for k in config} == config


def test_affine_and_pool_bn_reach_the_cnn_ops_and_not_the_seq_ops():
    assert make_op("cnn", "max_pool_3x3", 4, pool_bn=True).get_config()["bn"] is True
    assert make_op("cnn", "max_pool_3x3", 4).get_config()["bn"] is False
    assert make_op("cnn", "sep_conv_3x3", 4, affine=False).get_config()["affine"] is False
    a = make_op("seq", "lstm_1", 4, affine=False, pool_bn=True).get_config()
    b = make_seq_op("lstm_1", 4).get_config()
    assert {k: v for k, v in a.items() if k != "name"} == {k: v for k, v in b.items() if k != "name"}
    assert type(make_cnn_op("skip_connect", 4, 2)) is FactorizedReduce


def test_make_op_rejects_bad_arguments_naming_them():
    for args, kwargs, match in (
        (("gru", "none", 4), {}, "kind: expected one of"),
        (("seq", "sep_conv_3x3", 4), {}, "op_name: expected one of .*'lstm_1'.*received 'sep_conv_3x3'"),
        (("cnn", "lstm_1", 4), {}, "op_name: expected one of .*'sep_conv_3x3'.*received 'lstm_1'"),
        (("seq", "lstm_1", 4), {"stride": 2}, "stride: expected 1 for SeqNN ops, received 2"),
        (("cnn", "none", 4), {"stride": 3}, r"stride: expected 1, 2 or a pair of them \(H, W\), received 3"),
        (("seq", "lstm_1", 0), {}, "units: expected an integer >= 1, received 0"),
        (("cnn", "sep_conv_3x3", 2.5), {}, "channels: expected an integer >= 1, received 2.5"),
    ):
        with pytest.raises(ValueError, match=match):
            make_op(*args, **kwargs)


def test_validators_name_the_argument_and_normalise():
    assert check_int(np.int64(3), "n") == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_int(None, "n", optional=True) is None
    assert check_int(0, "n", 0) == 0
    for value in (True, 0, 1.0, "1"):
        with pytest.raises(ValueError, match=f"n: expected an integer >= 1, received {value!r}"):
            check_int(value, "n")
    with pytest.raises(ValueError, match="max_skip: expected None or an integer >= 0, received -1"):
        check_int(-1, "max_skip", 0, optional=True)
    assert check_number(0, "wd") == 0.0 and check_number(None, "clip", strict=True, optional=True) is None
    with pytest.raises(ValueError, match="clip: expected None or a number > 0, received 0"):
        check_number(0, "clip", strict=True, optional=True)
    with pytest.raises(ValueError, match="wd: expected a number >= 0, received True"):
        check_number(True, "wd")
    assert check_rate(0, "rate") == 0.0
    for value in (1.0, -0.1, False, "0.1"):
        with pytest.raises(ValueError, match=r"rate: expected a number in \[0, 1\)"):
            check_rate(value, "rate")
    assert check_stride(2) == 2
    with pytest.raises(ValueError, match=r"stride: expected 1, 2 or a pair of them \(H, W\), received True"):
        check_stride(True)
    with pytest.raises(ValueError, match="recompute: expected a bool, received 1"):
        check_bool(1, "recompute")
    assert check_choice("flatten", ("avg", "flatten"), "space.frequency_pooling") == "flatten"
    with pytest.raises(ValueError, match=r"space.pooling: expected one of \('mean', 'mean_std'\), received 'max'"):
        check_choice("max", ("mean", "mean_std"), "space.pooling")
    assert check_ops(["none", "lstm_1"], "seq") == ("none", "lstm_1")
    with pytest.raises(ValueError, match="ops: expected distinct op names"):
        check_ops(("none", "none"), "cnn")


def test_one_genotype_validator_for_genotypes_and_fixed_cells():
    """The fixed cells report what the genotype reports, under their argument's name."""
    bad_cells = [
        ("normal", [[["conv_7x7", 0]]], None, "normal node 0: unknown op 'conv_7x7'"),
        ("reduce", [[["max_pool_3x3", 0]], [["skip_connect", 3]]], None, "reduce node 1: input index 3 out of range"),
        ("seq", [[["lstm_1", 0], ["sep_conv_3x3", 1]]], None, "seq node 0: unknown op 'sep_conv_3x3'"),
        ("reduce", [[["max_pool_3x3", 0]]], [1, 2], "reduce_concat index 1 is a cell input"),
        ("normal", [[["skip_connect", 0]]], [5], r"normal_concat index 5 out of range 0..2"),
        ("normal", [[["skip_connect", True]]], None,
         r"normal node 0: edge \['skip_connect', True\] must be \[str, int\]"),
        ("seq", [[]], None, "seq node 0 has no incoming edge"),
        ("seq", [[["lstm_1", 0]]], [], "seq_concat is empty"),
    ]
    base = {"normal": [[["skip_connect", 0]]], "reduce": [[["max_pool_3x3", 0]]], "seq": [[["lstm_1", 0]]]}
    for kind, nodes, concat, message in bad_cells:
        data = {**base, kind: nodes, f"{kind}_concat": concat}
        with pytest.raises(ValueError, match=f"^g.json: {message}"):
            Genotype.from_dict(data, source="g.json")
        with pytest.raises(ValueError, match=f"^genotype_cell: {message}"):
            if kind == "seq":
                FixedSeqCell(nodes, concat, 4)
            else:
                FixedCNNCell(nodes, concat, 4, reduction=kind == "reduce", reduction_prev=False)


def test_check_cell_normalises_and_only_genotypes_require_the_input():
    nodes, concat = check_cell([[["none", 0], ["none", 1]]], None, "seq", require_input=False)
    assert nodes == [[("none", 0), ("none", 1)]] and concat == [2]
    with pytest.raises(ValueError, match="cell 'seq': its output does not depend on the cell inputs"):
        check_cell([[["none", 0], ["none", 1]]], None, "seq")
    cell = FixedSeqCell([[["none", 0], ["none", 1]]], None, 4)  # a layer computes any cell
    assert cell.genotype_cell == [[["none", 0], ["none", 1]]] and cell.concat == [2]
    with pytest.raises(ValueError, match="cell kind: expected one of"):
        check_cell([[["none", 0]]], None, "cnn")


def test_grouped_seq_edges_config_round_trip():
    bank = GroupedSeqEdges(("none", "skip_connect", "lstm_1", "rnn_att_1"), 4, 3, num_heads=2, recompute=True,
                           name="bank")
    config = bank.get_config()
    assert {k: config[k] for k in ("ops", "units", "num_edges", "num_heads", "recompute")} == {
        "ops": ["none", "skip_connect", "lstm_1", "rnn_att_1"], "units": 4, "num_edges": 3, "num_heads": 2,
        "recompute": True}
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(bank))
    assert type(clone) is GroupedSeqEdges and clone.get_config() == config


@pytest.mark.parametrize("cnn_cells, seq_cells, kinds", [
    (1, 1, ("normal", "seq")),
    (2, 1, ("reduce", "seq")),
    (3, 0, ("normal", "reduce")),
    (4, 2, ("normal", "reduce", "seq")),
])
def test_backbone_cell_kinds(cnn_cells, seq_cells, kinds):
    space = dataclasses.replace(SearchSpaceConfig(), init_channels=2, cnn_nodes=1, seq_nodes=1, seq_hidden=4,
                                cnn_cells=cnn_cells, seq_cells=seq_cells, cnn_ops=["none", "skip_connect"],
                                seq_ops=["none", "skip_connect"])
    net = SearchBackbone(space, (8, 8, 1), num_classes=2)
    assert net.cell_kinds == kinds
    # Each cell reads the weights of its own kind.
    expected = [("reduce" if i in net.reduction_cells else "normal") for i in range(cnn_cells)]
    assert [("reduce" if c.reduction else "normal") for c in net.cnn_cells] == expected
    assert set(expected) | ({"seq"} if seq_cells else set()) == set(kinds)
