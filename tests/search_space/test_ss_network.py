"""SearchBackbone and build_fixed_network: forward/backward, configs, genotypes, save/load, export."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.config import SearchSpaceConfig, TrainConfig
from emodarts_tf.search_space.cnn_cell import FixedCNNCell
from emodarts_tf.search_space.genotype import Genotype
from emodarts_tf.search_space.mixed_op import MixedOp
from emodarts_tf.search_space.seq_bank import GroupedSeqEdges
from emodarts_tf.search_space.network import (
    SearchBackbone,
    apply_train_overrides,
    build_fixed_network,
    set_drop_path_rate,
)
from emodarts_tf.search_space.primitives import num_edges

SHAPE = (20, 17, 1)  # odd sizes on purpose
TINY = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=2, stem_multiplier=2, seq_cells=2, seq_nodes=2,
                         seq_hidden=6, seq_ops=["none", "skip_connect", "lstm_1", "rnn_2", "lstm_att_1"])
# cheaper still, for the tests that do not need every op
SMALL = dataclasses.replace(TINY, seq_cells=1, cnn_ops=["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"],
                            seq_ops=["none", "skip_connect", "lstm_1", "rnn_att_1"])


def _x(batch=2, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype("float32")


def _weights(net, seed=0):
    return {k: tf.nn.softmax(tf.random.stateless_normal(s, seed=(seed, i)))
            for i, (k, s) in enumerate(net.alpha_shapes().items())}


def _genotype(normal, reduce, seq, **concat):
    return Genotype(normal=normal, normal_concat=concat.get("normal_concat", list(range(2, 2 + len(normal)))),
                    reduce=reduce, reduce_concat=concat.get("reduce_concat", list(range(2, 2 + len(reduce)))),
                    seq=seq, seq_concat=concat.get("seq_concat", list(range(2, 2 + len(seq)))))


def test_backbone_forward_backward_reaches_every_mixed_op():
    net = SearchBackbone(TINY, SHAPE, num_classes=4)
    assert net.alpha_shapes() == {"normal": (5, 8), "reduce": (5, 8), "seq": (5, 5)}
    assert net.reduction_cells == (1, 2)
    assert [(c.channels, c.reduction, c.reduction_prev) for c in net.cnn_cells] == [
        (2, False, False), (4, True, False), (8, True, True)]
    weights = _weights(net)
    with tf.GradientTape() as tape:
        for w in weights.values():
            tape.watch(w)
        logits = net(_x(), weights, training=True)
        loss = tf.reduce_sum(logits ** 2)
    assert tuple(logits.shape) == (2, 4) and logits.dtype == "float32"
    variables = net.trainable_weights
    grads = tape.gradient(loss, variables + list(weights.values()))
    by_id = {id(v): g for v, g in zip(variables, grads)}
    missing = [v.path for v, g in zip(variables, grads) if g is None]
    assert not missing
    mixed_ops = [layer for layer in net._flatten_layers(include_self=False, recursive=True)
                 if isinstance(layer, MixedOp)]
    assert len(mixed_ops) == 3 * num_edges(2)  # the CNN edges; the SeqNN edges are grouped by input state
    banks = [layer for layer in net._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, GroupedSeqEdges)]
    assert len(banks) == 2 * (2 + 1)
    for layer in mixed_ops:
        for op_layer in layer.candidates:
            for v in op_layer.trainable_weights:
                assert np.any(by_id[id(v)].numpy() != 0), v.path
    for bank in banks:
        for v in bank.trainable_weights:
            assert np.any(by_id[id(v)].numpy() != 0), v.path
    for kind, g in zip(weights, grads[len(variables):]):
        assert np.any(g.numpy() != 0), kind


def test_backbone_sequence_runs_over_time_per_example():
    """No mixing across the batch: each example's logits are those it gets alone."""
    net = SearchBackbone(SMALL, SHAPE, num_classes=3)
    weights = _weights(net)
    x = _x(batch=3)
    together = keras.ops.convert_to_numpy(net(x, weights, training=False))
    for i in range(3):
        alone = keras.ops.convert_to_numpy(net(x[i:i + 1], weights, training=False))
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-4, atol=1e-5)
    assert net.seq_units == 6


@pytest.mark.parametrize(
    "changes, kinds",
    [({"cnn_cells": 1, "seq_cells": 0}, {"normal"}), ({"cnn_cells": 2, "seq_cells": 1}, {"reduce", "seq"})],
)
def test_backbone_without_some_cell_kinds(changes, kinds):
    space = dataclasses.replace(TINY, **changes, seq_hidden=None, cnn_ops=["skip_connect", "avg_pool_3x3"])
    net = SearchBackbone(space, (9, 7, 2), num_classes=2)
    weights = {k: v for k, v in _weights(net).items() if k in kinds}  # the unused kinds may be left out
    assert tuple(net(_x(shape=(9, 7, 2)), weights, training=True).shape) == (2, 2)
    assert net.seq_units == net.cnn_cells[-1].channels * space.cnn_nodes  # seq_hidden None: the CNN's channels
    assert set(net.alpha_shapes()) == {"normal", "reduce", "seq"}
    with pytest.raises(ValueError, match="weights"):
        net(_x(shape=(9, 7, 2)), {})


def test_backbone_config_round_trip():
    net = SearchBackbone(SMALL, SHAPE, num_classes=4, name="backbone")
    net.build((None, *SHAPE))
    clone = SearchBackbone.from_config(net.get_config())
    clone.build((None, *SHAPE))
    assert clone.get_config() == net.get_config()
    clone.set_weights(net.get_weights())
    weights = _weights(net)
    np.testing.assert_allclose(net(_x(), weights), clone(_x(), weights), rtol=1e-5, atol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(net))
    assert isinstance(restored, SearchBackbone) and restored.cnn_ops == net.cnn_ops


def test_backbone_genotype_and_bad_arguments():
    net = SearchBackbone(TINY, SHAPE, num_classes=4)
    alphas = {k: np.random.default_rng(0).normal(size=s) for k, s in net.alpha_shapes().items()}
    genotype = net.derive_genotype(alphas, max_skip=1)
    assert len(genotype.normal) == 2 and {op for node in genotype.seq for op, _ in node} <= set(net.seq_ops)
    for kwargs, match in (
        ({"space": TINY, "input_shape": (20, 17), "num_classes": 4}, "input_shape"),
        ({"space": TINY, "input_shape": SHAPE, "num_classes": 0}, "num_classes"),
        ({"space": dataclasses.replace(TINY, cnn_nodes=0), "input_shape": SHAPE, "num_classes": 2}, "cnn_nodes"),
        ({"space": {"channels": 3}, "input_shape": SHAPE, "num_classes": 2}, "space"),
    ):
        with pytest.raises(ValueError, match=match):
            SearchBackbone(**kwargs)


def test_backbone_mixed_precision_gives_float32_logits():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        net = SearchBackbone(SMALL, SHAPE, num_classes=4)
        logits = net(_x(), _weights(net), training=True)
        assert logits.dtype == "float32"
        assert net.cnn_cells[0].edges[0].candidates[-1].compute_dtype == "float16"
    finally:
        keras.config.set_dtype_policy("float32")


CNN_NODES_2 = [[["sep_conv_3x3", 0], ["skip_connect", 1]], [["dil_conv_5x5", 2], ["max_pool_3x3", 0]]]
GENOTYPES = {
    "derived": _genotype(CNN_NODES_2,
                         [[["avg_pool_3x3", 0], ["skip_connect", 1]], [["sep_conv_5x5", 2], ["dil_conv_3x3", 1]]],
                         [[["lstm_1", 0], ["skip_connect", 1]], [["lstm_att_1", 2], ["rnn_2", 0]]]),
    "all_skip": _genotype([[["skip_connect", 0], ["skip_connect", 1]]] * 2,
                          [[["skip_connect", 0], ["skip_connect", 1]], [["skip_connect", 2], ["skip_connect", 1]]],
                          [[["skip_connect", 0], ["skip_connect", 1]]] * 2),
    # more nodes than the space's cnn_nodes, a concat subset, a node reading an input in a reduction cell
    "hand_written": _genotype(CNN_NODES_2 + [[["sep_conv_3x3", 3], ["none", 1]]],
                              [[["max_pool_3x3", 1]], [["skip_connect", 2], ["sep_conv_3x3", 1]], [["none", 3]]],
                              [[["rnn_att_2", 1]]], normal_concat=[0, 3, 4], reduce_concat=[3, 4]),
}


@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_fixed_network_for_several_genotypes(name):
    genotype = GENOTYPES[name]
    model = build_fixed_network(genotype, TINY, SHAPE, num_classes=4)
    assert model.inputs[0].name == "mfcc"
    logits = model(_x(), training=True)
    assert tuple(logits.shape) == (2, 4) and logits.dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(model(_x(), training=False))))
    cells = [layer for layer in model.layers if isinstance(layer, FixedCNNCell)]
    channels_out = 8 * len(genotype.reduce_concat)
    # the sequence runs over time: T = frames after two reductions (17 -> 9 -> 5), frequency averaged away
    assert tuple(model.get_layer("frequency_pool").output.shape) == (None, 5, channels_out)
    assert [c.reduction for c in cells] == [False, True, True]
    assert cells[0].nodes == len(genotype.normal)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(_x(), training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    assert grads[-1] is not None  # the classifier always learns


def test_fixed_network_save_load_round_trip_with_aux_and_drop_path(tmp_path):
    model = build_fixed_network(GENOTYPES["derived"], TINY, SHAPE, num_classes=4, drop_path=0.3, aux=True)
    out = model(_x(), training=True)
    assert set(out) == {"logits", "aux_logits"} and tuple(out["aux_logits"].shape) == (2, 4)
    assert out["aux_logits"].dtype == "float32"
    assert set_drop_path_rate(model, 0.1) == 3
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    a, b = model(_x(), training=False), loaded(_x(), training=False)
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["aux_logits"], b["aux_logits"], rtol=1e-5, atol=1e-6)
    cell = loaded.get_layer("cnn_cell_0")
    assert float(cell.drop_path_variable.numpy()) == pytest.approx(0.1)
    # drop-path is inactive at inference: the rate changes nothing
    set_drop_path_rate(loaded, 0.0)
    np.testing.assert_allclose(loaded(_x(), training=False)["logits"], b["logits"], rtol=1e-6)


def test_fixed_network_export_serves_the_same_logits(tmp_path):
    genotype = dataclasses.replace(GENOTYPES["all_skip"], seq=[[["lstm_1", 0], ["skip_connect", 1]]],
                                   seq_concat=[2])
    model = build_fixed_network(genotype, TINY, SHAPE, num_classes=3)
    model.export(str(tmp_path / "export"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "export"))
    np.testing.assert_allclose(served.serve(_x()), model(_x(), training=False), rtol=1e-5, atol=1e-6)


def test_fixed_network_any_length_and_config_sizes():
    space = dataclasses.replace(TINY, init_channels=3, cnn_cells=4, seq_cells=1, seq_hidden=None, dropout=0.2)
    genotype = GENOTYPES["derived"]
    model = build_fixed_network(genotype, space, (12, None, 1), num_classes=5)
    for frames in (9, 16):
        assert tuple(model(_x(shape=(12, frames, 1))).shape) == (2, 5)
    proj = model.get_layer("seq_projection")
    assert proj.units == 3 * 2 * 2 * 2  # C * 2 * 2 (two reductions) * len(concat), since seq_hidden=None


def test_fixed_network_rejects_bad_genotypes_and_overrides_apply():
    bad = dataclasses.replace(GENOTYPES["derived"], normal=[[["lstm_1", 0]]])
    with pytest.raises(ValueError, match="normal"):
        build_fixed_network(bad, TINY, SHAPE, 4)
    reduce_concat_input = dataclasses.replace(GENOTYPES["derived"], reduce_concat=[0, 2])
    with pytest.raises(ValueError, match="reduce"):
        build_fixed_network(reduce_concat_input, TINY, SHAPE, 4)
    # All-`none` cells would give logits independent of the MFCCs: refused, naming the cell.
    all_none = _genotype([[["none", 0], ["none", 1]]] * 2, [[["none", 0], ["none", 1]]] * 2,
                         [[["none", 0], ["none", 1]]] * 2)
    with pytest.raises(ValueError, match="cell 'normal'.*does not depend on the cell inputs"):
        build_fixed_network(all_none, TINY, SHAPE, 4)
    with pytest.raises(ValueError, match="genotype"):
        build_fixed_network(GENOTYPES["derived"].to_dict(), TINY, SHAPE, 4)
    with pytest.raises(ValueError, match="drop_path"):
        build_fixed_network(GENOTYPES["derived"], TINY, SHAPE, 4, drop_path=1.5)
    space = apply_train_overrides(TINY, TrainConfig(init_channels=5, seq_cells=3))
    assert (space.init_channels, space.cnn_cells, space.seq_cells, space.dropout) == (5, 3, 3, TINY.dropout)
    assert apply_train_overrides(TINY, TrainConfig(dropout=0.3)).dropout == 0.3
    model = build_fixed_network(GENOTYPES["derived"], apply_train_overrides(TINY, TrainConfig(dropout=0.3)), SHAPE, 4)
    assert model.get_layer("dropout").rate == 0.3
    wide = apply_train_overrides(TINY, TrainConfig(seq_hidden=24))
    assert (wide.seq_hidden, wide.init_channels) == (24, TINY.init_channels)
    assert build_fixed_network(GENOTYPES["derived"], wide, SHAPE, 4).get_layer("seq_projection").units == 24
    assert num_edges(space.cnn_nodes) == 5


def test_backbone_and_cells_infer_shapes_in_a_symbolic_keras_call():
    """Keras 3 passes shapes as `<call argument>_shape`; a symbolic call must infer the logits shape."""
    net = SearchBackbone(SMALL, SHAPE, num_classes=3)
    shapes = net.alpha_shapes()
    x = keras.Input(shape=SHAPE)
    weights = {kind: keras.ops.softmax(keras.ops.zeros(shape), axis=-1) for kind, shape in shapes.items()}
    logits = net(x, weights)
    assert tuple(logits.shape) == (None, 3)
    assert net.compute_output_shape(x_shape=(5, *SHAPE)) == (5, 3)


def test_time_pooling_equals_numpy_statistics_and_round_trips():
    from emodarts_tf.search_space.network import TimePooling

    x = np.random.default_rng(3).normal(loc=1.5, scale=2.0, size=(3, 7, 5)).astype("float32")
    mean = TimePooling("mean")(x)
    np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-6, atol=1e-6)
    stats = TimePooling("mean_std", epsilon=1e-5)(x)
    expected = np.concatenate([x.mean(axis=1), np.sqrt(x.var(axis=1) + 1e-5)], axis=-1)
    np.testing.assert_allclose(stats, expected, rtol=1e-5, atol=1e-5)
    assert TimePooling("mean_std").compute_output_shape((None, None, 5)) == (None, 10)
    # a constant feature has a finite gradient through the square root
    const = tf.ones((2, 4, 3))
    with tf.GradientTape() as tape:
        tape.watch(const)
        y = tf.reduce_sum(TimePooling("mean_std")(const))
    assert np.all(np.isfinite(tape.gradient(y, const).numpy()))
    clone = TimePooling.from_config(TimePooling("mean_std", epsilon=1e-3).get_config())
    assert (clone.mode, clone.epsilon) == ("mean_std", 1e-3)
    with pytest.raises(ValueError, match="'max'"):
        TimePooling("max")
    with pytest.raises(ValueError, match="space.pooling"):
        SearchBackbone(dataclasses.replace(SMALL, pooling="median"), SHAPE, num_classes=4)


def test_statistics_pooling_head_in_supernet_and_fixed_network():
    space = dataclasses.replace(SMALL, pooling="mean_std")
    net = SearchBackbone(space, SHAPE, num_classes=3)
    logits = net(_x(), _weights(net))
    assert tuple(logits.shape) == (2, 3)
    assert tuple(net.classifier.kernel.shape) == (2 * space.seq_hidden, 3)
    genotype = GENOTYPES["hand_written"]
    model = build_fixed_network(genotype, space, SHAPE, num_classes=3)
    assert tuple(model.get_layer("logits").kernel.shape) == (2 * space.seq_hidden, 3)
    # the head is the statistics of the last SeqNN cell's output over time
    seq_out = keras.Model(model.input, model.get_layer("time_pool").input)(_x())
    expected = np.concatenate([seq_out.numpy().mean(1), np.sqrt(seq_out.numpy().var(1) + 1e-5)], -1)
    head = model.get_layer("logits")
    np.testing.assert_allclose(model(_x()), expected @ head.kernel.numpy() + head.bias.numpy(), rtol=1e-4, atol=1e-5)


def test_frequency_only_reductions_keep_every_frame_for_the_seqnn():
    """``space.reduce_time: false``: the reduction cells halve frequency only, so the SeqNN cells read all
    17 frames (2 reductions at stride 2 leave ceil(ceil(17 / 2) / 2) = 5), in both networks."""
    keep = dataclasses.replace(SMALL, reduce_time=False)
    for space, frames in ((SMALL, 5), (keep, 17)):
        model = build_fixed_network(GENOTYPES["derived"], space, SHAPE, 4)
        assert tuple(model.get_layer("frequency_pool").output.shape) == (None, frames, 8 * space.cnn_nodes)
        assert tuple(model.get_layer("cnn_cell_2").output.shape)[1] == 5  # 20 -> 10 -> 5 in frequency
    net = SearchBackbone(keep, SHAPE, num_classes=3)
    assert tuple(net(_x(), _weights(net), training=True).shape) == (2, 3)
    reduce_edges = [edge for cell in net.cnn_cells if cell.reduction for edge in cell.edges]
    assert {edge.stride for edge in reduce_edges} == {1, (2, 1)}
    assert SearchBackbone.from_config(net.get_config()).cnn_cells[1].reduction_stride == (2, 1)
    with pytest.raises(ValueError, match="space.reduce_time"):
        SearchBackbone(dataclasses.replace(SMALL, reduce_time="no"), SHAPE, num_classes=3)


def test_flattened_frequency_rows_feed_the_seqnn_projection(tmp_path):
    """``space.frequency_pooling: flatten``: each frame of the last CNN map keeps its frequency rows, so the
    projection reads ``H * C`` features per time step (20 -> 10 -> 5 rows x 8 * nodes channels), in both
    networks; the layer equals NumPy's transpose and reshape."""
    from emodarts_tf.search_space.network import FrequencyPooling

    x = np.random.default_rng(4).normal(size=(2, 5, 7, 3)).astype("float32")
    layer = FrequencyPooling("flatten")
    np.testing.assert_array_equal(layer(x), x.transpose(0, 2, 1, 3).reshape(2, 7, 15))
    assert layer.compute_output_shape((None, 5, None, 3)) == (None, None, 15)
    assert FrequencyPooling.from_config(layer.get_config()).mode == "flatten"
    np.testing.assert_allclose(FrequencyPooling("avg")(x), x.mean(axis=1), rtol=1e-6, atol=1e-6)

    flat = dataclasses.replace(SMALL, frequency_pooling="flatten")
    channels = 8 * flat.cnn_nodes
    model = build_fixed_network(GENOTYPES["derived"], flat, SHAPE, 4)
    assert tuple(model.get_layer("seq_projection").kernel.shape) == (5 * channels, flat.seq_hidden)
    cnn_out = keras.Model(model.input, model.get_layer("cnn_cell_2").output)(_x()).numpy()
    seq_in = keras.Model(model.input, model.get_layer("seq_projection").input)(_x()).numpy()
    np.testing.assert_array_equal(seq_in, cnn_out.transpose(0, 2, 1, 3).reshape(2, 5, 5 * channels))
    # any number of frames, and a SavedModel serves the same logits
    any_length = build_fixed_network(GENOTYPES["derived"], flat, (SHAPE[0], None, 1), 4)
    for frames in (9, 17):
        assert tuple(any_length(_x(shape=(SHAPE[0], frames, 1))).shape) == (2, 4)
    model.export(str(tmp_path / "export"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "export"))
    np.testing.assert_allclose(served.serve(_x()), model(_x(), training=False), rtol=1e-5, atol=1e-6)
    net = SearchBackbone(flat, SHAPE, num_classes=3)
    assert tuple(net(_x(), _weights(net), training=True).shape) == (2, 3)
    assert tuple(net.seq_projection.kernel.shape) == (5 * channels, flat.seq_hidden)
    assert SearchBackbone.from_config(net.get_config()).frequency_pool.mode == "flatten"
    with pytest.raises(ValueError, match="space.frequency_pooling"):
        build_fixed_network(GENOTYPES["derived"], dataclasses.replace(SMALL, frequency_pooling="median"), SHAPE, 4)
    unknown_rows = tf.function(layer.call, input_signature=[tf.TensorSpec((None, None, 7, 3), tf.float32)])
    with pytest.raises(ValueError, match="static frequency"):
        unknown_rows.get_concrete_function()
