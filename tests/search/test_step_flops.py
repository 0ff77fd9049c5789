"""FLOPs of a search step (emodarts_tf/utils/step_flops.py), checked against independent counts."""
from __future__ import annotations

import pytest
import tensorflow as tf

from emodarts_tf.evaluation.complexity import _profile_flops
from emodarts_tf.utils.step_flops import ALPHA_PASSES, PASSES, einsum_flops, forward_flops, graph_flops, search_step_flops, step_flops


CNN_OPS = ("none", "skip_connect", "sep_conv_3x3", "avg_pool_3x3")


def _search_model(seq_cells=0, recompute_cnn=True, recompute_seq=True, seq_ops="rnn", cnn_ops=CNN_OPS):
    from emodarts_tf.config import ExperimentConfig, SearchConfig, SearchSpaceConfig
    from emodarts_tf.search.runner import build_search_model

    space = SearchSpaceConfig(init_channels=2, cnn_cells=2, cnn_nodes=1, stem_multiplier=1, cnn_ops=list(cnn_ops),
                              seq_cells=seq_cells, seq_nodes=1, seq_ops=seq_ops)  # fmt: skip
    search = SearchConfig(order="first", batch_size=2, epochs=1, recompute_cnn=recompute_cnn,
                          recompute_seq=recompute_seq)
    return build_search_model(ExperimentConfig(space=space, search=search), (8, 8, 1), 3, steps_per_epoch=1)


def test_step_rule():
    assert PASSES == {"first": 2, "second": 5}
    # without arch-only passes every pass is a full one: forward, activation and weight gradients, recomputation
    assert step_flops(100, 0, "first", arch_only=False) == 600
    assert step_flops(100, 40, "first", arch_only=False) == 2 * (300 + 40)
    assert step_flops(100, 40, "second", arch_only=False) == 5 * (300 + 40)
    # with them, the alpha passes (first order 1 of 2, second order 2 of 5) have no weight gradients
    assert ALPHA_PASSES == {"first": 1, "second": 2}
    assert step_flops(100, 40, "first") == (300 + 40) + (200 + 40)
    assert step_flops(100, 40, "second") == 3 * (300 + 40) + 2 * (200 + 40)
    with pytest.raises(ValueError, match="order"):
        step_flops(1, 0, "third")


def test_einsum_rule():
    # A (2x3) @ (3x4) product: 2 * 2*3*4 multiply-adds' FLOPs, as MatMul's.
    assert einsum_flops("ij,jk->ik", [[2, 3], [3, 4]]) == 48
    assert einsum_flops("tkbf,kfg->tkbg", [[5, 2, 3, 4], [2, 4, 6]]) == 2 * 5 * 2 * 3 * 4 * 6
    assert einsum_flops("ij,ij->ij", [[2, 3], [2, 3]]) == 6  # element-wise product: 1 per element
    assert einsum_flops("ij->ji", [[2, 3]]) == 0
    assert einsum_flops("ij,jk->ik", [None, [3, 4]]) is None


def test_graph_count_equals_the_profiler_without_calls_or_loops():
    dense = tf.keras.layers.Dense(7)
    conv = tf.keras.layers.Conv2D(3, 3)

    def f(x):
        y = conv(x)
        return dense(tf.reshape(y, (4, -1))) * 2.0 + 1.0

    spec = tf.TensorSpec((4, 6, 6, 2))
    graph = tf.function(f).get_concrete_function(spec).graph
    expected = _profile_flops(f, spec)
    assert expected > 0
    assert graph_flops(graph)["flops"] == expected


def test_function_calls_and_while_loops_are_counted_inside():
    w = tf.constant(tf.ones((5, 5)))

    @tf.function(experimental_attributes={"_noinline": True})
    def inner(x):
        return tf.matmul(x, w)  # 2 * 3 * 5 * 5 = 150

    def f(x):
        steps = tf.shape(x)[0]  # 4: resolved from the static shape

        def body(t, h):
            return t + 1, tf.matmul(h, w) + 1.0  # 150 + 15 + 1 (t + 1) per step, + 1: while_v2's own counter

        start = (tf.constant(0), tf.zeros((3, 5)))
        _, h = tf.while_loop(lambda t, h: t < steps, body, start, maximum_iterations=steps)
        return inner(h) + inner(h)  # 2 * 150 + 15

    counted = graph_flops(tf.function(f).get_concrete_function(tf.TensorSpec((4, 2))).graph)
    assert counted["loops"] == 1 and counted["fill"] == 4 and not counted["uncounted"]
    assert counted["flops"] == 4 * (150 + 15 + 1 + 1) + 2 * 150 + 15  # the loop condition is not counted


def test_cnn_search_forward_equals_the_profiler_and_recomputed_part_equals_the_mixed_ops():
    from emodarts_tf.search_space.mixed_op import MixedOp

    model = _search_model(seq_cells=0, recompute_cnn=True)
    batch = 2
    spec = tf.TensorSpec((batch, 8, 8, 1))
    counted = forward_flops(model, batch)
    assert not counted["uncounted"]
    # No loops and no function calls in the CNN-only network: the profiler sees everything.
    assert counted["forward_flops"] == _profile_flops(lambda x: model(x, training=True), spec)

    # The recomputed part: each mixed op alone, at the input it gets in the network, by the profiler.
    seen = {}
    original = MixedOp.call

    def recording(self, x, weights, training=None):
        seen.setdefault(id(self), (self, tuple(x.shape), tuple(weights.shape)))
        return original(self, x, weights, training=training)

    MixedOp.call = recording
    try:
        tf.function(lambda x: model(x, training=True)).get_concrete_function(spec)
    finally:
        MixedOp.call = original
    assert seen
    by_layer = sum(
        _profile_flops(lambda x, layer=layer, n=w_shape: layer(x, tf.fill(n, 1.0 / n[0]), training=True),
                       tf.TensorSpec(x_shape))
        for layer, x_shape, w_shape in seen.values()
    )
    assert counted["recomputed_flops"] == by_layer > 0
    # Without recomputation nothing is recomputed.
    assert forward_flops(_search_model(seq_cells=0, recompute_cnn=False), batch)["recomputed_flops"] == 0


def test_seq_bank_counted_by_hand():
    from emodarts_tf.search_space.seq_bank import GroupedSeqEdges

    t, b, u = 5, 3, 4
    bank = GroupedSeqEdges(("rnn_1",), units=u, num_edges=1)
    bank.build((b, t, u))
    forward = tf.function(lambda x: bank(x, tf.ones((1, 1)), training=True)[0])
    counted = graph_flops(forward.get_concrete_function(tf.TensorSpec((b, t, u))).graph)
    assert not counted["uncounted"] and counted["loops"] == 1
    projection = 2 * t * b * u * u + t * b * u  # all steps' input products, plus the bias
    loop = t * (2 * b * u * u + b * u + 2)  # recurrent product, sum with the input, 2 step counters
    # the edge's coefficient (keras.ops.take's index wrap-around: 2, the product with the mask: 1), then the
    # weighted sum over its one candidate
    mixing = 3 + 2 * t * b * u
    assert counted["flops"] == projection + loop + mixing


def test_search_step_flops_of_a_network_with_seqnn():
    model = _search_model(seq_cells=1, recompute_cnn=True, recompute_seq=True)
    result = search_step_flops(model, 2)
    f, r = result["forward_flops"], result["recomputed_flops"]
    assert not result["uncounted"] and result["loops"] >= 1
    assert 0 < r < f
    # a small supernet runs its step in one graph, where every pass is counted full
    assert model.execution == "graph" and not result["arch_only_passes"]
    assert result["step_flops"] == {"first": 2 * (3 * f + r), "second": 5 * (3 * f + r)}
    # The SeqNN cell's loops add to the profiler's (top-level) count.
    assert f > _profile_flops(lambda x: model(x, training=True), tf.TensorSpec((2, 8, 8, 1)))
