"""The search run on the (synthetic) demo corpus with a micro search space: outputs, speakers, resume, CLI.

The micro space keeps both cell kinds (3 CNN cells: normal, reduce, reduce; one SeqNN cell) with one
node each and a few ops, so that a model builds and traces in seconds on 2 cores.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
import yaml
from search_helpers import MICRO, KillAfter, Killed, micro_config

from emodarts_tf.config import load_config
from emodarts_tf.search_space.genotype import Genotype



def _config(cache, *overrides):
    return micro_config(cache, *overrides)


def _checkpoint_tensors(fold_dir):
    path = tf.train.latest_checkpoint(str(fold_dir / "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    names = [n for n, _ in tf.train.list_variables(path) if n.startswith(("model/", "w_optimizer/", "a_optimizer/", "random_generators/"))]
    return {n: reader.get_tensor(n) for n in names}


def test_resume_reproduces_an_uninterrupted_run(tmp_path, demo_cache, demo_prepared):
    from emodarts_tf.search.runner import run_search

    config = _config(demo_cache, "search.epochs=3", "search.warmup_epochs=1")
    full = run_search(config, tmp_path / "full", 1, prepared=demo_prepared)

    with pytest.raises(Killed):
        run_search(config, tmp_path / "killed", 1, prepared=demo_prepared, callbacks=[KillAfter(2)])
    killed_dir = tmp_path / "killed" / "fold1"
    assert len(json.loads((killed_dir / "alpha_history.json").read_text())) == 2
    # Without --resume the existing checkpoint is not overwritten.
    with pytest.raises(ValueError, match="resume"):
        run_search(config, tmp_path / "killed", 1, prepared=demo_prepared)
    # A resume with another search space is refused.
    with pytest.raises(ValueError, match="space.cnn_nodes"):
        run_search(_config(demo_cache, "search.epochs=3", "search.warmup_epochs=1", "space.cnn_nodes=2"),
                   tmp_path / "killed", 1, resume=True, prepared=demo_prepared)  # fmt: skip
    resumed = run_search(config, tmp_path / "killed", 1, resume=True, prepared=demo_prepared)

    a, b = _checkpoint_tensors(tmp_path / "full" / "fold1"), _checkpoint_tensors(killed_dir)
    assert a.keys() == b.keys() and any("alpha_normal" in n for n in a)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    history_a = json.loads((tmp_path / "full" / "fold1" / "alpha_history.json").read_text())
    history_b = json.loads((killed_dir / "alpha_history.json").read_text())
    assert [e["epoch"] for e in history_a] == [e["epoch"] for e in history_b] == [1, 2, 3]
    assert [e["alpha_active"] for e in history_b] == [False, True, True]
    for ea, eb in zip(history_a, history_b):
        for kind in ("normal", "reduce", "seq"):
            np.testing.assert_allclose(ea["weights"][kind], eb["weights"][kind], atol=1e-5)
        # Same validation loss: the batch-norm statistics of every cell were checkpointed too.
        for key in ("loss", "alpha_loss", "val_loss", "val_ua"):
            np.testing.assert_allclose(ea["metrics"][key], eb["metrics"][key], rtol=1e-5, err_msg=key)
    assert full["best"] == resumed["best"] and full["final"] == resumed["final"]
    assert resumed["epochs_done"] == 3
    assert Genotype.load(tmp_path / "full" / "fold1" / "genotype.json").normal == \
        Genotype.load(killed_dir / "genotype.json").normal  # fmt: skip
    # The warm-up epoch left the alphas at their initial values.
    first = np.asarray(history_a[0]["weights"]["normal"])
    np.testing.assert_allclose(first.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(first - first.mean(axis=1, keepdims=True)).max() < 1e-3


def test_resume_with_drop_path_draws_the_same_masks(tmp_path, demo_cache, demo_prepared):
    """With search.drop_path the random generators' states are checkpointed: a search killed after epoch 2 and
    resumed ends where an uninterrupted one does, and the schedule ran (the last epoch's rate, 0.5 x 2 / 3)."""
    from emodarts_tf.search.runner import run_search

    config = _config(demo_cache, "search.epochs=3", "search.warmup_epochs=1", "search.drop_path=0.5")
    full = run_search(config, tmp_path / "full", 1, prepared=demo_prepared)
    with pytest.raises(Killed):
        run_search(config, tmp_path / "killed", 1, prepared=demo_prepared, callbacks=[KillAfter(2)])
    resumed = run_search(config, tmp_path / "killed", 1, resume=True, prepared=demo_prepared)
    a, b = _checkpoint_tensors(tmp_path / "full" / "fold1"), _checkpoint_tensors(tmp_path / "killed" / "fold1")
    assert a.keys() == b.keys() and any(n.startswith("random_generators/") for n in a)
    rates = [v for n, v in a.items() if "drop_path_rate" in n]
    assert rates and all(float(r) == pytest.approx(0.5 * 2 / 3) for r in rates)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert full["final"] == resumed["final"]


def test_cli_demo_two_folds(tmp_path, demo_cache, demo_prepared):
    from emodarts_tf.commands.search import main
    from emodarts_tf.evaluation.genotype_source import leak_reason

    from emodarts_tf.utils.memory import custom_gradient_names

    out = tmp_path / "search"
    args = ["--data", "demo", "--cache", str(demo_cache), "--out", str(out), "--fold", "1,2", "--epochs", "1",
            "--set", "search.warmup_epochs=0", "--set", "search.steps_per_epoch=1",
            "--set", "search.graph_optimization=false"]  # fmt: skip
    for item in MICRO:
        args += ["--set", item]
    registered = custom_gradient_names()
    assert main(args) == 0
    # Each fold's traced graphs are released when it ends (TensorFlow's gradient registry would keep them
    # alive), and Grappler is back on for whatever runs next in the process.
    assert custom_gradient_names() == registered
    assert not tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)

    index = json.loads((out / "genotypes.json").read_text())
    assert sorted(index) == ["1", "2"]
    assert (out / "data" / "folds.json").is_file()
    for k in (1, 2):
        fold_dir = out / f"fold{k}"
        for name in ("genotype.json", "genotype_best.json", "alpha_history.json", "search.json", "config.yaml",
                     "genotypes/epoch_001.json", "cells/normal.png", "cells/reduce.png", "cells/seq.png",
                     "cells/final/normal.png"):  # fmt: skip
            assert (fold_dir / name).is_file(), name
        assert tf.train.latest_checkpoint(str(fold_dir / "checkpoints"))
        assert list((fold_dir / "tensorboard").rglob("events.out.tfevents.*"))
        info = json.loads((fold_dir / "search.json").read_text())
        fold = demo_prepared.fold(k)
        assert info["test_speakers"] == sorted(fold.test_speakers)
        assert not set(info["test_speakers"]) & set(info["train_speakers"] + info["val_speakers"])
        assert set(info["val_speakers"]) <= set(info["train_speakers"])
        split = info["search_split"]
        assert split["mode"] == "utterance"
        searched = set(info["train_speakers"]) - set(info["val_speakers"])
        assert set(split["weights_speakers"]) | set(split["alphas_speakers"]) == searched
        assert info["epochs_done"] == 1 and info["peak_rss_mb"] > 0 and info["seconds"] > 0
        assert info["config"]["search"]["epochs"] == 1
        genotype = Genotype.load(fold_dir / "genotype_best.json")
        assert Genotype.from_dict(index[str(k)]).to_dict() == genotype.to_dict()
        meta = genotype.meta
        assert meta["fold"] == k and meta["corpus"] == "demo" and meta["epoch"] == 1
        assert meta["test_speakers"] == info["test_speakers"] and 0.0 <= meta["val_ua"] <= 1.0
        # The consumer (cli/train.py) accepts it for its own fold and refuses it elsewhere.
        other = demo_prepared.fold(3 - k)
        assert leak_reason(genotype, fold, "demo", demo_prepared.protocol) is None
        assert leak_reason(genotype, other, "demo", demo_prepared.protocol)
    saved = yaml.safe_load((out / "fold1" / "config.yaml").read_text())
    assert saved["space"]["cnn_cells"] == 3

    # --resume on finished folds rewrites the outputs without training again.
    assert main([*args, "--resume", "--fold", "1"]) == 0
    assert json.loads((out / "fold1" / "search.json").read_text())["epochs_done"] == 1
    # Bad values come back as exit status 2 with a message.
    assert main(["--data", "demo", "--cache", str(demo_cache), "--out", str(tmp_path / "x"),
                 "--set", "search.order=third"]) == 2  # fmt: skip


def test_eager_updates_auto_follows_the_supernet_size():
    """search.eager_updates: an explicit setting wins; None (auto) is on from 10 M weights."""
    from types import SimpleNamespace

    from emodarts_tf.search.runner import EAGER_UPDATES_MIN_WEIGHTS, resolve_eager_updates

    def model(*shapes):
        return SimpleNamespace(weight_variables=[SimpleNamespace(shape=s) for s in shapes])

    small = model((3, 3, 4, 1), (4,))
    at_threshold = model((EAGER_UPDATES_MIN_WEIGHTS // 2, 2))
    below = model((EAGER_UPDATES_MIN_WEIGHTS - 1,))
    assert resolve_eager_updates(None, small) is False
    assert resolve_eager_updates(None, below) is False
    assert resolve_eager_updates(None, at_threshold) is True
    assert resolve_eager_updates(True, small) is True
    assert resolve_eager_updates(False, at_threshold) is False
    assert load_config("paper").search.eager_updates is None


def test_alpha_budget_sets_the_alpha_learning_rate():
    from emodarts_tf.config import SearchConfig
    from emodarts_tf.search.runner import alpha_learning_rate, check_search_config

    assert alpha_learning_rate(SearchConfig(alpha_lr=3e-4), 11) == pytest.approx(3e-4)
    # 20 epochs, 5 of warm-up: 15 x 11 = 165 alpha steps share the budget of 3.
    s = SearchConfig(epochs=20, warmup_epochs=5, alpha_budget=3.0)
    assert alpha_learning_rate(s, 11) == pytest.approx(3.0 / 165)
    with pytest.raises(ValueError, match="search.alpha_budget"):
        check_search_config(SearchConfig(alpha_budget=0.0))
