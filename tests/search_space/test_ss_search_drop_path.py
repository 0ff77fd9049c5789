"""Scheduled drop-path in the supernet (``search.drop_path``): each candidate of a CNN edge but the identity is
kept or zeroed per example, the kept ones scaled by 1 / (1 - rate), checked against the candidates computed
one by one; checkpointed edges see the same masks in their recomputation (gradients equal to the plain edge's);
inference and rate 0 are the plain mixed sum; the schedule and its validation."""
from __future__ import annotations

import dataclasses
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.config import ExperimentConfig, SearchConfig, SearchSpaceConfig
from emodarts_tf.search.callbacks import SearchDropPath
from emodarts_tf.search_space.cnn_cell import SearchCNNCell
from emodarts_tf.search_space.mixed_op import MixedOp, MixedSeqOp
from emodarts_tf.search_space.network import SearchBackbone, set_search_drop_path_rate
from emodarts_tf.search_space.primitives import CNN_PRIMITIVES

OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")


def _inputs(batch=16, seed=0):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, 6, 6, 3)).astype("float32"))
    w = tf.nn.softmax(tf.constant(rng.normal(size=len(OPS)).astype("float32")))
    return x, w


def _candidate_outputs(edge, x):
    """Each computed candidate's training-mode output, alone (batch statistics of the same batch)."""
    return {edge.op_names[i]: layer(x, training=True).numpy()
            for i, layer in zip(edge.active_indices, edge.candidates)}


def _kept_subsets(edge, x, w, rate):
    """Per example, the 0/1 vector over ``edge.droppable`` whose kept candidates (rescaled by 1 / (1 - rate)) plus
    the never-dropped ones reproduce the edge's training output; exactly one vector must fit each example."""
    y = edge(x, w, training=True).numpy()
    outs = [layer(x, training=True).numpy() for layer in edge.candidates]
    weights = [w.numpy()[i] for i in edge.active_indices]
    fixed = sum(weights[k] * outs[k] for k in range(len(outs)) if k not in edge.droppable)
    rows = []
    for b in range(len(y)):
        matches = []
        for keep in itertools.product((0, 1), repeat=len(edge.droppable)):
            expected = fixed[b] if not isinstance(fixed, int) else 0.0
            for k, kept in zip(edge.droppable, keep):
                expected = expected + kept * weights[k] * outs[k][b] / (1 - rate)
            if np.allclose(y[b], expected, rtol=1e-4, atol=1e-5):
                matches.append(keep)
        assert len(matches) == 1, (b, matches)
        rows.append(matches[0])
    return np.array(rows)


def test_each_example_is_a_subset_of_the_droppable_candidates_rescaled():
    keras.utils.set_random_seed(1)
    rate = 0.4
    edge = MixedOp(OPS, 3, 1, drop_path_rate=rate, drop_path_seed=0)
    x, w = _inputs(batch=64)
    droppable = ["max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3"]  # skip_connect is the identity here
    assert [edge.op_names[edge.active_indices[k]] for k in edge.droppable] == droppable
    share_dropped = 1 - _kept_subsets(edge, x, w, rate).mean(axis=0)
    # 64 examples per candidate: the dropped share is rate within 4 binomial standard deviations.
    assert np.all(np.abs(share_dropped - rate) < 4 * np.sqrt(rate * (1 - rate) / len(x))), share_dropped
    assert 0 < share_dropped.min() and share_dropped.max() < 1


def test_inference_and_rate_zero_are_the_plain_mixed_sum():
    keras.utils.set_random_seed(2)
    x, w = _inputs()
    dropping = MixedOp(OPS, 3, 1, drop_path_rate=0.5)
    plain = MixedOp(OPS, 3, 1)
    dropping.build(x.shape)
    plain.build(x.shape)
    assert plain.drop_path_variable is None and plain.seed_generator is None
    for a, b in zip(plain.trainable_variables, dropping.trainable_variables):
        a.assign(b)
    np.testing.assert_allclose(dropping(x, w, training=False).numpy(), plain(x, w, training=False).numpy(), atol=1e-6)
    # Rate set to 0 by the schedule: training mode computes the plain sum too.
    set_search_drop_path_rate(dropping, 0.0)
    outs = _candidate_outputs(dropping, x)
    expected = sum(w.numpy()[OPS.index(op)] * out for op, out in outs.items())
    np.testing.assert_allclose(dropping(x, w, training=True).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("graph", [False, True])
def test_checkpointed_edge_recomputes_with_the_forward_masks(graph):
    """The same masks (same seed state) with and without recomputation give the same output and gradients;
    a recomputation that drew new masks would give other gradients."""
    x, w = _inputs(batch=8, seed=3)
    edges = []
    for recompute in (False, True):
        edge = MixedOp(OPS, 3, 1, recompute=recompute, drop_path_rate=0.5, drop_path_seed=4)  # same masks
        edge.build(x.shape)
        edges.append(edge)
    edges[1].set_weights(edges[0].get_weights())  # weights and rate

    def run(edge):
        def step(x, w):
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = edge(x, w, training=True)
                loss = tf.reduce_sum(y * tf.cos(y))
            return y, tape.gradient(loss, [x, w] + edge.trainable_variables)

        y, grads = (tf.function(step) if graph else step)(x, w)
        return y.numpy(), [g.numpy() for g in grads]

    (y0, g0), (y1, g1) = run(edges[0]), run(edges[1])
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-6)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert np.abs(g0[1]).max() > 0


def test_reduction_edges_drop_the_factorized_reduce_too():
    """On a stride-2 edge ``skip_connect`` is a FactorizedReduce with weights, not the identity: droppable."""
    keras.utils.set_random_seed(5)
    edge = MixedOp(OPS, 3, 2, drop_path_rate=0.5, drop_path_seed=0)
    assert edge.droppable == tuple(range(len(edge.candidates)))
    x, w = _inputs(batch=32, seed=6)
    kept = _kept_subsets(edge, x, w, 0.5)
    skip = edge.droppable.index(edge.candidates.index(edge.op_layer("skip_connect")))
    assert 0 < kept[:, skip].sum() < len(x)  # kept for some examples, dropped for others


def test_drop_path_leaves_the_initial_weights_alone():
    """The masks' generators are seeded explicitly, so the backbone's weights (Keras draws unseeded initializer
    seeds from Python's random state as layers are constructed) are the same with and without drop-path."""
    space = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=2, stem_multiplier=1, seq_cells=1, seq_nodes=1,
                              seq_hidden=4, cnn_ops=list(OPS))
    nets = []
    for drop_path in (0.0, 0.4):
        keras.utils.set_random_seed(0)
        net = SearchBackbone(space, (8, 8, 1), 3, drop_path=drop_path, seed=3)
        net.build((None, 8, 8, 1))
        nets.append(net)
    assert len(nets[0].trainable_weights) == len(nets[1].trainable_weights)
    for a, b in zip(nets[0].trainable_weights, nets[1].trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    seeds = [e.drop_path_seed for cell in nets[1].cnn_cells for e in cell.edges]
    assert len(set(seeds)) == len(seeds) and seeds[0] == 3000  # one stream per edge


def test_schedule_sets_every_edge_of_a_backbone():
    space = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=2, stem_multiplier=1, seq_cells=1, seq_nodes=1,
                              seq_hidden=4, cnn_ops=list(OPS))
    net = SearchBackbone(space, (8, 8, 1), 3, drop_path=0.3)
    net.build((None, 8, 8, 1))
    edges = [e for cell in net.cnn_cells for e in cell.edges]
    assert all(e.drop_path_rate == 0.3 for e in edges)
    assert set_search_drop_path_rate(net, 0.1) == len(edges) == 3 * 5
    assert all(float(e.drop_path_variable.numpy()) == pytest.approx(0.1) for e in edges)
    assert net.get_config()["drop_path"] == 0.3
    assert SearchBackbone.from_config(net.get_config()).drop_path == 0.3
    callback = SearchDropPath(0.3, 4)
    callback.set_model(net)
    for epoch, rate in enumerate([0.0, 0.075, 0.15, 0.225]):
        callback.on_epoch_begin(epoch)
        assert float(edges[0].drop_path_variable.numpy()) == pytest.approx(rate)
    with pytest.raises(ValueError, match="drop_path > 0"):
        set_search_drop_path_rate(SearchBackbone(space, (8, 8, 1), 3), 0.1)
    assert set_search_drop_path_rate(SearchBackbone(space, (8, 8, 1), 3), 0.0) == 0


def test_config_round_trips_and_bad_values():
    cell = SearchCNNCell(2, 4, reduction=False, reduction_prev=False, ops=CNN_PRIMITIVES, drop_path_rate=0.2)
    assert SearchCNNCell.from_config(cell.get_config()).edges[0].drop_path_rate == 0.2
    edge = MixedOp(OPS, 3, 1, drop_path_rate=0.2)
    assert MixedOp.from_config(edge.get_config()).drop_path_rate == 0.2
    with pytest.raises(ValueError, match="drop_path_rate"):
        MixedOp(OPS, 3, 1, drop_path_rate=1.0)
    with pytest.raises(ValueError, match="drop_path_rate.*SeqNN"):
        MixedOp(("none", "lstm_1"), 4, kind="seq", drop_path_rate=0.2)
    assert "drop_path_rate" not in MixedSeqOp(("none", "lstm_1"), 4).get_config()
    with pytest.raises(ValueError, match="drop_path"):
        SearchBackbone(SearchSpaceConfig(seq_cells=0), (8, 8, 1), 3, drop_path=-0.1)
    with pytest.raises(ValueError, match="rate"):
        SearchDropPath(1.5, 4)


def test_runner_checks_and_builds_the_setting():
    from emodarts_tf.search.runner import build_search_model, check_search_config

    with pytest.raises(ValueError, match="search.drop_path"):
        check_search_config(SearchConfig(drop_path=1.0))
    with pytest.raises(ValueError, match="search.drop_path"):
        check_search_config(SearchConfig(drop_path="0.2"))
    space = SearchSpaceConfig(init_channels=2, cnn_cells=2, cnn_nodes=1, stem_multiplier=1, seq_cells=0,
                              cnn_ops=list(OPS))
    model = build_search_model(ExperimentConfig(space=space, search=SearchConfig(drop_path=0.2)), (8, 8, 1), 3,
                               steps_per_epoch=1)
    assert model.backbone.drop_path == 0.2
    assert all(e.drop_path_rate == 0.2 for cell in model.backbone.cnn_cells for e in cell.edges)


MIRRORED_SCRIPT = r"""
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from emodarts_tf.config import SearchSpaceConfig
from emodarts_tf.search.callbacks import SearchDropPath
from emodarts_tf.search.model import SearchModel
from emodarts_tf.search_space.network import SearchBackbone

space = SearchSpaceConfig(init_channels=2, cnn_cells=2, cnn_nodes=1, stem_multiplier=1, seq_cells=0,
                          cnn_ops=["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"])
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = SearchModel(SearchBackbone(space, (8, 8, 1), 3, recompute=True, drop_path=0.5), input_shape=(8, 8, 1),
                        seed=0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.03), order="first")
rng = np.random.default_rng(0)
x, y = rng.normal(size=(8, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 8).astype("int32")
data = tf.data.Dataset.from_tensors(((x, y), (x[::-1].copy(), y[::-1].copy()))).repeat()
before = [a.numpy().copy() for a in model.arch_variables]
history = model.fit(data, steps_per_epoch=2, epochs=2, verbose=0, callbacks=[SearchDropPath(0.5, 2)])
edge = model.backbone.cnn_cells[0].edges[0]
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"],
                  "rate": [float(v.numpy()) for v in strategy.experimental_local_results(edge.drop_path_variable.value)],
                  "alphas_moved": max(float(np.abs(a.numpy() - b).max()) for a, b in zip(model.arch_variables, before))}))
"""


def test_search_step_with_drop_path_under_mirrored_strategy():
    import json
    import math
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert all(math.isfinite(v) for v in result["loss"])
    assert result["rate"] == [pytest.approx(0.25)] * 2  # epoch 1 of 2: 0.5 * 1 / 2, on both replicas
    assert result["alphas_moved"] > 0


def test_two_stream_backbone_takes_drop_path_with_an_image_stream_only():
    from emodarts_tf.search_space.two_stream import TwoStreamSearchBackbone

    space = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=1, stem_multiplier=1, seq_cells=1, seq_nodes=1,
                              seq_hidden=4, cnn_ops=list(OPS), fusion="concat")
    shapes = {"spectrogram": (8, 8, 1), "frames": (6, 5)}
    net = TwoStreamSearchBackbone(space, shapes, 3, drop_path=0.3, seed=2)
    assert all(e.drop_path_rate == 0.3 for cell in net.cnn_cells for e in cell.edges)
    again = TwoStreamSearchBackbone.from_config(net.get_config())
    assert (again.drop_path, again.seed) == (0.3, 2)
    with pytest.raises(ValueError, match="drop_path.*image stream"):
        TwoStreamSearchBackbone(dataclasses.replace(space, fusion="frames"), {"frames": (6, 5)}, 3, drop_path=0.3)


def test_runner_refuses_drop_path_at_second_order():
    from emodarts_tf.search.runner import check_search_config

    with pytest.raises(ValueError, match="search.drop_path.*second"):
        check_search_config(SearchConfig(drop_path=0.2, order="second"))
    check_search_config(SearchConfig(drop_path=0.0, order="second"))
