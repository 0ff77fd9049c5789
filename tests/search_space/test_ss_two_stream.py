"""The EmotionNAS two-stream search space: the supernet against the discrete network, the information supplement
against numpy, shapes, configs, save/load, single-stream fusions, two-stream genotypes (v1 and v2 JSON)."""
from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.config import SearchSpaceConfig
from emodarts_tf.search_space.genotype import FORMAT, FORMAT_V2, Genotype, is_two_stream
from emodarts_tf.search_space.network import build_fixed_network, set_drop_path_rate
from emodarts_tf.search_space.primitives import num_edges
from emodarts_tf.search_space.seq_cell import edge_index, readers
from emodarts_tf.search_space.two_stream import (
    InformationSupplement,
    LateFusion,
    StreamDropout,
    TwoStreamSearchBackbone,
    build_fixed_two_stream,
)

SHAPES = {"spectrogram": (8, 12, 1), "frames": (10, 6)}
# No pooling ops: a searched pooling op has a BN after it that its retrained twin has not, so the one-hot
# supernet equals the fixed network only without them.
TINY = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=2, stem_multiplier=1, seq_cells=1, seq_nodes=2,
                         seq_hidden=4, cnn_ops=["none", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"],
                         seq_ops=["none", "skip_connect", "lstm_1", "rnn_att_1"])


def _space(fusion="supplement", **changes):
    return dataclasses.replace(TINY, fusion=fusion, **changes)


def _x(batch=2, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=(batch, *shape)).astype("float32") for name, shape in shapes.items()}


def _weights(net, seed=0):
    return {k: tf.nn.softmax(tf.random.stateless_normal(s, seed=(seed, i)))
            for i, (k, s) in enumerate(net.alpha_shapes().items())}


def _alphas(net, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s) for k, s in net.alpha_shapes().items()}


# ------------------------------------------------------------------------------- the supernet = the fixed network
def _one_hot(net, genotype) -> dict:
    """Mixing weights that select the genotype's op on its edges and `none` on every other edge."""
    weights = {}
    for kind in net.alpha_shapes():
        ops = net.seq_ops if kind == "seq" else net.cnn_ops
        nodes = net.space.seq_nodes if kind == "seq" else net.space.cnn_nodes
        w = np.zeros((num_edges(nodes), len(ops)), "float32")
        w[:, ops.index("none")] = 1.0
        for n, node in enumerate(genotype.cell(kind)):
            for op, j in node:
                w[edge_index(n, j)] = np.eye(len(ops), dtype="float32")[ops.index(op)]
        weights[kind] = w
    return weights


def _copy_op(searched, fixed) -> None:
    """A searched op's variables into its fixed twin (whose affine BN has gamma and beta besides)."""
    target = [v for v in fixed.weights if v.name not in ("gamma", "beta")]
    assert [v.name for v in searched.weights] == [v.name for v in target], fixed.name
    for s, t in zip(searched.weights, target):
        t.assign(s.value)


def _transplant(net, model) -> None:
    """The supernet's weights (of the genotype's ops) into the fixed network, layer by layer."""
    for name in ("stem_conv", "stem_bn", "frames_projection"):
        model.get_layer(name).set_weights(getattr(net, name).get_weights())
    for i, cell in enumerate(net.cnn_cells):
        fixed = model.get_layer(f"cnn_cell_{i}")
        _copy_op(cell.preprocess0, fixed.preprocess0)
        _copy_op(cell.preprocess1, fixed.preprocess1)
        edges = [(op, edge_index(n, j)) for n, node in enumerate(fixed.genotype_cell) for op, j in node]
        for layer, (op, e) in zip(fixed.edge_ops, edges):
            _copy_op(cell.edges[e].op_layer(op), layer)
    for i, cell in enumerate(net.seq_cells):
        fixed = model.get_layer(f"seq_cell_{i}")
        for name in ("preprocess0", "preprocess1", "output_projection"):
            getattr(fixed, name).set_weights(getattr(cell, name).get_weights())
        edges = [(op, n, j) for n, node in enumerate(fixed.genotype_cell) for op, j in node]
        for layer, (op, n, j) in zip(fixed.edge_ops, edges):
            if op not in ("none", "skip_connect"):
                layer.set_weights(cell.banks[j].candidate_weights(readers(cell.nodes, j).index(n), op))
    if net.supplement is not None:
        model.get_layer("supplement").set_weights(net.supplement.get_weights())
    model.get_layer("logits").set_weights(net.classifier.get_weights())


@pytest.mark.parametrize("fusion, init, freq", [("supplement", "random", "avg"), ("supplement", "identity", "avg"),
                                               ("concat", "random", "avg"), ("supplement", "random", "flatten")])
def test_one_hot_supernet_equals_the_discrete_network(fusion, init, freq):
    space = _space(fusion, supplement_init=init, frequency_pooling=freq)
    net = TwoStreamSearchBackbone(space, SHAPES, num_classes=3)
    genotype = net.derive_genotype(_alphas(net, seed=5))
    model = build_fixed_two_stream(genotype, space, SHAPES, num_classes=3)
    x = _x(batch=3)
    one_hot = _one_hot(net, genotype)
    net(x, one_hot)  # build
    if init == "identity":  # scales away from their zero start, so the context counts
        for scale, value in zip(net.supplement.scales.values(), (0.7, -0.4)):
            scale.assign(value)
    _transplant(net, model)
    assert net.count_params() > model.count_params()
    for training in (False, True):  # moving statistics (both fresh), then batch statistics
        np.testing.assert_allclose(net(x, one_hot, training=training), model(x, training=training),
                                   rtol=1e-5, atol=1e-5, err_msg=f"training={training}")
    # another mixture gives another function
    assert np.max(np.abs(net(x, _weights(net)) - model(x))) > 1e-4


# ------------------------------------------------------------------------------- the information supplement
def _numpy_supplement(layer, a, b):
    """The supplement's formula in numpy, with the layer's weights."""
    def dense(name, x):
        kernel, bias = (w.astype(np.float64) for w in getattr(layer, name).get_weights())
        return x @ kernel + bias

    def attend(x, other, query, key, value, context, gate):
        q, k, v = dense(query, x), dense(key, other), dense(value, other)
        heads = []
        for h in range(layer.num_heads):
            part = slice(h * layer.head_dim, (h + 1) * layer.head_dim)
            scores = np.einsum("bqd,bkd->bqk", q[..., part], k[..., part]) / np.sqrt(layer.head_dim)
            attention = np.exp(scores - scores.max(-1, keepdims=True))
            attention /= attention.sum(-1, keepdims=True)
            heads.append(np.einsum("bqk,bkd->bqd", attention, v[..., part]))
        ctx = dense(context, np.concatenate(heads, -1))
        g = 1.0 / (1.0 + np.exp(-dense(gate, np.concatenate([x, ctx], -1))))
        if layer.init == "identity":
            g = np.tanh(float(layer.scales[query[-1]].numpy())) * g
        return x + g * ctx

    a, b = dense("project_a", a.astype(np.float64)), dense("project_b", b.astype(np.float64))
    return (attend(a, b, "query_a", "key_b", "value_b", "context_a", "gate_a"),
            attend(b, a, "query_b", "key_a", "value_a", "context_b", "gate_b"))


@pytest.mark.parametrize("num_heads, init", [(1, "random"), (2, "random"), (2, "identity")])
def test_information_supplement_equals_numpy(num_heads, init):
    layer = InformationSupplement(6, num_heads=num_heads, init=init)
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 5, 4)).astype("float32")  # the two streams differ in length and width
    b = rng.normal(size=(3, 7, 9)).astype("float32")
    layer.build([a.shape, b.shape])
    for v in layer.trainable_weights:  # non-zero biases too
        v.assign(rng.normal(scale=0.5, size=v.shape))
    out_a, out_b = layer([a, b])
    expected_a, expected_b = _numpy_supplement(layer, a, b)
    np.testing.assert_allclose(out_a, expected_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_b, expected_b, rtol=1e-5, atol=1e-5)
    assert layer.compute_output_shape([(None, 5, 4), (None, None, 9)]) == [(None, 5, 6), (None, None, 6)]
    # 2 projections, 2 x (q, k, v, output, gate), and the two scales of the identity start
    assert len(layer.trainable_weights) == 2 * (2 + 2 * 5) + (2 if init == "identity" else 0)
    clone = InformationSupplement.from_config(layer.get_config())
    assert (clone.units, clone.num_heads, clone.init) == (6, num_heads, init)
    for kwargs, match in (({"units": 0}, "units"), ({"units": 6, "num_heads": 4}, "num_heads"),
                          ({"units": 6, "init": "zeros"}, r"init: expected one of \('random', 'identity'\)")):
        with pytest.raises(ValueError, match=match):
            InformationSupplement(**kwargs)


def test_identity_supplement_starts_as_the_identity_and_learns_its_scales():
    """With init="identity" a fresh module returns its projected inputs unchanged (numpy), whatever the other
    stream holds; the scales get a gradient at their zero start, so the context can come in."""
    layer = InformationSupplement(4, init="identity")
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 5, 3)).astype("float32"), rng.normal(size=(2, 7, 6)).astype("float32")
    out_a, out_b = layer([a, b])
    for out, x, name in ((out_a, a, "project_a"), (out_b, b, "project_b")):
        kernel, bias = getattr(layer, name).get_weights()
        np.testing.assert_allclose(out, x @ kernel + bias, rtol=1e-5, atol=1e-6)
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_sum(tf.square(o)) for o in layer([a, b]))
    grads = tape.gradient(loss, [layer.scales["a"], layer.scales["b"]])
    assert all(abs(float(g)) > 1e-4 for g in grads)
    with pytest.raises(ValueError, match="space.supplement_init"):
        TwoStreamSearchBackbone(_space(supplement_init="open"), SHAPES, 4)


def test_information_supplement_only_mixes_within_an_example():
    layer = InformationSupplement(4)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3, 5, 4)).astype("float32"), rng.normal(size=(3, 6, 4)).astype("float32")
    together = layer([a, b])
    alone = layer([a[1:2], b[1:2]])
    for t, s in zip(together, alone):
        np.testing.assert_allclose(t[1:2], s, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- the supernet
def test_backbone_forward_backward_reaches_both_streams_and_every_kind():
    net = TwoStreamSearchBackbone(TINY, SHAPES, num_classes=4)
    assert net.alpha_shapes() == {"normal": (5, 4), "reduce": (5, 4), "seq": (5, 4)}
    assert net.cell_kinds == ("normal", "reduce", "seq") and net.reduction_cells == (1, 2)
    assert (net.image_input, net.has_frames, net.units, net.cnn_channels) == ("spectrogram", True, 4, 16)
    weights = _weights(net)
    with tf.GradientTape() as tape:
        for w in weights.values():
            tape.watch(w)
        logits = net(_x(), weights, training=True)
        loss = tf.reduce_sum(logits ** 2)
    assert tuple(logits.shape) == (2, 4) and logits.dtype == "float32"
    grads = tape.gradient(loss, net.trainable_weights + list(weights.values()))
    assert not [v.path for v, g in zip(net.trainable_weights, grads) if g is None]
    for kind, g in zip(weights, grads[len(net.trainable_weights):]):
        assert np.any(g.numpy() != 0), kind
    # each stream reads its own input: changing the frames changes the logits
    other = dict(_x(), frames=_x(seed=9)["frames"])
    assert np.max(np.abs(net(other, weights) - net(_x(), weights))) > 1e-6


def test_backbone_infers_shapes_in_a_symbolic_keras_call():
    net = TwoStreamSearchBackbone(_space(pooling="mean_std"), {"mfcc": (8, None, 1), "frames": (None, 6)}, 3)
    x = {"mfcc": keras.Input(shape=(8, None, 1)), "frames": keras.Input(shape=(None, 6))}
    weights = {k: keras.ops.softmax(keras.ops.zeros(s), axis=-1) for k, s in net.alpha_shapes().items()}
    assert tuple(net(x, weights).shape) == (None, 3)
    assert net.compute_output_shape({"mfcc": (5, 8, 12, 1), "frames": (5, 10, 6)}) == (5, 3)
    assert tuple(net.classifier.kernel.shape) == (2 * 4 + 2 * 4, 3)  # mean and std of both streams of width d
    assert tuple(net({"mfcc": _x()["spectrogram"], "frames": _x()["frames"][:, :7]}, weights).shape) == (2, 3)


def test_backbone_config_round_trip():
    net = TwoStreamSearchBackbone(_space("concat"), SHAPES, num_classes=4, supplement_heads=2, name="backbone")
    net.build({k: (None, *s) for k, s in SHAPES.items()})
    clone = TwoStreamSearchBackbone.from_config(net.get_config())
    clone.build({k: (None, *s) for k, s in SHAPES.items()})
    assert clone.get_config() == net.get_config()
    assert net.get_config()["input_shapes"] == {"spectrogram": [8, 12, 1], "frames": [10, 6]}
    clone.set_weights(net.get_weights())
    weights = _weights(net)
    np.testing.assert_allclose(net(_x(), weights), clone(_x(), weights), rtol=1e-5, atol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(net))
    assert isinstance(restored, TwoStreamSearchBackbone) and restored.fusion == "concat"
    # concat: the image stream keeps its channels, the frames stream has width d
    assert tuple(net.classifier.kernel.shape) == (16 + 4, 4)


@pytest.mark.parametrize("fusion, stream, kinds", [("spectrogram", "spectrogram", ("normal", "reduce")),
                                                   ("frames", "frames", ("seq",))])
def test_single_stream_fusions_build_only_their_stream(fusion, stream, kinds, tmp_path):
    space = _space(fusion)
    net = TwoStreamSearchBackbone(space, SHAPES, num_classes=3)  # the other input's shape is not read
    assert tuple(net.alpha_shapes()) == kinds and net.cell_kinds == kinds
    assert list(net.input_shapes) == [stream]
    assert (len(net.cnn_cells) > 0, len(net.seq_cells) > 0) == (stream == "spectrogram", stream == "frames")
    assert net.supplement is None
    only = {stream: _x()[stream]}
    assert tuple(net(only, _weights(net)).shape) == (2, 3)  # the other input is not needed
    genotype = net.derive_genotype(_alphas(net))
    assert genotype.cell_kinds == kinds and genotype.stream_cells == {stream: list(kinds)}
    assert genotype.fusion == fusion and is_two_stream(genotype)
    model = build_fixed_two_stream(genotype, space, SHAPES, num_classes=3)
    assert [t.name for t in model.inputs] == [stream]
    assert tuple(model(only).shape) == (2, 3)
    # fed both streams, as the fold's batches are, it reads its own stream by name, before and after a reload
    both = _x()
    changed = {k: (v if k == stream else v + 3.0) for k, v in both.items()}
    path = tmp_path / "one_stream.keras"
    model.save(path)
    for net_ in (model, keras.models.load_model(path)):
        np.testing.assert_allclose(net_(both), model(only), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(net_(changed), model(only), rtol=1e-6, atol=1e-6)
    other = {k: v for k, v in SHAPES.items() if k != stream}
    with pytest.raises(ValueError, match=f"input_shapes: fusion '{fusion}' expected"):
        TwoStreamSearchBackbone(space, other, 3)


def test_backbone_rejects_bad_inputs_naming_them():
    for shapes, match in (
        ({"spectrogram": (8, 12, 1), "frames": (10, 6), "wav": (100,)}, r"unknown input name\(s\) \['wav'\]"),
        ({"spectrogram": (8, 12, 1), "mfcc": (8, 12, 1), "frames": (10, 6)}, "one image input"),
        ({"spectrogram": (8, 12, 1)}, "fusion 'supplement' expected a 'frames' input"),
        ({"frames": (10, 6)}, "expected a 'spectrogram' or 'mfcc' input"),
        ({"spectrogram": (8, 12, 1), "frames": (10,)}, r"input_shapes\['frames'\]: expected \(frames, features\)"),
        ({"spectrogram": (8, 12), "frames": (10, 6)}, r"input_shapes\['spectrogram'\]"),
        ([(8, 12, 1), (10, 6)], "input_shapes: expected a dict"),
    ):
        with pytest.raises(ValueError, match=match):
            TwoStreamSearchBackbone(TINY, shapes, 4)
    with pytest.raises(ValueError, match="space.fusion"):
        TwoStreamSearchBackbone(_space("early"), SHAPES, 4)
    with pytest.raises(ValueError, match="num_heads"):
        TwoStreamSearchBackbone(TINY, SHAPES, 4, supplement_heads=3)
    net = TwoStreamSearchBackbone(TINY, SHAPES, 4)
    with pytest.raises(ValueError,
                       match=r"expected input shapes \{name: ...\} with the names \[.spectrogram., .frames.\], received tuple"):
        net.build((None, 8, 12, 1))
    net(_x(), _weights(net))  # built: the call's own checks
    with pytest.raises(ValueError, match=r"missing \['frames'\]"):
        net({"spectrogram": _x()["spectrogram"]}, _weights(net))
    with pytest.raises(ValueError, match=r"x: expected inputs \{name: ...\}"):
        net(_x()["spectrogram"], _weights(net))
    with pytest.raises(ValueError, match="weights"):
        net(_x(), {"normal": _weights(net)["normal"]})
    with pytest.raises(ValueError, match="input 'frames' expected shape"):
        net.build({"spectrogram": (None, 8, 12, 1), "frames": (None, 10, 7)})


# ------------------------------------------------------------------------------- the fixed network
def test_fixed_network_config_and_keras_round_trip_with_aux_and_drop_path(tmp_path):
    net = TwoStreamSearchBackbone(TINY, SHAPES, num_classes=4)
    genotype = net.derive_genotype(_alphas(net, seed=1), meta={"fold": 1})
    model = build_fixed_two_stream(genotype, TINY, {"spectrogram": (8, None, 1), "frames": (None, 6)}, 4,
                                   drop_path=0.2, aux=True)
    assert sorted(t.name for t in model.inputs) == ["frames", "spectrogram"]
    out = model(_x(), training=True)
    assert set(out) == {"logits", "aux_logits"} and out["logits"].dtype == "float32"
    assert set_drop_path_rate(model, 0.1) == 3
    x = _x(seed=4)
    expected = model(x, training=False)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x)["logits"], expected["logits"], rtol=1e-5, atol=1e-6)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    got = loaded(x, training=False)
    for key in ("logits", "aux_logits"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6)
    # other lengths of both time axes
    assert tuple(loaded(_x(shapes={"spectrogram": (8, 20, 1), "frames": (3, 6)}))["logits"].shape) == (2, 4)


def test_fixed_network_checks_the_genotype_against_the_space_and_inputs():
    net = TwoStreamSearchBackbone(TINY, SHAPES, num_classes=4)
    genotype = net.derive_genotype(_alphas(net))
    with pytest.raises(ValueError, match="searched with fusion 'supplement', but space.fusion is 'concat'"):
        build_fixed_two_stream(genotype, _space("concat"), SHAPES, 4)
    with pytest.raises(ValueError, match=r"inputs of its streams \['spectrogram', 'frames'\]"):
        build_fixed_two_stream(genotype, TINY, {"mfcc": (8, 12, 1), "frames": (10, 6)}, 4)
    with pytest.raises(ValueError, match="fixed frequency size"):
        build_fixed_two_stream(genotype, TINY, {"spectrogram": (None, 12, 1), "frames": (10, 6)}, 4)
    frames_only = TwoStreamSearchBackbone(_space("frames"), SHAPES, 4).derive_genotype({"seq": _alphas(net)["seq"]})
    with pytest.raises(ValueError, match="aux: expected False without an image stream"):
        build_fixed_two_stream(frames_only, _space("frames"), SHAPES, 4, aux=True)
    # a two-stream genotype without CNN cells cannot make a single-stream network, and says why
    with pytest.raises(ValueError, match=r"without \['normal', 'reduce'\] \(its streams: \{'frames': \['seq'\]\}\)"):
        build_fixed_network(frames_only, TINY, SHAPES["spectrogram"], 4)
    # a v1 genotype (all three cells) builds any fusion
    v1 = dataclasses.replace(genotype, streams=None)
    assert tuple(build_fixed_two_stream(v1, _space("concat"), SHAPES, 4)(_x()).shape) == (2, 4)


# ------------------------------------------------------------------------------- genotypes v1 and v2
CNN_CELL = [[["sep_conv_3x3", 0], ["skip_connect", 1]], [["dil_conv_3x3", 2], ["sep_conv_3x3", 0]]]
SEQ_CELL = [[["lstm_1", 0], ["skip_connect", 1]], [["rnn_att_1", 2], ["lstm_1", 1]]]
STREAMS = {"method": "emotionnas", "fusion": "supplement",
           "streams": {"spectrogram": ["normal", "reduce"], "frames": ["seq"]}}


def _v1_dict():
    return {"format": FORMAT, "normal": CNN_CELL, "normal_concat": [2, 3], "reduce": CNN_CELL, "reduce_concat": [2, 3],
            "seq": SEQ_CELL, "seq_concat": [2, 3], "meta": {"fold": 2}}


def test_v1_genotypes_load_and_save_as_before(tmp_path):
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(_v1_dict()))
    genotype = Genotype.load(path)
    assert genotype.streams is None and not is_two_stream(genotype) and genotype.fusion is None
    assert genotype.to_dict() == _v1_dict() and list(genotype.to_dict()) == list(_v1_dict())
    assert json.loads(genotype.save(tmp_path / "again.json").read_text()) == _v1_dict()
    no_format = {k: v for k, v in _v1_dict().items() if k != "format"}
    assert Genotype.from_dict(no_format) == genotype
    assert not is_two_stream(_v1_dict())


def test_v2_genotypes_round_trip(tmp_path):
    d = {**_v1_dict(), "format": FORMAT_V2, "streams": STREAMS}
    genotype = Genotype.from_dict(d)
    assert is_two_stream(genotype) and is_two_stream(d)
    assert genotype.stream_cells == STREAMS["streams"] and genotype.fusion == "supplement"
    again = Genotype.load(genotype.save(tmp_path / "v2.json"))
    assert again == genotype and again.to_dict()["format"] == FORMAT_V2
    assert json.loads((tmp_path / "v2.json").read_text())["streams"] == STREAMS
    # a single-stream genotype holds its stream's cells only
    frames = {"format": FORMAT_V2, "seq": SEQ_CELL,
              "streams": {"method": "emotionnas", "fusion": "frames", "streams": {"frames": ["seq"]}}}
    g = Genotype.from_dict(frames)
    assert g.cell_kinds == ("seq",) and g.normal is None and g.seq_concat == [2, 3]
    assert set(Genotype.load(g.save(tmp_path / "frames.json")).to_dict()) == {"format", "seq", "seq_concat",
                                                                              "streams", "meta"}
    # derived by the backbone: its cells, its streams
    net = TwoStreamSearchBackbone(_space("concat"), {"mfcc": (8, 12, 1), "frames": (10, 6)}, 3)
    derived = net.derive_genotype(_alphas(net), max_skip=1)
    assert derived.streams == {"method": "emotionnas", "fusion": "concat",
                               "streams": {"mfcc": ["normal", "reduce"], "frames": ["seq"]}}
    assert Genotype.from_dict(derived.to_dict()) == derived


@pytest.mark.parametrize("change, match", [
    ({"format": "emodarts-tf/genotype/v3"}, "unknown genotype format"),
    ({"format": FORMAT}, "a genotype with streams has format"),
    ({"streams": "drop"}, "missing 'streams'"),
    ({"streams": {**STREAMS, "method": "darts"}}, r"streams.method: expected one of \('emotionnas',\)"),
    ({"streams": {**STREAMS, "fusion": "early"}}, "streams.fusion: expected one of"),
    ({"streams": {**STREAMS, "extra": 1}}, "expected keys"),
    ({"streams": {**STREAMS, "streams": {"spectrogram": ["normal", "reduce"], "wav": ["seq"]}}},
     "unknown stream name 'wav'"),
    ({"streams": {**STREAMS, "streams": {"spectrogram": ["normal", "reduce"], "frames": ["normal"]}}},
     "stream 'frames' can hold cells \\['seq'\\], received 'normal'"),
    ({"streams": {**STREAMS, "fusion": "spectrogram", "streams": {"spectrogram": ["normal", "reduce"]}}},
     r"the genotype has cell\(s\) \['seq'\] that no stream lists"),
    ({"seq": "drop", "seq_concat": "drop"}, "lists cell 'seq', which the genotype lacks"),
    ({"streams": {**STREAMS, "fusion": "frames"}}, "fusion 'frames' expected the streams 'frames'"),
    ({"streams": {**STREAMS, "streams": {"spectrogram": ["normal"], "mfcc": ["reduce"], "frames": ["seq"]}}},
     "one image stream"),
    ({"streams": {**STREAMS, "streams": {"spectrogram": [], "frames": ["seq"]}}}, "non-empty list of cell kinds"),
])
def test_v2_genotype_errors_name_the_fault(change, match):
    d = {**_v1_dict(), "format": FORMAT_V2, "streams": STREAMS}
    for key, value in change.items():
        if value == "drop":
            d.pop(key)
        else:
            d[key] = value
    with pytest.raises(ValueError, match=match):
        Genotype.from_dict(d, source="g.json")


def test_genotype_validate_and_is_two_stream_arguments():
    genotype = Genotype.from_dict({**_v1_dict(), "format": FORMAT_V2, "streams": STREAMS})
    genotype.validate()
    broken = dataclasses.replace(genotype, streams={**STREAMS, "fusion": "concat", "streams": {"frames": ["seq"]}})
    with pytest.raises(ValueError, match="fusion 'concat' expected the streams"):
        broken.validate()
    with pytest.raises(ValueError, match="missing cell 'seq'"):
        dataclasses.replace(genotype, streams=None, seq=None).validate()
    with pytest.raises(ValueError, match="genotype: expected a Genotype or its JSON dict"):
        is_two_stream("genotype.json")


def test_with_fusion_keeps_the_searched_cells_of_the_streams_it_reads():
    """The fusion ablations retrain the same searched cells: concat keeps all, a stream alone keeps its own."""
    genotype = Genotype.from_dict({**_v1_dict(), "format": "emodarts-tf/genotype/v2", "streams": STREAMS})
    concat = genotype.with_fusion("concat")
    assert concat.fusion == "concat" and concat.cell_kinds == ("normal", "reduce", "seq")
    assert concat.normal == genotype.normal and concat.seq == genotype.seq
    image = genotype.with_fusion("spectrogram")
    assert image.cell_kinds == ("normal", "reduce") and image.stream_cells == {"spectrogram": ["normal", "reduce"]}
    assert image.reduce == genotype.reduce and image.meta["fusion_of_search"] == "supplement"
    frames = genotype.with_fusion("frames")
    assert frames.cell_kinds == ("seq",) and frames.seq_concat == genotype.seq_concat
    assert Genotype.from_dict(frames.to_dict()).to_dict() == frames.to_dict()
    assert tuple(build_fixed_two_stream(frames, _space("frames"), SHAPES, 4)(_x()).shape) == (2, 4)
    with pytest.raises(ValueError, match="fusion: expected one of"):
        genotype.with_fusion("sum")
    with pytest.raises(ValueError, match="expected the streams 'spectrogram' or 'mfcc' and 'frames'"):
        frames.with_fusion("supplement")
    with pytest.raises(ValueError, match="single-stream"):
        Genotype.from_dict(_v1_dict()).with_fusion("concat")


# ------------------------------------------------------------------------------- stream heads
def _copy_by_layer_name(source, target, renames=None) -> int:
    """Copy every weighted layer of ``target`` from the layer of ``source`` with the same name (or the name in
    ``renames``); returns how many layers were copied."""
    renames = renames or {}
    copied = 0
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(renames.get(layer.name, layer.name)).get_weights())
            copied += 1
    return copied


@pytest.mark.parametrize("fusion", ["supplement", "concat"])
def test_stream_heads_equal_each_stream_alone_and_leave_the_fused_logits_unchanged(fusion):
    space = _space(fusion, dropout=0.3)
    net = TwoStreamSearchBackbone(space, SHAPES, num_classes=3)
    genotype = net.derive_genotype(_alphas(net, seed=2))
    keras.utils.set_random_seed(0)
    model = build_fixed_two_stream(genotype, space, SHAPES, 3, stream_heads=True)
    assert sorted(model.output) == ["aux_frames", "aux_spectrogram", "logits"]
    x = _x(seed=5)
    out = model(x, training=False)
    # the fused logits: the network without heads, with the same weights
    plain = build_fixed_two_stream(genotype, space, SHAPES, 3)
    assert _copy_by_layer_name(model, plain) == len([layer for layer in plain.layers if layer.weights])
    np.testing.assert_allclose(plain(x, training=False), out["logits"], rtol=1e-5, atol=1e-6)
    # each head: that stream's network alone (its own fusion), its classifier the head
    for stream, head in (("spectrogram", "aux_spectrogram"), ("frames", "aux_frames")):
        alone = build_fixed_two_stream(genotype.with_fusion(stream), _space(stream, dropout=0.3), SHAPES, 3)
        _copy_by_layer_name(model, alone, renames={"logits": head})
        np.testing.assert_allclose(alone({stream: x[stream]}, training=False), out[head], rtol=1e-5, atol=1e-6)
    assert out["aux_frames"].dtype == "float32"


def test_stream_heads_need_two_streams_and_the_trainer_weights_them():
    from emodarts_tf.config import TrainConfig
    from emodarts_tf.evaluation.trainer import stream_head_weights

    net = TwoStreamSearchBackbone(TINY, SHAPES, num_classes=3)
    genotype = net.derive_genotype(_alphas(net))
    with pytest.raises(ValueError, match="stream_heads: expected False with one stream \\(fusion 'frames'\\)"):
        build_fixed_two_stream(genotype.with_fusion("frames"), _space("frames"), SHAPES, 3, stream_heads=True)
    train = TrainConfig(stream_heads=0.5)
    assert stream_head_weights(genotype, train) == {"aux_spectrogram": 0.5, "aux_frames": 0.5}
    assert stream_head_weights(genotype.with_fusion("frames"), train) == {}
    assert stream_head_weights(genotype, TrainConfig()) == {}
    with pytest.raises(ValueError, match="train.stream_heads: expected a loss weight >= 0, received -1"):
        stream_head_weights(genotype, TrainConfig(stream_heads=-1))


# ------------------------------------------------------------------------------- modality dropout
def test_stream_dropout_drops_one_whole_stream_per_example_at_its_rate_and_only_in_training():
    rng = np.random.default_rng(0)
    n, rate = 4000, 0.4
    a = rng.uniform(1.0, 2.0, size=(n, 3, 5)).astype("float32")  # nonzero everywhere
    b = rng.uniform(1.0, 2.0, size=(n, 7, 2)).astype("float32")
    layer = StreamDropout(rate, seed=3)
    out_a, out_b = (np.asarray(t) for t in layer([a, b], training=True))
    lost_a = np.all(out_a == 0, axis=(1, 2))
    lost_b = np.all(out_b == 0, axis=(1, 2))
    # an example keeps a stream whole or loses it whole, never loses both
    np.testing.assert_array_equal(out_a[~lost_a], a[~lost_a])
    np.testing.assert_array_equal(out_b[~lost_b], b[~lost_b])
    assert not np.any(lost_a & lost_b)
    # each stream is lost with rate / 2 (binomial standard error 0.007 at n = 4000: 4 of them)
    for lost in (lost_a, lost_b):
        assert abs(lost.mean() - rate / 2) < 4 * np.sqrt(rate / 2 * (1 - rate / 2) / n)
    # inference and rate 0: the identity
    for out, x in zip(layer([a, b], training=False), (a, b)):
        np.testing.assert_array_equal(np.asarray(out), x)
    for out, x in zip(StreamDropout(0.0)([a, b], training=True), (a, b)):
        np.testing.assert_array_equal(np.asarray(out), x)
    # the same seed draws the same examples
    again = StreamDropout(rate, seed=3)([a, b], training=True)
    np.testing.assert_array_equal(np.asarray(again[0]), out_a)
    with pytest.raises(ValueError, match="stream_dropout: expected a number in \\[0, 1\\), received 1.5"):
        StreamDropout(1.5)
    clone = StreamDropout.from_config(layer.get_config())
    assert clone.rate == rate and clone.seed == 3


@pytest.mark.parametrize("fusion", ["supplement", "concat"])
def test_stream_dropout_network_is_the_plain_network_in_inference_and_zeroes_a_stream_in_training(fusion):
    space = _space(fusion)
    net = TwoStreamSearchBackbone(space, SHAPES, num_classes=3)
    genotype = net.derive_genotype(_alphas(net, seed=4))
    keras.utils.set_random_seed(0)
    model = build_fixed_two_stream(genotype, space, SHAPES, 3, stream_dropout=0.5)
    plain = build_fixed_two_stream(genotype, space, SHAPES, 3)
    assert _copy_by_layer_name(model, plain) == len([layer for layer in plain.layers if layer.weights])
    x = _x(batch=64, seed=6)
    np.testing.assert_allclose(plain(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-6)
    # in training (no classifier dropout in TINY; the layers before the stream dropout see the same batch in both
    # networks, and the fusion mixes within an example only), the logits differ from the plain network's for some
    # examples, those that lost a stream, and not for all
    layer = model.get_layer("stream_dropout")
    assert layer.rate == 0.5
    trained = np.asarray(model(x, training=True))
    reference = np.asarray(plain(x, training=True))
    changed = np.any(np.abs(trained - reference) > 1e-5, axis=1)
    assert 0 < changed.sum() < len(changed)


def test_stream_dropout_needs_two_streams_and_the_trainer_passes_it_for_two_stream_genotypes_only():
    from emodarts_tf.config import TrainConfig
    from emodarts_tf.evaluation.trainer import build_genotype_network, stream_dropout_rate

    net = TwoStreamSearchBackbone(TINY, SHAPES, num_classes=3)
    genotype = net.derive_genotype(_alphas(net))
    with pytest.raises(ValueError, match="stream_dropout: expected 0 with one stream \\(fusion 'frames'\\)"):
        build_fixed_two_stream(genotype.with_fusion("frames"), _space("frames"), SHAPES, 3, stream_dropout=0.3)
    assert stream_dropout_rate(genotype, TrainConfig(stream_dropout=0.3)) == 0.3
    assert stream_dropout_rate(genotype.with_fusion("frames"), TrainConfig(stream_dropout=0.3)) == 0.0
    assert stream_dropout_rate(genotype, TrainConfig()) == 0.0
    with pytest.raises(ValueError, match="train.stream_dropout: expected a number in \\[0, 1\\), received -0.1"):
        stream_dropout_rate(genotype, TrainConfig(stream_dropout=-0.1))
    model = build_genotype_network(genotype, TINY, SHAPES, 3, stream_dropout=0.3, name="emotionnas")
    assert model.get_layer("stream_dropout").rate == 0.3


# ------------------------------------------------------------------------------- late fusion
def test_late_fusion_is_the_log_of_the_mean_class_probabilities():
    rng = np.random.default_rng(1)
    za, zb = (rng.normal(size=(5, 4)) * 3 for _ in range(2))

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    mean = (softmax(za) + softmax(zb)) / 2
    out = np.asarray(LateFusion()([za.astype("float32"), zb.astype("float32")]))
    np.testing.assert_allclose(out, np.log(mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(softmax(out), mean, rtol=1e-5, atol=1e-6)  # its softmax is the mean probability
    # far-apart logits stay finite (log-sum-exp), and one confident stream does not saturate the other away
    big = np.array([[500.0, -500.0, 0.0]], "float32")
    flat = np.zeros((1, 3), "float32")
    np.testing.assert_allclose(softmax(np.asarray(LateFusion()([big, flat]), "float64")),
                               [[2 / 3, 1 / 6, 1 / 6]], rtol=1e-5)
    with pytest.raises(ValueError, match="two or more classifiers"):
        LateFusion()([big])


def test_late_fusion_network_averages_the_streams_alone_and_the_trainer_trains_each_on_its_own_loss():
    from emodarts_tf.config import TrainConfig
    from emodarts_tf.evaluation.trainer import stream_head_weights

    net = TwoStreamSearchBackbone(TINY, SHAPES, num_classes=3)
    genotype = net.derive_genotype(_alphas(net, seed=3))
    late = genotype.with_fusion("late")
    assert late.fusion == "late" and late.cell_kinds == genotype.cell_kinds
    assert Genotype.from_dict(late.to_dict()).to_dict() == late.to_dict()
    space = _space("late", dropout=0.3)
    keras.utils.set_random_seed(0)
    model = build_fixed_two_stream(late, space, SHAPES, 3)
    assert sorted(model.output) == ["aux_frames", "aux_spectrogram", "logits"]
    assert not any(layer.name in ("supplement", "pooled_concat", "stream_dropout") for layer in model.layers)
    x = _x(batch=4, seed=7)
    out = model(x, training=False)
    # each stream's classifier is that stream's network alone, and the logits average their probabilities
    probs = []
    for stream, head in (("spectrogram", "aux_spectrogram"), ("frames", "aux_frames")):
        alone = build_fixed_two_stream(genotype.with_fusion(stream), _space(stream, dropout=0.3), SHAPES, 3)
        assert _copy_by_layer_name(model, alone, renames={"logits": head}) == len(
            [layer for layer in alone.layers if layer.weights])
        logits = np.asarray(alone({stream: x[stream]}, training=False), "float64")
        np.testing.assert_allclose(out[head], logits, rtol=1e-5, atol=1e-6)
        probs.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(out["logits"], np.log((probs[0] + probs[1]) / 2), rtol=1e-5, atol=1e-6)
    # the trainer: each stream's classifier on its own loss, none on the fused logits; stream_heads has no say
    expected = {"logits": 0.0, "aux_spectrogram": 1.0, "aux_frames": 1.0}
    assert stream_head_weights(late, TrainConfig()) == expected
    assert stream_head_weights(late, TrainConfig(stream_heads=0.5)) == expected
    with pytest.raises(ValueError, match="stream_dropout: expected 0 with fusion 'late'"):
        build_fixed_two_stream(late, space, SHAPES, 3, stream_dropout=0.5)
    with pytest.raises(ValueError, match="stream_heads: expected False with fusion 'late'"):
        build_fixed_two_stream(late, space, SHAPES, 3, stream_heads=True)
    # a search has no late fusion
    with pytest.raises(ValueError, match="space.fusion: 'late' is a fusion of the retrained network"):
        TwoStreamSearchBackbone(space, SHAPES, num_classes=3)
