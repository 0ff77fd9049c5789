"""Genotype derivation against hand-worked alphas, the skip cap, JSON round trip and validation errors."""
import json

import numpy as np
import pytest

from emodarts_tf.search_space.genotype import Genotype, derive_cell, derive_genotype
from emodarts_tf.search_space.primitives import (
    CNN_PRIMITIVES, SEQ_PRIMITIVES, num_edges, reduction_indices, resolve_ops)

OPS = ("none", "skip_connect", "conv")  # a toy op set: derive_cell only needs names


def _alpha(rows):
    """Logits whose softmax keeps the given preference order (log of the probabilities)."""
    return np.log(np.asarray(rows, dtype=np.float64))


def test_derive_picks_best_non_none_op_and_top2_edges():
    # 2 nodes -> 2 + 3 = 5 edges.
    rows = [
        [0.9, 0.05, 0.05],  # node0 <- in0: none dominates, best non-none weight 0.05
        [0.1, 0.2, 0.7],    # node0 <- in1: conv 0.7
        [0.1, 0.6, 0.3],    # node1 <- in0: skip 0.6
        [0.2, 0.1, 0.7],    # node1 <- in1: conv 0.7
        [0.5, 0.25, 0.25],  # node1 <- node0: 0.25 (tie between skip and conv -> first)
    ]
    cell = derive_cell(_alpha(rows), OPS, nodes=2)
    assert cell == [[("skip_connect", 0), ("conv", 1)], [("skip_connect", 0), ("conv", 1)]]


def test_skip_cap_replaces_the_weakest_skip():
    rows = [
        [0.0, 0.9, 0.1],
        [0.0, 0.8, 0.2],
        [0.0, 0.7, 0.3],
        [0.0, 0.6, 0.4],
        [0.0, 0.1, 0.9],
    ]
    rows = np.asarray(rows) + 1e-9
    uncapped = derive_cell(_alpha(rows), OPS, nodes=2)
    skips = sum(op == "skip_connect" for node in uncapped for op, _ in node)
    assert skips == 3
    capped = derive_cell(_alpha(rows), OPS, nodes=2, max_skip=1)
    flat = [e for node in capped for e in node]
    assert sum(op == "skip_connect" for op, _ in flat) == 1
    # The strongest skip (edge in0 -> node0, weight 0.9) survives.
    assert capped[0][0] == ("skip_connect", 0)


def test_derive_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"expected shape \(5, 3\)"):
        derive_cell(np.zeros((4, 3)), OPS, nodes=2)


def _random_genotype(seed=0, nodes=3):
    rng = np.random.default_rng(seed)
    alphas = {
        "normal": rng.normal(size=(num_edges(nodes), len(CNN_PRIMITIVES))),
        "reduce": rng.normal(size=(num_edges(nodes), len(CNN_PRIMITIVES))),
        "seq": rng.normal(size=(num_edges(nodes), len(SEQ_PRIMITIVES))),
    }
    return derive_genotype(alphas, CNN_PRIMITIVES, SEQ_PRIMITIVES, nodes, nodes, max_skip=2,
                           meta={"fold": 1, "train_speakers": ["03"]})


def test_derived_genotype_is_valid_and_round_trips(tmp_path):
    g = _random_genotype()
    for kind in ("normal", "reduce", "seq"):
        cell = g.cell(kind)
        assert len(cell) == 3
        for n, node in enumerate(cell):
            assert len(node) == 2
            assert all(op != "none" and 0 <= idx < n + 2 for op, idx in node)
            assert len({idx for _, idx in node}) == 2  # two distinct incoming edges
    path = g.save(tmp_path / "g.json")
    again = Genotype.load(path)
    assert again == g
    assert json.loads(path.read_text())["format"] == "emodarts-tf/genotype/v1"


def test_hand_written_genotype_defaults_concat():
    d = {
        "normal": [[["sep_conv_3x3", 0], ["skip_connect", 1]]],
        "reduce": [[["max_pool_3x3", 0], ["max_pool_3x3", 1]]],
        "seq": [[["lstm_2", 0], ["none", 1]]],
    }
    g = Genotype.from_dict(d)
    assert g.normal_concat == [2] and g.seq_concat == [2]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["normal"][0].__setitem__(0, ["conv_7x7", 0]), "unknown op 'conv_7x7'"),
        (lambda d: d["seq"][0].__setitem__(0, ["lstm_2", 5]), "input index 5 out of range"),
        (lambda d: d.pop("reduce"), "missing cell 'reduce'"),
        (lambda d: d["normal"][0].__setitem__(0, ["sep_conv_3x3"]), "not an \\[op, input\\] pair"),
        (lambda d: d.__setitem__("format", "pt.darts"), "unknown genotype format"),
    ],
)
def test_bad_genotypes_are_named(mutate, message):
    d = _random_genotype().to_dict()
    mutate(d)
    with pytest.raises(ValueError, match=message):
        Genotype.from_dict(d, source="g.json")


def test_resolve_ops_scopes_and_errors():
    assert resolve_ops("all", "cnn") == CNN_PRIMITIVES
    assert resolve_ops("lstm", "seq") == ("none", "skip_connect", "lstm_1", "lstm_2", "lstm_3", "lstm_4")
    assert resolve_ops(["lstm_2", "none"], "seq") == ("none", "lstm_2")  # canonical order
    with pytest.raises(ValueError, match="gru_1"):
        resolve_ops(["gru_1"], "seq")
    with pytest.raises(ValueError, match="unknown scope"):
        resolve_ops("lstm", "cnn")


def test_reduction_positions_follow_darts():
    assert reduction_indices(4) == (1, 2)
    assert reduction_indices(8) == (2, 5)
    assert reduction_indices(3) == (1, 2)
    assert reduction_indices(1) == ()


# Cells whose output cannot depend on their inputs: (cell kind, nodes, concat, words the error must name).
_INPUT_FREE_CELLS = [
    ("seq", [[["none", 0], ["none", 1]], [["none", 2], ["none", 0]]], [2, 3],
     ["node 0 (state 2) has only `none` edges", "node 1 (state 3) has only `none` edges"]),
    # node 1 reads the input, but the concat keeps only node 0 (all `none`) and node 2, which reads node 0
    ("normal", [[["none", 0], ["none", 1]], [["sep_conv_3x3", 0], ["skip_connect", 1]],
                [["skip_connect", 2], ["none", 3]]], [2, 4],
     ["node 0 (state 2) has only `none` edges", "node 2 (state 4) reads only states [2]"]),
    # a reduction cell whose every concat node is `none`-only cannot pass the input on
    ("reduce", [[["max_pool_3x3", 0], ["max_pool_3x3", 1]], [["none", 0], ["none", 2]]], [3],
     ["node 1 (state 3) has only `none` edges"]),
]


@pytest.mark.parametrize("kind, nodes, concat, words", _INPUT_FREE_CELLS)
def test_genotype_whose_output_ignores_the_input_is_refused(kind, nodes, concat, words):
    d = _random_genotype().to_dict()
    d[kind], d[f"{kind}_concat"] = nodes, concat
    with pytest.raises(ValueError) as info:
        Genotype.from_dict(d, source="g.json")
    message = str(info.value)
    assert message.startswith("g.json: ") and f"cell {kind!r}" in message and "does not depend" in message
    for word in words:
        assert word in message


def test_genotype_reading_the_input_through_some_node_passes():
    d = _random_genotype().to_dict()
    # One all-`none` node is harmless when another concat node reads an input; a normal or SeqNN cell
    # may also concatenate an input itself.
    d["seq"], d["seq_concat"] = [[["none", 0], ["none", 1]], [["lstm_1", 0], ["none", 2]]], [2, 3]
    d["normal"], d["normal_concat"] = [[["none", 0], ["none", 1]]], [0, 2]
    d["reduce"], d["reduce_concat"] = [[["none", 0], ["none", 1]], [["skip_connect", 1], ["none", 2]]], [2, 3]
    Genotype.from_dict(d, source="g.json")
    d["reduce_concat"] = [1, 3]  # a reduction cell cannot concatenate its unreduced inputs
    with pytest.raises(ValueError, match="g.json: reduce_concat index 1 is a cell input"):
        Genotype.from_dict(d, source="g.json")


def test_derived_genotypes_always_read_the_input():
    rng = np.random.default_rng(7)
    for _ in range(200):
        nodes = int(rng.integers(1, 5))
        alphas = {kind: rng.normal(size=(num_edges(nodes), len(ops))) * 3
                  for kind, ops in (("normal", CNN_PRIMITIVES), ("reduce", CNN_PRIMITIVES), ("seq", SEQ_PRIMITIVES))}
        # `none` strongest everywhere: the derivation still never picks it, so the genotype stays valid.
        for a in alphas.values():
            a[:, 0] += 10
        derive_genotype(alphas, CNN_PRIMITIVES, SEQ_PRIMITIVES, nodes, nodes, max_skip=2).validate()
