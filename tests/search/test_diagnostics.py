"""Search diagnostics, against hand computations: alpha entropy and movement, genotype agreement."""
from __future__ import annotations

import math

import numpy as np
import pytest

from emodarts_tf.search.diagnostics import (
    alpha_entropy,
    alpha_movement,
    edge_overlap,
    format_alpha_diagnostics,
    genotype_agreement,
)
from emodarts_tf.search_space.genotype import Genotype


def test_entropy_of_a_two_edge_alpha_array_by_hand():
    # Edge 0: logits (0, ln 2, ln 3) -> softmax (1/6, 2/6, 3/6). Edge 1: equal logits -> uniform thirds.
    alphas = np.array([[0.0, math.log(2.0), math.log(3.0)], [0.7, 0.7, 0.7]])
    h0 = -(1 / 6 * math.log(1 / 6) + 2 / 6 * math.log(2 / 6) + 3 / 6 * math.log(3 / 6))
    h1 = -3 * (1 / 3 * math.log(1 / 3))  # = ln 3
    mean = (h0 + h1) / 2
    out = alpha_entropy({"normal": alphas}, from_logits=True)
    assert out["normal"]["mean"] == pytest.approx(mean, abs=1e-12)
    assert out["normal"]["normalized"] == pytest.approx(mean / math.log(3), abs=1e-12)
    # The same from the softmaxed weights (the default input).
    weights = np.array([[1 / 6, 2 / 6, 3 / 6], [1 / 3, 1 / 3, 1 / 3]])
    assert alpha_entropy({"normal": weights})["normal"]["mean"] == pytest.approx(mean, abs=1e-12)
    # Natural log: h0 = ln 6 - (2 ln 2 + 3 ln 3) / 6, about 1.0114 nats.
    assert h0 == pytest.approx(math.log(6) - (2 * math.log(2) + 3 * math.log(3)) / 6)


def test_one_hot_is_near_zero_and_uniform_is_one():
    one_hot = np.array([[50.0, 0.0, 0.0, 0.0], [0.0, 0.0, 60.0, 0.0]])
    uniform = np.zeros((5, 8))
    start = 1e-3 * np.random.default_rng(0).standard_normal((14, 14))
    out = alpha_entropy({"normal": one_hot, "reduce": uniform, "seq": start}, from_logits=True)
    assert list(out) == ["normal", "reduce", "seq"]
    assert 0.0 <= out["normal"]["mean"] < 1e-18 and out["normal"]["normalized"] < 1e-18
    assert out["reduce"]["mean"] == pytest.approx(math.log(8), abs=1e-12)
    assert out["reduce"]["normalized"] == pytest.approx(1.0, abs=1e-12)
    assert 0.9999 < out["seq"]["normalized"] <= 1.0  # DARTS' 1e-3 N(0, 1) start: uniform in effect
    # Exact zeros (0 log 0 = 0) and a single-op cell.
    exact = alpha_entropy({"normal": np.array([[0.0, 1.0, 0.0]]), "seq": np.array([[1.0], [1.0]])})
    assert exact["normal"] == {"mean": 0.0, "normalized": 0.0}
    assert exact["seq"] == {"mean": 0.0, "normalized": 1.0}


def test_entropy_refuses_what_is_not_a_distribution():
    with pytest.raises(ValueError, match="from_logits"):
        alpha_entropy({"normal": np.array([[0.1, 0.2, 0.3]])})
    with pytest.raises(ValueError, match="normal: the alphas hold non-finite"):
        alpha_entropy({"normal": np.array([[np.nan, 0.0]])}, from_logits=True)
    with pytest.raises(ValueError, match="num_edges, num_ops"):
        alpha_entropy({"seq": np.ones(3) / 3})
    # alpha_history.json rounds weights to 6 decimals: still accepted.
    rounded = np.round(np.full((2, 7), 1 / 7), 6)
    assert alpha_entropy({"normal": rounded})["normal"]["normalized"] == pytest.approx(1.0, abs=1e-5)


def test_alpha_movement_is_the_largest_change_per_kind():
    start = {"normal": np.array([[0.25, 0.25, 0.25, 0.25]]), "seq": np.array([[0.5, 0.5], [0.5, 0.5]])}
    now = {"normal": np.array([[0.1, 0.4, 0.25, 0.25]]), "seq": np.array([[0.5, 0.5], [0.2, 0.8]])}
    moved = alpha_movement(now, start)
    assert moved == {"normal": pytest.approx(0.15), "seq": pytest.approx(0.3)}
    assert alpha_movement(start, start) == {"normal": 0.0, "seq": 0.0}
    with pytest.raises(ValueError, match="kinds differ"):
        alpha_movement({"normal": now["normal"]}, start)
    with pytest.raises(ValueError, match="shape"):
        alpha_movement({"normal": np.array([[0.5, 0.5]]), "seq": now["seq"]}, start)
    line = format_alpha_diagnostics(alpha_entropy(now), moved)
    assert line.startswith("alpha H normal 0.") and "| moved normal 0.1500 seq 0.3000" in line


def _genotype(normal, reduce, seq):
    concat = lambda cell: list(range(2, 2 + len(cell)))  # noqa: E731
    return Genotype(normal, concat(normal), reduce, concat(reduce), seq, concat(seq))


# Three hand-made genotypes of 2 CNN nodes and 1 SeqNN node (4 + 4 + 2 edges).
A = _genotype(
    normal=[[("sep_conv_3x3", 0), ("skip_connect", 1)], [("sep_conv_3x3", 0), ("max_pool_3x3", 2)]],
    reduce=[[("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("avg_pool_3x3", 1), ("skip_connect", 2)]],
    seq=[[("lstm_1", 0), ("rnn_1", 1)]],
)
B = _genotype(
    normal=[[("sep_conv_3x3", 0), ("sep_conv_5x5", 1)], [("dil_conv_3x3", 1), ("max_pool_3x3", 2)]],
    reduce=[[("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("avg_pool_3x3", 1), ("skip_connect", 2)]],
    seq=[[("rnn_1", 0), ("lstm_1", 1)]],
)
C = _genotype(
    normal=[[("avg_pool_3x3", 0), ("skip_connect", 1)], [("sep_conv_3x3", 1), ("max_pool_3x3", 2)]],
    reduce=[[("skip_connect", 0), ("max_pool_3x3", 1)], [("avg_pool_3x3", 0), ("skip_connect", 1)]],
    seq=[[("lstm_1", 0), ("lstm_2", 1)]],
)


def test_agreement_of_two_genotypes_counted_by_hand():
    # normal: edges (node, input) A {(0,0),(0,1),(1,0),(1,2)}, B {(0,0),(0,1),(1,1),(1,2)}: 3 of 4 in common;
    #   with ops: (0,0,sep3) and (1,2,max) in common: 2 of 4.
    # reduce: identical: 4/4 and 4/4. seq: same inputs (0,1), ops swapped: 2/2 edges, 0/2 with ops.
    out = genotype_agreement([A, B])
    assert out["genotypes"] == 2 and out["pairs"] == 1
    assert out["normal"] == {"edge": 0.75, "edge_op": 0.5}
    assert out["reduce"] == {"edge": 1.0, "edge_op": 1.0}
    assert out["seq"] == {"edge": 1.0, "edge_op": 0.0}
    assert out["mean"]["edge"] == pytest.approx((0.75 + 1.0 + 1.0) / 3)
    assert out["mean"]["edge_op"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert genotype_agreement([A, A])["mean"] == {"edge": 1.0, "edge_op": 1.0}


def test_agreement_of_three_genotypes_is_the_mean_over_the_three_pairs():
    # Pairs by hand (edge, edge+op):
    #   normal  A-B (3/4, 2/4)  A-C: A {(0,0),(0,1),(1,0),(1,2)} C {(0,0),(0,1),(1,1),(1,2)} -> 3/4;
    #           with ops (0,1,skip),(1,2,max) -> 2/4.  B-C: edges 4/4; ops (1,2,max) -> 1/4
    #   reduce  A-B (1, 1)  A-C: C {(0,0),(0,1),(1,0),(1,1)} vs A {(0,0),(0,1),(1,1),(1,2)} -> 3/4;
    #           ops (0,1,max) -> 1/4 [A (1,1) is avg, C (1,1) is skip]. B-C: as A-C (B = A in reduce).
    #   seq     A-B (1, 0)  A-C (1, 1/2: (0,0,lstm_1))  B-C (1, 0)
    out = genotype_agreement([A, B, C])
    assert out["pairs"] == 3
    assert out["normal"]["edge"] == pytest.approx((3 / 4 + 3 / 4 + 1) / 3)
    assert out["normal"]["edge_op"] == pytest.approx((2 / 4 + 2 / 4 + 1 / 4) / 3)
    assert out["reduce"]["edge"] == pytest.approx((1 + 3 / 4 + 3 / 4) / 3)
    assert out["reduce"]["edge_op"] == pytest.approx((1 + 1 / 4 + 1 / 4) / 3)
    assert out["seq"]["edge"] == pytest.approx(1.0)
    assert out["seq"]["edge_op"] == pytest.approx((0 + 1 / 2 + 0) / 3)
    # Genotype dicts work too, in any order.
    again = genotype_agreement([C.to_dict(), A, B.to_dict()])
    assert again["normal"] == pytest.approx(out["normal"]) and again["seq"] == pytest.approx(out["seq"])


def test_edge_overlap_of_unequal_cells_and_bad_input():
    # A hand-written node with 3 edges vs a derived one with 2: 2 * 2 / (3 + 2).
    three = [[("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 1)]]
    two = [[("sep_conv_3x3", 0), ("skip_connect", 1)]]
    assert edge_overlap(three, two) == pytest.approx(0.8)
    assert edge_overlap(three, two, with_op=True) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="at least 2"):
        genotype_agreement([A])
    one_node = _genotype(normal=A.normal[:1], reduce=A.reduce, seq=A.seq)
    with pytest.raises(ValueError, match="normal cells have different node counts"):
        genotype_agreement([A, one_node])
    with pytest.raises(ValueError, match="Genotype"):
        genotype_agreement([A, "x"])
