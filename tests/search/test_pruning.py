"""Progressive pruning (search.prune): the schedule, the pruning rule against a hand computation, the masked
mixture against the plain softmax of the kept alphas, the genotype, the runner (the pruned candidates stay out,
resume)."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from search_helpers import CNN_OPS, KillAfter, Killed, TinyBackbone, micro_config, model_checkpoint
from test_architect import plain_hypergradient_check

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
    # Stages that do not divide evenly: the nearest epoch, halves up (10 / 3 = 3.33 and 6.67; 3 / 2 = 1.5).
    assert prune_schedule([5, 3], 10, 0) == {3: 5, 7: 3}
    assert prune_schedule([2], 5, 2) == {4: 2}


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
    # Ties among many candidates (more than NumPy's insertion-sort threshold): the lowest indices, in order.
    many = np.zeros((1, 40))
    np.testing.assert_array_equal(np.flatnonzero(prune_mask(many, np.ones_like(many), keep=7)), np.arange(7))
    with pytest.raises(ValueError, match="keep"):
        prune_mask(alpha, mask, keep=0)
    lonely = np.zeros((1, 3))
    lonely_mask = np.array([[1.0, 0.0, 0.0]])  # only `none` left
    with pytest.raises(ValueError, match=r"edge\(s\) \[0\] would keep no candidate"):
        prune_mask(lonely, lonely_mask, keep=2, none_index=0, drop_none=True)


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


def test_second_order_hypergradient_of_a_pruned_supernet_matches_exact_and_numeric(float64_policy):
    """After a pruning, the unrolled (second-order) alpha gradient equals the exact nested-tape reference and central
    differences of the unrolled validation loss (tests/search/test_architect.py's references), and is zero on the
    pruned entries: the masks hold through the virtual weight step and the finite-difference Hessian term."""
    model = SearchModel(TinyBackbone(dtype="float64"), input_shape=(4, 4, 1), alpha_init_scale=0.5, seed=3,
                        prunable=True, dtype="float64")
    model.prune(2)
    hyper, exact = plain_hypergradient_check(model)
    for kind, h, e in zip(model.alpha_kinds, hyper, exact):
        pruned = model.alpha_masks()[kind] < 0.5
        assert pruned.any() and (h[pruned] == 0).all()
        assert np.abs(e[~pruned]).max() > 1e-6


def test_unprunable_model_has_no_masks_and_refuses_to_prune():
    model = _model(False)
    assert not [w for w in model.weights if "alpha_mask" in w.path]
    assert all((m == 1).all() for m in model.alpha_masks().values())
    with pytest.raises(ValueError, match="prunable=False"):
        model.prune(2)
    assert len(_model(True).weights) == len(model.weights) + 3


def test_prune_refusals_leave_the_masks_alone():
    model = _model()
    with pytest.raises(ValueError, match="keep"):
        model.prune(-1)
    model._alpha_masks[2].assign(np.array([[1, 0, 0, 0], [1, 1, 1, 1]], dtype="float32"))  # seq edge 0: none only
    with pytest.raises(ValueError, match=r"seq cell .*edge\(s\) \[0\]"):
        model.prune(2, drop_none=True)
    assert (model.alpha_masks()["normal"] == 1).all()  # nothing assigned, not even the kinds before


def test_config_round_trip_keeps_the_masks():
    model = _model()
    again = SearchModel.from_config(model.get_config())
    assert again.prunable and len(again.weights) == len(model.weights)


def test_a_reused_supernet_starts_unpruned(demo_cache):
    from emodarts_tf.search.reuse import SupernetReuse, supernet_key
    from emodarts_tf.search.runner import build_search_model

    config = micro_config(demo_cache, "search.epochs=4", "search.warmup_epochs=1", "search.prune=[3,2]")
    reuse, key = SupernetReuse(), supernet_key(config, (13, 16, 1), 4)
    model = reuse.supernet(key, lambda: build_search_model(config, (13, 16, 1), 4, 2))
    model.prune(2, drop_none=True)
    assert any((m == 0).any() for m in model.alpha_masks().values())
    again = reuse.supernet(key, lambda: pytest.fail("the kept supernet should be handed out"))
    assert again is model and all((m == 1).all() for m in again.alpha_masks().values())


def test_entropy_is_normalised_over_the_kept_candidates():
    from emodarts_tf.search.diagnostics import alpha_entropy

    weights = np.array([[0.5, 0.5, 0.0, 0.0], [0.2, 0.3, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])
    kept = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    h = [np.log(2), -(0.2 * np.log(0.2) + 0.3 * np.log(0.3) + 0.5 * np.log(0.5)), 0.0]
    out = alpha_entropy({"normal": weights}, kept={"normal": kept})["normal"]
    assert out["mean"] == pytest.approx(np.mean(h), abs=1e-12)
    # One kept candidate: nothing to choose, normalised 1.0 (as a single-op kind).
    assert out["normalized"] == pytest.approx(np.mean([1.0, h[1] / np.log(3), 1.0]), abs=1e-12)
    assert alpha_entropy({"normal": weights})["normal"]["normalized"] == pytest.approx(np.mean(h) / np.log(4))


def test_genotype_never_chooses_a_pruned_op():
    alpha = np.array([[0.0, 0.0, 3.0, 1.0], [0.0, 0.0, 3.0, 1.0]])  # skip_connect strongest on both edges
    mask = np.array([[1, 1, 0, 1], [1, 1, 0, 1]], dtype=float)
    cell = derive_cell(masked_alphas({"n": alpha}, {"n": mask})["n"], CNN_OPS, 1)
    assert cell == [[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]]
    # With the skip cap at 0 an edge that kept only none and skip_connect has nothing to offer: it drops out
    # instead of choosing a pruned op (weight 0).
    alpha2 = np.array([[0.0, 0.0, 3.0, 1.0], [0.0, 0.0, 3.0, 1.0], [0.0, 1.0, 0.0, 0.0],  # node 0; node 1:
                       [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    mask2 = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=float)
    cell2 = derive_cell(masked_alphas({"n": alpha2}, {"n": mask2})["n"], CNN_OPS, 2, max_skip=0)
    assert cell2[0] == [("sep_conv_3x3", 1)]
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


def _check_history(history, ops, schedule):
    """Every entry's keep masks hold ``schedule[epoch]`` candidates per edge (None: all), the mixing weights are 0
    exactly where a candidate is pruned, and none is out once two are left (the last pruning)."""
    for entry in history:
        for kind, weights in entry["weights"].items():
            weights, kept = np.asarray(weights), np.asarray(entry["kept"][kind])
            expected = schedule[entry["epoch"]] or len(ops[kind])
            assert (kept.sum(axis=1) == min(expected, len(ops[kind]))).all(), (entry["epoch"], kind, kept)
            assert (weights[kept == 0] == 0).all() and (weights[kept == 1] > 0).all()
            if expected == 2:
                assert (kept[:, ops[kind].index("none")] == 0).all()


def _ops(space) -> dict:
    """The candidate ops of each alpha kind, in the backbone's column order."""
    cnn, seq = resolve_ops(space.cnn_ops, "cnn"), resolve_ops(space.seq_ops, "seq")
    return {"normal": cnn, "reduce": cnn, "seq": seq}


def _check_genotype_kept(final: dict, weights: dict, ops: dict) -> None:
    """Every (op, input) of the genotype ``final`` has a mixing weight above 0 in ``weights`` (the last alpha
    history entry's): the genotype chooses kept candidates only."""
    chosen = 0
    for kind in ("normal", "reduce", "seq"):
        offset = 0
        for n, node in enumerate(final[kind]):
            for op, j in node:
                assert np.asarray(weights[kind])[offset + j, ops[kind].index(op)] > 0, (kind, op, j)
                chosen += 1
            offset += n + 2
    assert chosen > 0


def test_search_prunes_on_schedule_and_resumes(tmp_path, demo_cache, demo_prepared):
    """A micro search with prune [3, 2] over 3 alpha epochs: after epoch 2 three candidates per edge are in the
    mixture, after epoch 3 two and never `none`; the genotype uses kept ops only; a search killed after epoch 2
    and resumed ends with the checkpoint (masks included) of an uninterrupted one."""
    from emodarts_tf.search.runner import run_search

    config = micro_config(demo_cache, "search.epochs=4", "search.warmup_epochs=1", "search.prune=[3,2]")
    full = run_search(config, tmp_path / "full", 1, prepared=demo_prepared)
    history = json.loads((tmp_path / "full" / "fold1" / "alpha_history.json").read_text())
    ops = _ops(config.space)
    _check_history(history, ops, {1: None, 2: 3, 3: 2, 4: 2})
    _check_genotype_kept(json.loads((tmp_path / "full" / "fold1" / "genotype.json").read_text()),
                         history[-1]["weights"], ops)
    search = json.loads((tmp_path / "full" / "fold1" / "search.json").read_text())
    assert search["best"]["epoch"] >= 3  # only the epochs from the last pruning on compete for the best

    with pytest.raises(Killed):
        run_search(config, tmp_path / "killed", 1, prepared=demo_prepared, callbacks=[KillAfter(2)])
    resumed = run_search(config, tmp_path / "killed", 1, resume=True, prepared=demo_prepared)
    reader = {name: model_checkpoint(tmp_path / name) for name in ("full", "killed")}
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


def test_resume_with_fewer_epochs_catches_up_on_the_moved_pruning(tmp_path, demo_cache, demo_prepared):
    """Killed after epoch 3 of 5 (prunings after epochs 2 and 4), resumed with 4 epochs (prunings after 2 and 3):
    the pruning now due after epoch 3 is applied when the search resumes, so epoch 4 runs with 2 candidates."""
    from emodarts_tf.search.runner import run_search

    five = micro_config(demo_cache, "search.epochs=5", "search.warmup_epochs=1", "search.prune=[3,2]")
    with pytest.raises(Killed):
        run_search(five, tmp_path / "s", 1, prepared=demo_prepared, callbacks=[KillAfter(3)])
    four = micro_config(demo_cache, "search.epochs=4", "search.warmup_epochs=1", "search.prune=[3,2]")
    run_search(four, tmp_path / "s", 1, resume=True, prepared=demo_prepared)
    history = json.loads((tmp_path / "s" / "fold1" / "alpha_history.json").read_text())
    cnn, seq = resolve_ops(four.space.cnn_ops, "cnn"), resolve_ops(four.space.seq_ops, "seq")
    _check_history(history, {"normal": cnn, "reduce": cnn, "seq": seq}, {1: None, 2: 3, 3: 3, 4: 2})
