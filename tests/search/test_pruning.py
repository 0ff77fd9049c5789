"""Progressive pruning (search.prune): the schedule, the pruning rule against a hand computation, the masked
mixture against the plain softmax of the kept alphas, the genotype, the runner (the pruned candidates stay out,
resume)."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from search_helpers import CNN_OPS, SEQ_OPS, KillAfter, Killed, TinyBackbone, micro_config

from emodarts_tf.search.model import SearchModel
from emodarts_tf.search.pruning import check_prune, masked_alphas, prune_mask, prune_schedule
from emodarts_tf.search_space.genotype import derive_cell
from emodarts_tf.search_space.primitives import resolve_ops


def test_schedule_splits_the_alpha_epochs_into_equal_stages():
    # The shipped CPU budget: 16 epochs, 4 of warm-up, 12 alpha epochs in 3 stages of 4.
    assert prune_schedule([5, 3], 16, 4) == {8: 5, 12: 3}
    assert prune_schedule([3], 10, 0) == {5: 3}
    assert prune_schedule([4, 3, 2], 4, 0) == {1: 4, 2: 3, 3: 2}
    assert prune_schedule([], 16, 4) == {}


@pytest.mark.parametrize("keep", [[3, 3], [2, 3], [1], [5, 0], "5,3", [2.5], [True, 2]])
def test_bad_prune_values_are_refused(keep):
    with pytest.raises(ValueError, match="search.prune"):
        check_prune(keep)


def test_more_prunings_than_alpha_epochs_are_refused():
    with pytest.raises(ValueError, match="at least 3 alpha epochs"):
        prune_schedule([4, 2], 6, 4)


def test_prune_mask_equals_a_hand_computation():
    alpha = np.array([[0.1, 0.5, -0.2, 0.4, 0.0],
                      [2.0, -1.0, 0.3, 0.3, 0.2],
                      [0.0, 0.0, 0.0, 0.0, 0.0]])
    mask = np.ones_like(alpha)
    mask[0, 1] = 0.0  # already pruned: stays out although its alpha is the largest of its edge
    out = prune_mask(alpha, mask, keep=2)
    np.testing.assert_array_equal(out, [[1, 0, 0, 1, 0],  # 0.4 and 0.1 among the kept
                                        [1, 0, 1, 0, 0],  # 2.0, then the tie 0.3/0.3 to the lower index
                                        [1, 1, 0, 0, 0]])  # all equal: the lowest indices
    # none (column 0) dropped first: the two strongest of the others.
    dropped = prune_mask(alpha, mask, keep=2, none_index=0, drop_none=True)
    np.testing.assert_array_equal(dropped, [[0, 0, 0, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]])
    # An edge with no more than `keep` candidates keeps them all.
    np.testing.assert_array_equal(prune_mask(alpha[:1], mask[:1], keep=4), mask[:1])


def _model(prunable=True, seed=0):
    return SearchModel(TinyBackbone(), input_shape=(4, 4, 1), seed=seed, prunable=prunable)


def test_masked_mixture_equals_the_softmax_of_the_kept_alphas():
    keras.utils.set_random_seed(0)
    model = _model()
    for i, a in enumerate(model.arch_variables):
        a.assign(np.random.default_rng(i).standard_normal(tuple(a.shape)).astype("float32"))
    left = model.prune(2)
    assert left == {"normal": 2, "reduce": 2, "seq": 2}
    masks = model.alpha_masks()
    mixing = {k: keras.ops.convert_to_numpy(v) for k, v in model.mixing_weights().items()}
    for kind, alpha in model.alpha_arrays().items():
        kept = masks[kind] > 0.5
        assert (kept.sum(axis=1) == 2).all()
        # Independent computation: the softmax over the kept entries of each row, 0 elsewhere.
        expected = np.zeros_like(alpha, dtype=np.float64)
        for e in range(alpha.shape[0]):
            z = np.exp(alpha[e, kept[e]] - alpha[e, kept[e]].max())
            expected[e, kept[e]] = z / z.sum()
            # The kept ones are the two largest alphas of the edge.
            assert set(np.flatnonzero(kept[e])) == set(np.argsort(-alpha[e], kind="stable")[:2])
        np.testing.assert_allclose(mixing[kind], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(model.alpha_weights()[kind], expected, rtol=1e-5, atol=1e-7)


def test_pruned_supernet_equals_the_plain_supernet_with_pruned_ops_far_below():
    """The masked model's logits and alpha gradients equal those of an unmasked model whose pruned alphas are set
    far below the others (the plain softmax gives them weight 0); a pruned alpha gets no gradient."""
    keras.utils.set_random_seed(1)
    masked, plain = _model(True), _model(False)
    plain.backbone.set_weights(masked.backbone.get_weights())
    for a, b in zip(masked.arch_variables, plain.arch_variables):
        b.assign(a)
    masked.prune(2)
    for kind, a in zip(plain.alpha_kinds, plain.arch_variables):
        a.assign(np.where(masked.alpha_masks()[kind] > 0.5, keras.ops.convert_to_numpy(a), -1e4).astype("float32"))
    x = np.random.default_rng(2).standard_normal((6, 4, 4, 1)).astype("float32")
    y = np.array([0, 1, 0, 1, 1, 0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(masked(x)), keras.ops.convert_to_numpy(plain(x)),
                               rtol=1e-5, atol=1e-6)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    grads = []
    for model in (masked, plain):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=False))
        grads.append([g.numpy() for g in tape.gradient(value, model.arch_variables)])
    for kind, gm, gp in zip(masked.alpha_kinds, *grads):
        np.testing.assert_allclose(gm, gp, rtol=1e-4, atol=1e-7)
        assert (gm[masked.alpha_masks()[kind] < 0.5] == 0).all()


def test_unprunable_model_has_no_masks_and_refuses_to_prune():
    model = _model(False)
    assert not [w for w in model.weights if "alpha_mask" in w.path]
    assert all((m == 1).all() for m in model.alpha_masks().values())
    with pytest.raises(ValueError, match="prunable=False"):
        model.prune(2)
    assert len(_model(True).weights) == len(model.weights) + 3


def test_genotype_never_chooses_a_pruned_op():
    alpha = np.array([[0.0, 0.0, 3.0, 1.0], [0.0, 0.0, 3.0, 1.0]])  # skip_connect strongest on both edges
    mask = np.array([[1, 1, 0, 1], [1, 1, 0, 1]], dtype=float)
    cell = derive_cell(masked_alphas({"n": alpha}, {"n": mask})["n"], CNN_OPS, 1)
    assert cell == [[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]]
    model = _model()
    model.arch_variables[0].assign(alpha.astype("float32"))
    model._alpha_masks[0].assign(mask.astype("float32"))
    assert [op for op, _ in model.genotype().normal[0]] == ["sep_conv_3x3", "sep_conv_3x3"]


def test_search_config_checks(demo_cache):
    from emodarts_tf.search.runner import check_search_config

    config = micro_config(demo_cache, "search.epochs=4", "search.warmup_epochs=1", "search.prune=[3,2]")
    check_search_config(config.search)
    with pytest.raises(ValueError, match="select perturbation"):
        check_search_config(micro_config(demo_cache, "search.prune=[3,2]", "search.select=perturbation").search)
    with pytest.raises(ValueError, match="strictly decreasing"):
        check_search_config(micro_config(demo_cache, "search.prune=[2,3]").search)


def test_search_prunes_on_schedule_and_resumes(tmp_path, demo_cache, demo_prepared):
    """A micro search with prune [3, 2] over 3 alpha epochs: after epoch 2 three candidates per edge are in the
    mixture, after epoch 3 two and never `none`; the genotype uses kept ops only; a search killed after epoch 2
    and resumed ends with the checkpoint (masks included) of an uninterrupted one."""
    from emodarts_tf.search.runner import run_search

    config = micro_config(demo_cache, "search.epochs=4", "search.warmup_epochs=1", "search.prune=[3,2]")
    full = run_search(config, tmp_path / "full", 1, prepared=demo_prepared)
    history = json.loads((tmp_path / "full" / "fold1" / "alpha_history.json").read_text())
    cnn, seq = resolve_ops(config.space.cnn_ops, "cnn"), resolve_ops(config.space.seq_ops, "seq")
    ops = {"normal": cnn, "reduce": cnn, "seq": seq}  # the backbone's column order
    for entry in history:
        for kind, weights in entry["weights"].items():
            kept = (np.asarray(weights) > 0).sum(axis=1)
            expected = {1: len(ops[kind]), 2: min(3, len(ops[kind])), 3: 2, 4: 2}[entry["epoch"]]
            assert (kept == expected).all(), (entry["epoch"], kind, weights)
            if entry["epoch"] >= 3:
                # none dropped at the last pruning
                assert (np.asarray(weights)[:, ops[kind].index("none")] == 0).all()
    last = history[-1]["weights"]
    final = json.loads((tmp_path / "full" / "fold1" / "genotype.json").read_text())
    for kind in ("normal", "reduce", "seq"):
        for node in final[kind]:
            for op, j in node:
                assert np.asarray(last[kind])[j, ops[kind].index(op)] > 0, (kind, op, j)

    with pytest.raises(Killed):
        run_search(config, tmp_path / "killed", 1, prepared=demo_prepared, callbacks=[KillAfter(2)])
    resumed = run_search(config, tmp_path / "killed", 1, resume=True, prepared=demo_prepared)
    reader = {}
    for name in ("full", "killed"):
        path = tf.train.latest_checkpoint(str(tmp_path / name / "fold1" / "checkpoints"))
        ckpt = tf.train.load_checkpoint(path)
        reader[name] = {n: ckpt.get_tensor(n) for n, _ in tf.train.list_variables(path) if n.startswith("model/")}
    assert reader["full"].keys() == reader["killed"].keys()
    assert any("alpha_mask" in n for n in reader["full"])
    for n in reader["full"]:
        np.testing.assert_allclose(reader["full"][n], reader["killed"][n], rtol=1e-5, atol=1e-6, err_msg=n)
    assert full["final"] == resumed["final"]


def test_initial_state_does_not_depend_on_prunable(demo_cache):
    """The masks draw nothing: a prunable supernet starts from the weights and alphas of the same seed's plain one,
    so a pruned search and a plain search of one seed share their start."""
    from emodarts_tf.search.runner import build_search_model
    from emodarts_tf.utils.seed import seed_everything

    models = {}
    for prune in ("[]", "[3,2]"):
        config = micro_config(demo_cache, "search.epochs=4", "search.warmup_epochs=1", f"search.prune={prune}")
        seed_everything(config.seed)
        models[prune] = build_search_model(config, (40, 47, 1), 4, 2)
    plain, pruned = models["[]"], models["[3,2]"]
    assert pruned.prunable and not plain.prunable
    for a, b in zip(plain.backbone.weights, pruned.backbone.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path)
    for kind in plain.alpha_kinds:
        np.testing.assert_array_equal(plain.alpha_arrays()[kind], pruned.alpha_arrays()[kind])
