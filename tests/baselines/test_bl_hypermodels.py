"""Every baseline family builds and trains one step at its smallest setting; spaces are checked."""
from __future__ import annotations

import keras
import keras_tuner as kt
import numpy as np
import pytest

from emodarts_tf.baselines.hypermodels import (
    FAMILIES,
    HP_NAMES,
    default_values,
    fixed_hyperparameters,
    load_space,
    make_hypermodel,
    parse_space,
    smallest_values,
)
from emodarts_tf.baselines.layers import AttentionPooling
from emodarts_tf.search_space.network import FrequencyPooling
from emodarts_tf.baselines.objective import ValidationUA
from emodarts_tf.evaluation.metrics import classification_metrics

from baseline_helpers import SHAPE, StandInFoldData


@pytest.mark.parametrize("family", FAMILIES)
def test_family_builds_and_fits_one_step_at_smallest_setting(family):
    data = StandInFoldData()
    hypermodel = make_hypermodel(family, SHAPE, 4)
    hp = fixed_hyperparameters(smallest_values(hypermodel.space))
    model = hypermodel.build(hp)
    assert model.inputs[0].name == "mfcc" and tuple(model.inputs[0].shape[1:]) == SHAPE
    assert model.output.shape[-1] == 4 and model.layers[-1].name == "logits"
    history = hypermodel.fit(hp, model, data.train(8), validation_data=data.val(8), epochs=1, steps_per_epoch=1, verbose=0)
    for key in ("loss", "val_ua", "val_wa", "val_f1", "val_loss"):
        assert np.isfinite(history.history[key][0]), key
    # every hyperparameter of the space was declared by build(), with the pinned smallest value
    assert set(hp.values) == set(HP_NAMES[family])


def test_batch_norm_statistics_track_the_data_within_a_small_corpus():
    """Regression: Keras' default BN momentum (0.99) left the moving variance 7-14x off after ~120 steps
    on EmoDB, so inference-mode models predicted one class. After 40 steps on data of variance 4 the
    moving variance must be close to the batch variance (momentum 0.9: 0.9**40 = 1.5% of the start)."""
    from emodarts_tf.search_space.operations import BN_MOMENTUM

    for family in ("cnn", "cnn_lstm", "cnn_lstm_att"):
        hm = make_hypermodel(family, SHAPE, 4)
        model = hm.network(fixed_hyperparameters(smallest_values(hm.space)))
        bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert bns and all(layer.momentum == BN_MOMENTUM for layer in bns), family
    bn = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)
    x = np.random.default_rng(0).normal(0.0, 2.0, size=(64, 8)).astype("float32")
    for _ in range(40):
        bn(x, training=True)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), x.var(axis=0), rtol=0.05)


def test_paper_defaults_in_space_file():
    for family in ("lstm", "cnn_lstm", "cnn_lstm_att"):
        values = default_values(load_space(family))
        assert values["lstm_units"] == 128 and values["bidirectional"] is True  # the paper code's CNN-BiLSTM
        assert values["learning_rate"] == pytest.approx(1e-3)  # Adam 1e-3


def test_cnn_lstm_keeps_time_axis_and_lstm_reads_frames():
    hm = make_hypermodel("cnn_lstm", (16, 12, 1), 4)
    values = {**smallest_values(hm.space), "conv_blocks": 2, "time_pool": 1}
    model = hm.network(fixed_hyperparameters(values))
    # all 12 frames kept; channels: the smallest filters (16), doubled by the second block
    assert tuple(model.get_layer("freq_pool").output.shape) == (None, 12, 32)
    lstm = make_hypermodel("lstm", (16, 12, 1), 4).network(fixed_hyperparameters(smallest_values(load_space("lstm"))))
    assert tuple(lstm.get_layer("time_major").output.shape) == (None, 12, 16)  # (frames, coefficients)


def test_attention_model_round_trips_through_keras_file(tmp_path):
    hm = make_hypermodel("cnn_lstm_att", SHAPE, 4)
    model = hm.network(fixed_hyperparameters(smallest_values(hm.space)))
    x = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_attention_pooling_weights_sum_to_one():
    layer = AttentionPooling(3)
    x = np.ones((2, 5, 4), "float32") * np.arange(4, dtype="float32")
    # identical time steps: any convex combination of them is the step itself
    np.testing.assert_allclose(layer(x), x[:, 0, :], atol=1e-6)
    assert AttentionPooling.from_config(layer.get_config()).units == 3
    with pytest.raises(ValueError, match="units"):
        AttentionPooling(0)
    with pytest.raises(ValueError, match="mode"):
        FrequencyPooling("median")


def test_validation_ua_is_over_the_whole_set():
    # A model that always predicts class 0: UA = 1/4 on balanced labels, WA = share of class 0.
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant([5, 0, 0, 0]))(inputs))
    import tensorflow as tf

    y = np.array([0, 0, 0, 1, 2, 3, 1, 2], np.int32)
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((8, 2), "float32"), y)).batch(3)
    callback = ValidationUA(ds, 4)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    expected = classification_metrics(y, np.zeros(8, int), 4)
    assert logs["val_ua"] == pytest.approx(expected["ua"]) == pytest.approx(0.25)
    assert logs["val_wa"] == pytest.approx(3 / 8)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"lstm_layers": 1}, "missing"),
        ({**{n: 1 for n in HP_NAMES["lstm"]}, "filters": 8}, "unknown"),
        ({**{n: 1 for n in HP_NAMES["lstm"]}, "lstm_units": {"min": 8, "max": 4}}, "min <= max"),
        ({**{n: 1 for n in HP_NAMES["lstm"]}, "lstm_units": {"choices": [4, 8], "default": 16}}, "not among"),
        ({**{n: 1 for n in HP_NAMES["lstm"]}, "dropout": {"min": 0.0, "max": 0.5, "default": 0.9}}, "outside"),
    ],
)
def test_bad_space_entries_are_named(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_space("lstm", raw)


def test_unknown_family_and_bad_input_shape():
    with pytest.raises(ValueError, match="family"):
        make_hypermodel("transformer", SHAPE, 4)
    with pytest.raises(ValueError, match="input_shape"):
        make_hypermodel("cnn", (16, 16), 4)


def test_space_entries_map_to_tuner_hyperparameters():
    hm = make_hypermodel("cnn", SHAPE, 4)
    hp = kt.HyperParameters()
    hm.build(hp)
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds["conv_blocks"] == "Int" and kinds["filters"] == "Choice" and kinds["dropout"] == "Float"
    assert hp.values["filters"] == 32  # the file's default
