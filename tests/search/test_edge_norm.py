"""Edge normalisation (search.edge_norm, PC-DARTS): the edge weights against a hand computation, the mixture against
the op weights scaled in NumPy, the beta gradients (first and second order) against finite differences, the
genotype's edge ranking, the initial state, and the runner end to end with resume."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from search_helpers import (
    CNN_OPS,
    KillAfter,
    Killed,
    TinyBackbone,
    check_genotype_of_entry,
    micro_config,
    model_checkpoint,
    xor_data,
)
from test_architect import plain_hypergradient_check

from emodarts_tf.search.edge_normalization import edge_weights, edge_weights_tensor, initial_betas, node_sizes
from emodarts_tf.search.model import SearchModel
from emodarts_tf.search_space.genotype import derive_cell
from emodarts_tf.search_space.primitives import nodes_of_edges
from emodarts_tf.utils.numeric import softmax


def test_edge_weights_equal_a_hand_computation():
    # 2 nodes: node 0 reads edges 0-1, node 1 edges 2-4.
    beta = np.array([0.0, np.log(3.0), 0.0, 0.0, np.log(2.0)])
    np.testing.assert_allclose(edge_weights(beta), [0.25, 0.75, 0.25, 0.25, 0.5], rtol=1e-12)
    np.testing.assert_allclose(edge_weights_tensor(tf.constant(beta)).numpy(), edge_weights(beta), rtol=1e-12)
    assert node_sizes(14) == [2, 3, 4, 5]
    assert [nodes_of_edges(n) for n in (2, 5, 9, 14)] == [1, 2, 3, 4]
    for bad in (0, 1, 4, 6):
        with pytest.raises(ValueError, match=f"{bad} edges are no cell's"):
            nodes_of_edges(bad)
    with pytest.raises(ValueError, match="beta: expected a vector"):
        edge_weights(np.zeros((2, 2)))


def _model(edge_norm=True, seed=0, dtype=None, scale=1e-3):
    kwargs = {"dtype": dtype} if dtype else {}
    return SearchModel(TinyBackbone(**kwargs), input_shape=(4, 4, 1), seed=seed, edge_norm=edge_norm,
                       alpha_init_scale=scale, **kwargs)


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.arch_variables:
        v.assign(rng.standard_normal(tuple(v.shape)).astype(keras.backend.standardize_dtype(v.dtype)))


def test_mixture_is_the_op_weights_scaled_by_the_edge_weights():
    """The mixing weights equal softmax(alpha) row e times the node softmax of the betas, computed in NumPy, and the
    logits equal the backbone called with those weights."""
    keras.utils.set_random_seed(0)
    model = _model()
    _randomise(model)
    assert [v.path.split("/")[-1] for v in model.arch_variables] == [
        "alpha_normal", "alpha_reduce", "alpha_seq", "beta_normal", "beta_reduce", "beta_seq"]
    assert not {id(v) for v in model.arch_variables} & {id(v) for v in model.weight_variables}
    expected = {}
    for kind, alpha in model.alpha_arrays().items():
        beta = model.beta_arrays()[kind].astype(np.float64)
        z = np.exp(beta - beta.max())
        expected[kind] = softmax(alpha.astype(np.float64)) * (z / z.sum())[:, None]  # one node: both edges
    mixing = {k: keras.ops.convert_to_numpy(v) for k, v in model.mixing_weights().items()}
    for kind in model.alpha_kinds:
        np.testing.assert_allclose(mixing[kind], expected[kind], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(model.alpha_weights()[kind].sum(axis=1), 1.0, rtol=1e-6)
    x, _ = xor_data(6)
    plain = model.backbone(x, {k: tf.constant(v, tf.float32) for k, v in expected.items()}, training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(plain),
                               rtol=1e-5, atol=1e-6)


def test_off_has_no_betas_and_the_same_start():
    """Without edge_norm there are no beta variables; with it, the alphas and network weights of a seed are those of
    the plain model (the betas draw from a generator of their own), and the betas are that generator's."""
    keras.utils.set_random_seed(3)
    plain = _model(False, seed=3)
    keras.utils.set_random_seed(3)
    normed = _model(True, seed=3)
    assert not plain.beta_arrays() and not plain.edge_weights()
    assert len(normed.weights) == len(plain.weights) + 3
    for kind in plain.alpha_kinds:
        np.testing.assert_array_equal(plain.alpha_arrays()[kind], normed.alpha_arrays()[kind])
    for a, b in zip(plain.backbone.weights, normed.backbone.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    rng = np.random.default_rng((3, 1))  # the betas' own generator, drawn in the order of the cell kinds
    for kind, beta in normed.beta_arrays().items():
        np.testing.assert_allclose(beta, 1e-3 * rng.standard_normal(2), rtol=1e-6)
    for kind, start in normed.initial_edge_weights().items():
        np.testing.assert_allclose(start, normed.edge_weights()[kind], rtol=1e-6)
    again = SearchModel.from_config(normed.get_config())
    assert again.edge_norm and len(again.weights) == len(normed.weights)


def test_beta_gradient_equals_central_differences(float64_policy):
    """First order: the tape's gradient of the training-mode loss w.r.t. the betas equals central differences of
    that loss, in float64."""
    model = _model(dtype="float64", scale=0.5, seed=3)
    model.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(1.0))
    x, y = xor_data(16, seed=1, dtype="float64")
    x, y = tf.constant(x), tf.constant(y)
    betas = model.arch_variables[3:]
    with tf.GradientTape() as tape:
        loss = model._loss_only(x, y)
    grads = [g.numpy() for g in tape.gradient(loss, betas)]
    for beta, grad in zip(betas, grads):
        b0 = beta.numpy().copy()
        numeric = np.zeros_like(b0)
        for i in range(b0.shape[0]):
            for sign in (1, -1):
                b = b0.copy()
                b[i] += sign * 1e-6
                beta.assign(b)
                numeric[i] += sign * float(model._loss_only(x, y)) / 2e-6
        beta.assign(b0)
        assert np.abs(grad).max() > 1e-6  # the betas are reached by the loss
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def test_second_order_hypergradient_of_the_betas_matches_exact_and_numeric(float64_policy):
    """The unrolled (second-order) gradient of alphas and betas equals the exact nested-tape reference and central
    differences of the unrolled validation loss (tests/search/test_architect.py's references)."""
    model = _model(dtype="float64", scale=0.5, seed=3)
    hyper, exact = plain_hypergradient_check(model)
    assert len(hyper) == 6
    assert max(np.abs(e).max() for e in exact[3:]) > 1e-6


def test_train_step_moves_the_betas_only_after_the_warm_up():
    keras.utils.set_random_seed(1)
    model = _model()
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.1, 0.5, 0.999))
    x, y = xor_data(16)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    zipped = tf.data.Dataset.zip((data, data)).repeat()
    before = [v.numpy().copy() for v in model.arch_variables[3:]]
    model.set_alpha_updates(False)
    model.fit(zipped, steps_per_epoch=2, epochs=1, verbose=0)
    for v, b in zip(model.arch_variables[3:], before):
        np.testing.assert_array_equal(v.numpy(), b)
    model.set_alpha_updates(True)
    model.fit(zipped, steps_per_epoch=2, epochs=1, verbose=0)
    assert all(not np.array_equal(v.numpy(), b) for v, b in zip(model.arch_variables[3:], before))


def test_genotype_ranks_edges_by_edge_weight_times_best_op():
    """Node 1 (edges 2-4): the best ops' weights 0.87 / 0.71 / 0.48 rank edge 2 > 3 > 4. Each node's edges are then
    ranked by the product with the edge weights, and the op of each edge stays its best one. The two cases tell the
    product from the edge weight alone (first) and from the sum (second)."""
    ops = CNN_OPS  # none, avg_pool_3x3, skip_connect, sep_conv_3x3
    alpha = np.array([[0.0, 1.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 1.0],
                      [0.0, 0.0, 0.0, 3.0],  # sep_conv, weight 0.87
                      [0.0, 2.0, 0.0, 0.0],  # avg_pool, 0.71
                      [0.0, 0.0, 0.0, 1.0]])  # sep_conv, 0.48
    plain = derive_cell(alpha, ops, 2)
    assert plain[1] == [("sep_conv_3x3", 0), ("avg_pool_3x3", 1)]
    def derive(node1):
        return derive_cell(alpha, ops, 2, edge_weights=edge_weights(np.log([0.5, 0.5, *node1])))

    # 0.30 / 0.33 / 0.37: products 0.261 / 0.234 / 0.178 keep inputs 0 and 1 (the edge weight alone: 1 and 2)
    assert derive([0.30, 0.33, 0.37]) == plain
    # 0.15 / 0.35 / 0.50: products 0.130 / 0.249 / 0.238 keep inputs 1 and 2 (the sum: 0 and 1)
    normed = derive([0.15, 0.35, 0.50])
    assert normed[0] == plain[0]  # node 0 keeps both of its edges whatever their weights
    assert normed[1] == [("avg_pool_3x3", 1), ("sep_conv_3x3", 2)]
    # Equal edge weights rank as the plain rule does.
    assert derive_cell(alpha, ops, 2, edge_weights=edge_weights(np.zeros(5))) == plain
    with pytest.raises(ValueError, match="edge_weights: expected shape"):
        derive_cell(alpha, ops, 2, edge_weights=np.ones(4))


def test_skip_cap_forbids_the_skip_of_the_smallest_op_weight():
    """Skips on node 0's input 0 (op weight 0.5, edge weight 0.5: score 0.25) and node 1's input 1 (op weight 0.6,
    edge weight 0.4: score 0.24), cap 1: the cap forbids the one of the smaller op weight, as without edge weights,
    although its edge-weighted score is the larger (edge weights of nodes of different sizes do not compare)."""
    ops = CNN_OPS  # none, avg_pool_3x3, skip_connect, sep_conv_3x3
    l3, l45 = np.log(3.0), np.log(4.5)
    alpha = np.array([[0.0, 0.0, l3, 0.0],  # node 0 input 0: skip 0.5
                      [0.0, 0.0, 0.0, l3],  # node 0 input 1: sep_conv 0.5
                      [0.0, 0.0, 0.0, 0.0],  # node 1 input 0: 0.25 each
                      [0.0, 0.0, l45, 0.0],  # node 1 input 1: skip 0.6
                      [0.0, 0.0, 0.0, l45]])  # node 1 input 2: sep_conv 0.6
    expected = [[("avg_pool_3x3", 0), ("sep_conv_3x3", 1)], [("skip_connect", 1), ("sep_conv_3x3", 2)]]
    assert derive_cell(alpha, ops, 2, max_skip=1) == expected
    edges = edge_weights(np.log([0.5, 0.5, 0.2, 0.4, 0.4]))
    assert derive_cell(alpha, ops, 2, max_skip=1, edge_weights=edges) == expected


def test_model_genotype_ranks_edges_by_the_betas(demo_cache):
    """A supernet of 2-node cells: with equal op weights the betas alone decide which two of node 1's three edges
    are kept, in every cell kind, as derive_genotype with those edge weights derives it."""
    from emodarts_tf.search.runner import build_search_model

    config = micro_config(demo_cache, "space.cnn_nodes=2", "space.seq_nodes=2", "search.edge_norm=true")
    model = build_search_model(config, (40, 47, 1), 4, 2)
    for kind, alpha, beta in zip(model.alpha_kinds, model.arch_variables[:3], model.arch_variables[3:]):
        a = np.zeros(tuple(alpha.shape), "float32")
        a[:, -1] = 2.0  # the last op (sep_conv_3x3, rnn_1) strongest on every edge, by the same margin
        a[2, -1] = 2.5  # plain rule: node 1 keeps edge 2 (input 0) and one of the others
        alpha.assign(a)
        beta.assign(np.array([0.0, 0.0, -3.0, 1.0, 1.0], "float32"))  # edge weights: node 1 keeps inputs 1 and 2
    genotype = model.genotype(max_skip=2)
    for kind in model.alpha_kinds:
        assert [j for _, j in getattr(genotype, kind)[1]] == [1, 2], kind
        assert {op for op, _ in getattr(genotype, kind)[1]} == {model.candidate_ops()[kind][-1]}
    model.arch_variables[3].assign(np.zeros(5, "float32"))  # equal edge weights: the op weights decide again
    assert 0 in [j for _, j in model.genotype(max_skip=2).normal[1]]


def test_two_stream_genotype_ranks_edges_by_the_betas():
    """The two-stream supernet (2-node cells in both streams) derives its genotype with the edge weights too."""
    from emodarts_tf.config import SearchSpaceConfig
    from emodarts_tf.search_space.two_stream import TwoStreamSearchBackbone

    shapes = {"spectrogram": (8, 8, 1), "frames": (5, 3)}
    space = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=2, stem_multiplier=1, seq_cells=1, seq_nodes=2,
                              seq_hidden=4, cnn_ops=["none", "skip_connect", "sep_conv_3x3"],
                              seq_ops=["none", "skip_connect", "rnn_1"], fusion="supplement")
    model = SearchModel(TwoStreamSearchBackbone(space, shapes, num_classes=2), input_shape=shapes, edge_norm=True)
    for alpha, beta in zip(model.arch_variables[:3], model.arch_variables[3:]):
        a = np.zeros(tuple(alpha.shape), "float32")
        a[:, -1] = 2.0
        a[2, -1] = 2.5  # the plain rule keeps node 1's input 0
        alpha.assign(a)
        beta.assign(np.array([0.0, 0.0, -3.0, 1.0, 1.0], "float32"))
    genotype = model.genotype(max_skip=2)
    assert genotype.streams is not None
    for kind in model.alpha_kinds:
        assert [j for _, j in getattr(genotype, kind)[1]] == [1, 2], kind


def test_refusals_and_nonfinite_betas():
    from emodarts_tf.search.callbacks import nonfinite_architecture
    from emodarts_tf.search.perturbation_selection import select_by_perturbation

    class OldBackbone(TinyBackbone):
        def derive_genotype(self, alphas, max_skip=None, meta=None):
            return super().derive_genotype(alphas, max_skip, meta)

    with pytest.raises(ValueError, match="edge_norm=True .* OldBackbone without `edges`"):
        SearchModel(OldBackbone(), input_shape=(4, 4, 1), edge_norm=True)
    model = _model()
    with pytest.raises(ValueError, match="select_by_perturbation: expected a supernet without edge weights"):
        select_by_perturbation(model, xor_data(8))
    assert nonfinite_architecture(model) == []
    model.arch_variables[5].assign(np.array([0.0, np.nan], "float32"))
    assert nonfinite_architecture(model) == ["beta_seq"]


def test_search_config_checks(demo_cache):
    from emodarts_tf.search.runner import check_search_config

    check_search_config(micro_config(demo_cache, "search.edge_norm=true").search)
    with pytest.raises(ValueError, match="search.edge_norm"):
        check_search_config(micro_config(demo_cache, "search.edge_norm=true", "search.select=perturbation").search)
    with pytest.raises(ValueError, match="search.edge_norm"):
        micro_config(demo_cache, "search.edge_norm=3")


def test_search_with_edge_norm_records_edges_and_resumes(tmp_path, demo_cache, demo_prepared):
    """A micro search with edge normalisation (and pruning): alpha_history.json holds each epoch's edge weights
    (a softmax per node, moving once the alphas move), the genotype is the one its final alphas and betas derive, and
    a search killed after epoch 2 and resumed ends with the checkpoint (betas included) of an uninterrupted one."""
    from emodarts_tf.search.runner import build_search_model, run_search

    config = micro_config(demo_cache, "search.epochs=4", "search.warmup_epochs=1", "search.prune=[3]",
                          "search.edge_norm=true", "space.cnn_nodes=2", "space.seq_nodes=2")
    full = run_search(config, tmp_path / "full", 1, prepared=demo_prepared)
    history = json.loads((tmp_path / "full" / "fold1" / "alpha_history.json").read_text())
    for entry in history:
        for kind, w in entry["edges"].items():
            sizes = node_sizes(len(w))
            np.testing.assert_allclose([sum(part) for part in np.split(np.asarray(w), np.cumsum(sizes)[:-1])],
                                       1.0, atol=1e-5)
    # Epoch 1 is the warm-up: the betas are still those the seed drew.
    assert not history[0]["alpha_active"]
    start = initial_betas({k: len(v) for k, v in history[0]["edges"].items()}, config.search.alpha_init_scale,
                          config.seed)
    for kind, w in history[0]["edges"].items():
        np.testing.assert_allclose(w, edge_weights(start[kind]), atol=2e-6)
        assert history[0]["edges_moved"][kind] == 0
        moved = np.abs(np.asarray(history[-1]["edges"][kind]) - edge_weights(start[kind])).max()
        assert history[-1]["edges_moved"][kind] == pytest.approx(moved, abs=2e-6)
    assert any(np.abs(np.asarray(history[-1]["edges"][k]) - np.asarray(history[0]["edges"][k])).max() > 1e-4
               for k in history[0]["edges"])
    # The final genotype from the recorded op weights and edge weights.
    check_genotype_of_entry(tmp_path / "full" / "fold1", config, history[-1])
    model = build_search_model(config, (40, 47, 1), 4, 2)
    assert model.edge_norm

    with pytest.raises(Killed):
        run_search(config, tmp_path / "killed", 1, prepared=demo_prepared, callbacks=[KillAfter(2)])
    resumed = run_search(config, tmp_path / "killed", 1, resume=True, prepared=demo_prepared)
    reader = {name: model_checkpoint(tmp_path / name) for name in ("full", "killed")}
    assert reader["full"].keys() == reader["killed"].keys()
    assert any("beta" in n for n in reader["full"])
    for n in reader["full"]:
        np.testing.assert_allclose(reader["full"][n], reader["killed"][n], rtol=1e-5, atol=1e-6, err_msg=n)
    assert full["final"] == resumed["final"]
