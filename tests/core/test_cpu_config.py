"""``configs/cpu.yaml`` end to end on the (synthetic) demo corpus, as shipped (its search space, speaker
normalisation, alpha budget and recipe), with tiny epochs from ``--set``: search one fold, retrain its genotype,
and score the trained model with ``cli/evaluate.py``."""
from __future__ import annotations

import json

import pytest

from emodarts_tf.config import load_config
from emodarts_tf.data.features import feature_shape


def test_cpu_config_values_are_the_documented_ones():
    config = load_config("cpu")
    assert config.data.normalize == "speaker"
    # 40 log-mel bands, adopted on held-out speakers of nested splits (docs/accuracy.md): the 40 x 47 image
    assert (config.features.kind, config.features.n_mels, config.features.time_pool) == ("logmel", 40, 4)
    assert tuple(feature_shape(config.features)) == (40, 47)
    assert config.search.alpha_budget == pytest.approx(3.0)
    assert config.search.drop_path == 0.0  # measured, not adopted (docs/accuracy.md)
    assert list(config.search.prune) == [5, 3]  # P-DARTS's counts, adopted on validation speakers (docs/accuracy.md)
    assert "lstm_4" not in config.space.seq_ops and "lstm_att_2" in config.space.seq_ops
    assert config.train.weight_decay_mode == "coupled"
    assert config.space.frequency_pooling == "flatten"
    assert config.recipe.swa == pytest.approx(0.5) and config.recipe.ema == 0.0
    assert config.recipe.refit is True  # with the weight average: the final model trains on every training speaker
    assert config.recipe.ensemble is True  # served: the mean of the first model and the refit (docs/accuracy.md)
    # the retrained network twice as wide as the supernet, which keeps the budget width
    assert (config.train.init_channels, config.train.seq_hidden) == (16, 64)
    assert (config.space.init_channels, config.space.seq_hidden) == (8, 32)
    emotionnas = load_config("emotionnas")
    assert emotionnas.space.frequency_pooling == "avg"  # as its results were measured
    # its own image stream; n_mels for --set features.kind=mfcc (a spectrogram does not read it)
    assert (emotionnas.features.kind, emotionnas.features.n_mels) == ("spectrogram", 64)
    assert list(emotionnas.search.prune) == []  # as its results were searched
    # cpu.yaml's recipe, checked for the two-stream network on held-out speakers of nested splits
    assert emotionnas.recipe.swa == pytest.approx(0.5) and emotionnas.recipe.ema == 0.0
    assert emotionnas.recipe.refit is True
    assert emotionnas.recipe.ensemble is True  # inherited from cpu.yaml (the recipe is shared); not checked for two streams
    assert emotionnas.train.init_channels is None and emotionnas.train.seq_hidden is None  # its searched width
    assert emotionnas.train.stream_heads == 0.0  # measured, not adopted (docs/emotionnas.md)
    assert emotionnas.train.stream_dropout == 0.0  # measured, not adopted (docs/emotionnas.md)


@pytest.mark.slow
def test_cpu_config_searches_and_trains_on_demo(tmp_path):
    from emodarts_tf.commands.evaluate import main as evaluate_main
    from emodarts_tf.commands.search import main as search_main
    from emodarts_tf.commands.train import main as train_main

    cache, search, train = tmp_path / "cache", tmp_path / "search", tmp_path / "train"
    common = ["--data", "demo", "--config", "cpu", "--cache", str(cache), "--set", "data.workers=1"]
    # 3 alpha epochs: one per stage of the shipped pruning (after alpha epochs 1 and 2)
    tiny = ["--set", "search.epochs=4", "--set", "search.warmup_epochs=1", "--set", "search.steps_per_epoch=2"]
    assert search_main([*common, *tiny, "--fold", "1", "--out", str(search)]) == 0
    history = json.loads((search / "fold1" / "alpha_history.json").read_text())
    assert [e["alpha_active"] for e in history] == [False, True, True, True]
    assert all(0.0 < e["entropy"][k]["normalized"] <= 1.0 for e in history for k in ("normal", "reduce", "seq"))
    # pruned to 5 candidates per edge after epoch 2, to 3 (none out) after epoch 3
    assert [max(sum(row) for row in e["kept"]["normal"]) for e in history] == [8, 5, 3, 3]
    assert train_main([*common, "--genotype", str(search), "--folds", "1", "--epochs", "2", "--out", str(train)]) == 0
    info = json.loads((train / "fold1" / "model_info.json").read_text())
    assert info["normalize"] == "speaker" and info["recipe"] == json.loads(json.dumps(info["recipe"]))
    metrics = json.loads((train / "fold1" / "metrics.json").read_text())
    assert 0.0 <= metrics["ua"] <= 1.0 and metrics["n"] > 0
    assert metrics["swa"] == {"first_epoch": 2, "epochs_averaged": 1}  # the last round(0.5 x 2) epochs
    assert metrics["refit"]["epochs"] == 2  # the whole schedule again, on training + validation speakers
    assert metrics["refit"]["ensemble"] is True and set(metrics["refit"]["refit_test"]) == {"ua", "wa", "f1"}
    out = tmp_path / "eval"
    assert evaluate_main(["--model", str(train / "fold1"), "--data", "demo", "--cache", str(cache), "--split", "test",
                          "--fold", "1", "--out", str(out)]) == 0  # fmt: skip
    scored = json.loads((out / "metrics.json").read_text())
    # Scoring the model directory again (speaker statistics from the split) reproduces the fold's test figures.
    assert scored["ua"] == pytest.approx(metrics["ua"]) and scored["n"] == metrics["n"]
