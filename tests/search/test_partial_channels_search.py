"""search.partial_channels (PC-DARTS) through the runner and the command: the supernet's CNN edges mix 1/K of their
channels, the alphas move at first and second order, the genotype is derived from them, the two-stream supernet
takes the setting too, and an impossible K is refused before any work."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
from search_helpers import MICRO, check_genotype_of_entry, micro_config


@pytest.mark.parametrize("setting", ["search.order=first", "search.order=second", "search.edge_norm=true"])
def test_search_with_partial_channels(tmp_path, demo_cache, demo_prepared, setting):
    from emodarts_tf.search.runner import build_search_model, run_search

    config = micro_config(demo_cache, "search.epochs=3", "search.warmup_epochs=1", "search.partial_channels=2", setting)
    model = build_search_model(config, demo_prepared.input_shape, len(demo_prepared.classes), steps_per_epoch=1)
    edges = [edge for cell in model.backbone.cnn_cells for edge in cell.edges]
    assert edges and {edge.partial_channels for edge in edges} == {2}
    assert all(edge.mixed_channels * 2 == edge.channels for edge in edges)

    run_search(config, tmp_path / "s", 1, prepared=demo_prepared)
    fold = tmp_path / "s" / "fold1"
    assert json.loads((fold / "search.json").read_text())["config"]["search"]["partial_channels"] == 2
    history = json.loads((fold / "alpha_history.json").read_text())
    first, last = history[0]["weights"], history[-1]["weights"]
    assert any(np.abs(np.asarray(last[k]) - np.asarray(first[k])).max() > 1e-4 for k in ("normal", "reduce"))
    # The genotype is the one the final alphas (and edge weights) derive.
    check_genotype_of_entry(fold, config, history[-1])


def test_two_stream_supernet_takes_partial_channels():
    from emodarts_tf.config import SearchSpaceConfig
    from emodarts_tf.search_space.two_stream import TwoStreamSearchBackbone

    space = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=1, stem_multiplier=1, seq_cells=1, seq_nodes=1,
                              seq_hidden=4, cnn_ops=["none", "skip_connect", "sep_conv_3x3"],
                              seq_ops=["none", "skip_connect", "rnn_1"])
    net = TwoStreamSearchBackbone(space, {"spectrogram": (8, 12, 1), "frames": (10, 6)}, 4, partial_channels=2)
    assert {edge.mixed_channels * 2 == edge.channels for cell in net.cnn_cells for edge in cell.edges} == {True}
    assert TwoStreamSearchBackbone.from_config(net.get_config()).partial_channels == 2
    with pytest.raises(ValueError, match="partial_channels: expected a divisor of every CNN cell's channels"):
        TwoStreamSearchBackbone(space, {"spectrogram": (8, 12, 1), "frames": (10, 6)}, 4, partial_channels=4)
    frames_only = dataclasses.replace(space, fusion="frames")
    with pytest.raises(ValueError, match="partial_channels: expected 1 without an image stream"):
        TwoStreamSearchBackbone(frames_only, {"frames": (10, 6)}, 4, partial_channels=2)
    # A forward pass and the gradient of every architecture weight that reaches the image stream.
    weights = {k: tf.Variable(tf.nn.softmax(tf.zeros(s))) for k, s in net.alpha_shapes().items()}
    x = {"spectrogram": np.ones((2, 8, 12, 1), "float32"), "frames": np.ones((2, 10, 6), "float32")}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(x, {k: tf.convert_to_tensor(v) for k, v in weights.items()}, training=True) ** 2)
    grads = tape.gradient(loss, list(weights.values()))
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)


def test_config_checks(demo_cache):
    from emodarts_tf.search.runner import check_search_config

    check_search_config(micro_config(demo_cache, "search.partial_channels=2").search)
    with pytest.raises(ValueError, match="search.partial_channels: expected 1 with search.select perturbation"):
        check_search_config(micro_config(demo_cache, "search.partial_channels=2", "search.select=perturbation").search)
    with pytest.raises(ValueError, match="search.partial_channels: expected an integer >= 1"):
        check_search_config(micro_config(demo_cache, "search.partial_channels=0").search)


def test_frames_only_two_stream_search_refuses_partial_channels(demo_cache):
    from emodarts_tf.search.runner import check_search_partial_channels

    frames_only = ("search.method=emotionnas", "space.fusion=frames")
    check_search_partial_channels(micro_config(demo_cache, *frames_only))
    for k in (2, 3):  # named as the missing image stream, not as a divisor of channels that do not exist
        with pytest.raises(ValueError, match="search.partial_channels: expected 1 without an image stream"):
            check_search_partial_channels(micro_config(demo_cache, *frames_only, f"search.partial_channels={k}"))


def test_perturbation_selection_refuses_partial_channels(demo_cache, demo_prepared):
    from emodarts_tf.search.perturbation_selection import select_by_perturbation
    from emodarts_tf.search.runner import build_search_model

    config = micro_config(demo_cache, "search.partial_channels=2")
    model = build_search_model(config, demo_prepared.input_shape, len(demo_prepared.classes), steps_per_epoch=1)
    with pytest.raises(ValueError, match="select_by_perturbation: expected a supernet without partial channel"):
        select_by_perturbation(model, None)


def test_run_search_names_the_setting(tmp_path, demo_cache):
    from emodarts_tf.search.runner import run_search

    with pytest.raises(ValueError, match=r"search.partial_channels: expected a divisor .* received 3"):
        run_search(micro_config(demo_cache, "search.partial_channels=3"), tmp_path / "s", 1)
    assert not (tmp_path / "s").exists()


def test_command_refuses_a_k_that_does_not_divide_the_channels(tmp_path, demo_cache, caplog):
    from emodarts_tf.commands.search import main

    args = ["--data", "demo", "--cache", str(demo_cache), "--out", str(tmp_path / "x"), "--epochs", "1"]
    for item in MICRO:
        args += ["--set", item]
    assert main([*args, "--set", "search.partial_channels=3"]) == 2
    assert "search.partial_channels: expected a divisor of every CNN cell's channels" in caplog.text
    assert main([*args, "--set", "search.partial_channels=0"]) == 2
    assert not (tmp_path / "x").exists()
