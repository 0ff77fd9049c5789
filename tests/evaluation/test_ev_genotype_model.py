"""Genotype -> retrained network: several genotypes (all-skip included), bad genotypes (all-none: an
output independent of the input), and the model directory round trip with the real emoDARTS layers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from emodarts_tf.config import SearchSpaceConfig, TrainConfig
from emodarts_tf.search_space.genotype import Genotype

SHAPE = (16, 31, 1)


def _cell(nodes: int, op: str) -> list:
    return [[[op, 0], [op, i + 1]] for i in range(nodes)]


GENOTYPES = {
    "mixed": {
        "normal": [[["sep_conv_3x3", 0], ["skip_connect", 1]], [["dil_conv_3x3", 0], ["avg_pool_3x3", 2]]],
        "reduce": [[["max_pool_3x3", 0], ["sep_conv_5x5", 1]], [["skip_connect", 2], ["dil_conv_5x5", 1]]],
        "seq": [[["lstm_2", 0], ["rnn_1", 1]], [["lstm_att_1", 2], ["skip_connect", 0]]],
    },
    "all_skip": {"normal": _cell(2, "skip_connect"), "reduce": _cell(2, "skip_connect"), "seq": _cell(2, "skip_connect")},
    "attention_rnn": {
        "normal": [[["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]],
        "reduce": [[["avg_pool_3x3", 0], ["max_pool_3x3", 1]]],
        "seq": [[["rnn_att_2", 0], ["lstm_att_1", 1]], [["rnn_2", 2], ["none", 1]]],
    },
}
SPACE = SearchSpaceConfig(init_channels=2, cnn_cells=3, stem_multiplier=1, seq_cells=1, seq_hidden=8)


@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_genotype_builds_a_working_network(name):
    import keras

    from emodarts_tf.search_space.network import build_fixed_network

    genotype = Genotype.from_dict(GENOTYPES[name])
    model = build_fixed_network(genotype, SPACE, SHAPE, 4)
    assert model.inputs[0].name == "mfcc"
    x = np.random.default_rng(0).normal(size=(3, *SHAPE)).astype("float32")
    logits = np.asarray(model(x, training=False))
    assert logits.shape == (3, 4) and np.all(np.isfinite(logits))
    assert not np.allclose(logits[0], logits[1])  # the logits depend on the input
    # Gradients of the loss are finite; the classifier always gets one (eager, no graph to trace).
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(np.array([0, 1, 2]), out)
    grads = tape.gradient(loss, model.trainable_variables)
    named = {v.path: g for v, g in zip(model.trainable_variables, grads)}
    assert named["logits/kernel"] is not None
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads if g is not None)
    assert named["stem_conv/kernel"] is not None  # the CNN part is trained too


def test_train_overrides_make_a_larger_network():
    from emodarts_tf.search_space.network import apply_train_overrides, build_fixed_network

    genotype = Genotype.from_dict(GENOTYPES["mixed"])
    small = build_fixed_network(genotype, SPACE, SHAPE, 4)
    space = apply_train_overrides(SPACE, TrainConfig(init_channels=4, cnn_cells=4))
    large = build_fixed_network(genotype, space, SHAPE, 4)
    assert large.count_params() > small.count_params()
    assert sum("cnn_cell" in layer.name for layer in large.layers) == 4


def test_aux_head_and_drop_path_outputs():
    from emodarts_tf.evaluation.model_dir import inference_model
    from emodarts_tf.search_space.network import build_fixed_network

    model = build_fixed_network(Genotype.from_dict(GENOTYPES["mixed"]), SPACE, SHAPE, 4, drop_path=0.2, aux=True)
    assert sorted(model.output) == ["aux_logits", "logits"]
    infer = inference_model(model)
    x = np.zeros((2, *SHAPE), "float32")
    np.testing.assert_allclose(np.asarray(infer(x)), np.asarray(model(x)["logits"]), atol=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda g: g["normal"][0].__setitem__(0, ["conv_7x7", 0]), r"normal node 0: unknown op 'conv_7x7'"),
        (lambda g: g["reduce"][1].__setitem__(1, ["max_pool_3x3", 4]), r"reduce node 1: input index 4 out of range"),
        (lambda g: g["seq"][0].__setitem__(0, ["sep_conv_3x3", 0]), r"seq node 0: unknown op 'sep_conv_3x3'"),
        (lambda g: g["normal"][0].__setitem__(0, ["skip_connect", -1]), r"normal node 0: input index -1"),
        (lambda g: g.pop("seq"), r"missing cell 'seq'"),
        # every cell all-`none`: the logits would be the classifier's bias, whatever the input
        (lambda g: g.update(normal=_cell(2, "none"), reduce=_cell(2, "none"), seq=_cell(2, "none")),
         r"cell 'normal': its output does not depend on the cell inputs.*node 0 \(state 2\) has only `none` edges"),
        (lambda g: g["seq"].__setitem__(1, [["none", 2], ["none", 1]]) or g.update(seq_concat=[3]),
         r"cell 'seq': its output does not depend on the cell inputs.*node 1 \(state 3\)"),
    ],
)
def test_bad_genotype_is_a_clear_error(tmp_path, change, message):
    from emodarts_tf.data.records import Fold
    from emodarts_tf.evaluation.genotype_source import genotypes_for_folds

    data = json.loads(json.dumps(GENOTYPES["mixed"]))
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    fold = Fold(index=1, name="f1", train_speakers=["a"], test_speakers=["b"])
    with pytest.raises(ValueError, match=message) as info:
        genotypes_for_folds(path, [fold], "csv", "loso")
    assert str(path) in str(info.value)


def test_model_dir_round_trip_with_emodarts_layers(tmp_path):
    from emodarts_tf.config import FeatureConfig
    from emodarts_tf.evaluation.model_dir import load_model_dir, save_model_dir
    from emodarts_tf.search_space.network import build_fixed_network

    from dataclasses import asdict

    model = build_fixed_network(Genotype.from_dict(GENOTYPES["mixed"]), SPACE, SHAPE, 4, aux=True)
    features = FeatureConfig(sample_rate=16000, duration_s=1.0, n_mfcc=16, n_fft=512, hop_length=256, n_mels=32, time_pool=2)
    mean = np.full((16, 1, 1), 2.0, np.float32)
    std = np.full((16, 1, 1), 3.0, np.float32)
    save_model_dir(tmp_path / "m", model, {"classes": list("abcd"), "features": asdict(features), "input_shape": list(SHAPE)},
                   mean, std)  # fmt: skip
    trained = load_model_dir(tmp_path / "m")
    raw = np.random.default_rng(1).normal(size=(2, *SHAPE)).astype("float32") * 3 + 2
    expected = np.asarray(model((raw - mean) / std, training=False)["logits"])
    np.testing.assert_allclose(trained.logits(raw), expected, atol=1e-5)
    assert trained.feature_config == features
    assert "emodarts_tf.search_space.network" in trained.info["modules"]
