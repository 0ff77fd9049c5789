"""The folds of one search process share one supernet (search/reuse.py): a later fold, handed the first
fold's supernet restored to its initial state, searches exactly as a fresh process does."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from search_helpers import micro_config

from emodarts_tf.search_space.genotype import Genotype


def _history(fold_dir):
    return json.loads((fold_dir / "alpha_history.json").read_text())


def test_a_reused_supernet_searches_a_later_fold_as_a_fresh_one(tmp_path, demo_cache, demo_prepared, caplog):
    from emodarts_tf.search.runner import run_search, run_search_folds

    config = micro_config(demo_cache, "search.epochs=3", "search.warmup_epochs=1")
    with caplog.at_level(logging.INFO, logger="emodarts_tf.search.reuse"):
        run_search_folds(config, tmp_path / "shared", [1, 2], prepared=demo_prepared)
    assert sum("reusing the supernet" in r.getMessage() for r in caplog.records) == 1
    fresh = run_search(config, tmp_path / "fresh", 2, prepared=demo_prepared)

    shared, alone = _history(tmp_path / "shared" / "fold2"), _history(tmp_path / "fresh" / "fold2")
    assert [e["epoch"] for e in shared] == [e["epoch"] for e in alone] == [1, 2, 3]
    for a, b in zip(shared, alone):
        for kind in ("normal", "reduce", "seq"):
            np.testing.assert_allclose(a["weights"][kind], b["weights"][kind], rtol=1e-6, atol=1e-7)
        for key in ("loss", "alpha_loss", "val_loss", "val_ua", "lr"):
            np.testing.assert_allclose(a["metrics"][key], b["metrics"][key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert Genotype.load(tmp_path / "shared" / "fold2" / "genotype.json").to_dict() == \
        Genotype.load(tmp_path / "fresh" / "fold2" / "genotype.json").to_dict()  # fmt: skip
    assert fresh["final"] == json.loads((tmp_path / "shared" / "fold2" / "search.json").read_text())["final"]


def test_set_search_length_gives_a_kept_supernet_the_schedule_of_a_fresh_one(demo_cache):
    from emodarts_tf.search.model import inner_optimizer
    from emodarts_tf.search.runner import alpha_learning_rate, build_search_model, set_search_length

    config = micro_config(demo_cache, "search.epochs=4", "search.warmup_epochs=1", "search.alpha_budget=3.0")
    shape, classes = (13, 16, 1), 4
    kept = build_search_model(config, shape, classes, steps_per_epoch=3)
    set_search_length(kept, config.search, 7)
    fresh = build_search_model(config, shape, classes, steps_per_epoch=7)
    w_kept, w_fresh = inner_optimizer(kept.w_optimizer), inner_optimizer(fresh.w_optimizer)
    for step in (0, 5, 13, 27, 28, 40):  # along the schedule, at its end (4 x 7 = 28) and past it
        np.testing.assert_allclose(float(w_kept._learning_rate(step)), float(w_fresh._learning_rate(step)),
                                   rtol=1e-7)  # fmt: skip
    # The closed form of the cosine: lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2.
    s = config.search
    t, total = 13, 4 * 7
    expected = s.w_lr_min + (s.w_lr - s.w_lr_min) * (1 + np.cos(np.pi * t / total)) / 2
    np.testing.assert_allclose(float(w_kept._learning_rate(t)), expected, rtol=1e-5)
    assert float(inner_optimizer(kept.a_optimizer).learning_rate) == pytest.approx(3.0 / (3 * 7), rel=1e-6)
    assert alpha_learning_rate(s, 7) == pytest.approx(3.0 / 21)


def test_another_config_builds_a_new_supernet(demo_cache):
    from emodarts_tf.search.reuse import SupernetReuse, supernet_key
    from emodarts_tf.search.runner import build_search_model

    reuse = SupernetReuse()
    config = micro_config(demo_cache)
    key = supernet_key(config, (13, 16, 1), 4)
    first = reuse.supernet(key, lambda: build_search_model(config, (13, 16, 1), 4, 2))
    initial = [np.array(v) for v in first.arch_variables]
    for v in first.arch_variables:
        v.assign(v + 1.0)
    again = reuse.supernet(key, lambda: pytest.fail("the kept supernet should be handed out"))
    assert again is first and reuse.reused == 1
    for v, value in zip(again.arch_variables, initial):
        np.testing.assert_array_equal(np.array(v), value)
    other = micro_config(demo_cache, "space.seq_hidden=4")
    assert supernet_key(other, (13, 16, 1), 4) != key and supernet_key(config, (13, 16, 1), 3) != key
    built = reuse.supernet(supernet_key(other, (13, 16, 1), 4), lambda: build_search_model(other, (13, 16, 1), 4, 2))
    assert built is not first


def test_search_cosine_decay_equals_keras_cosine_decay_and_round_trips():
    import keras

    from emodarts_tf.search.reuse import SearchCosineDecay

    ours = SearchCosineDecay(0.025, decay_steps=48, alpha=0.04)
    theirs = keras.optimizers.schedules.CosineDecay(0.025, decay_steps=48, alpha=0.04)
    for step in (0, 1, 17, 48, 60):
        assert float(ours(step)) == float(theirs(step))
    ours.set_decay_steps(96)
    longer = keras.optimizers.schedules.CosineDecay(0.025, decay_steps=96, alpha=0.04)
    assert float(ours(50)) == float(longer(50))
    again = SearchCosineDecay.from_config(ours.get_config())
    assert float(again(50)) == float(ours(50))
    with pytest.raises(ValueError, match="decay_steps.*0"):
        ours.set_decay_steps(0)
