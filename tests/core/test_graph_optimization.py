"""search.graph_optimization: Grappler switched for a block, the same values either way (up to rounding), and
a setting a resumed search may change."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.config import SearchSpaceConfig, load_config
from emodarts_tf.utils.runtime import graph_optimization

SHAPE = (12, 9, 1)
SPACE = SearchSpaceConfig(init_channels=2, cnn_cells=2, cnn_nodes=2, stem_multiplier=2, seq_cells=1, seq_nodes=2,
                          seq_hidden=6, cnn_ops=["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"],
                          seq_ops=["none", "skip_connect", "lstm_1", "rnn_att_1"], frequency_pooling="flatten")


def _disabled() -> bool:
    return bool(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False))


def test_the_block_switches_grappler_and_restores_it_even_after_an_error():
    assert not _disabled()
    with graph_optimization(False) as enabled:
        assert enabled is False and _disabled()
        with graph_optimization(True):
            assert not _disabled()
        assert _disabled()
    assert not _disabled()
    with pytest.raises(RuntimeError, match="boom"):
        with graph_optimization(False):
            raise RuntimeError("boom")
    assert not _disabled()


def _loss_and_gradients(enabled: bool):
    """Loss and gradients (weights and alphas) of one supernet step, traced and run inside the block."""
    import keras

    from emodarts_tf.search_space.network import SearchBackbone

    keras.utils.set_random_seed(0)
    net = SearchBackbone(SPACE, SHAPE, num_classes=3)
    x = np.random.default_rng(0).normal(size=(4, *SHAPE)).astype("float32")
    y = np.array([0, 1, 2, 1])
    alphas = {k: tf.Variable(tf.random.stateless_normal(s, seed=(1, i)) * 1e-1)
              for i, (k, s) in enumerate(net.alpha_shapes().items())}
    net(x, {k: tf.nn.softmax(a) for k, a in alphas.items()}, training=True)  # builds the weights
    variables = net.trainable_variables + list(alphas.values())

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = net(x, {k: tf.nn.softmax(a) for k, a in alphas.items()}, training=True)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return loss, tape.gradient(loss, variables)

    with graph_optimization(enabled):
        loss, grads = step()
    return float(loss), [None if g is None else g.numpy() for g in grads]


def test_a_supernet_step_computes_the_same_loss_and_gradients_with_and_without_grappler():
    loss_on, grads_on = _loss_and_gradients(True)
    loss_off, grads_off = _loss_and_gradients(False)
    assert np.isfinite(loss_on)
    np.testing.assert_allclose(loss_off, loss_on, rtol=1e-5)
    assert [g is None for g in grads_off] == [g is None for g in grads_on]
    reached = [(on, off) for on, off in zip(grads_on, grads_off) if on is not None]
    assert len(reached) > 0.9 * len(grads_on)  # a real step, not a few heads
    scale = max(float(np.abs(on).max()) for on, _ in reached)
    for on, off in reached:
        np.testing.assert_allclose(off, on, rtol=1e-4, atol=1e-5 * scale)


def test_the_setting_is_not_part_of_what_a_resumed_search_must_match():
    from emodarts_tf.search.runner import config_differences

    config = load_config("cpu")
    assert config.search.graph_optimization is True  # the default, kept by the shipped configs
    other = dataclasses.replace(config, search=dataclasses.replace(config.search, graph_optimization=False))
    assert config_differences(config.to_dict(), other.to_dict()) == []
    # what a search computes still counts
    wider = dataclasses.replace(config, search=dataclasses.replace(config.search, batch_size=16))
    assert config_differences(config.to_dict(), wider.to_dict()) == ["search.batch_size"]


def test_a_setting_added_since_a_search_started_counts_as_its_default():
    from emodarts_tf.search.runner import config_differences

    config = load_config("cpu")
    old = config.to_dict()
    del old["data"]["search_split"]  # a search.json written before the setting existed
    assert config_differences(old, config.to_dict()) == []
    changed = dataclasses.replace(config, data=dataclasses.replace(config.data, search_split="speaker"))
    assert config_differences(old, changed.to_dict()) == ["data.search_split"]
