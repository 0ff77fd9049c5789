"""SearchModel: alphas and variable split, compile checks, the alternating step under fit(), warm-up,
a synthetic task that only one op solves, mixed precision, XLA, serialisation, genotypes, checkpoints."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from search_helpers import SOLVER, TinyBackbone, search_dataset

from emodarts_tf.search.callbacks import AlphaWarmup
from emodarts_tf.search.checkpoint import SearchState
from emodarts_tf.search.model import EXECUTIONS, SearchModel, resolve_execution
from emodarts_tf.search_space.genotype import Genotype


def _compiled(backbone=None, seed=0, order="first", alpha_lr=0.03, edge_norm=False, prunable=False, **compile_kwargs):
    model = SearchModel(backbone or TinyBackbone(), input_shape=(4, 4, 1), seed=seed, edge_norm=edge_norm,
                        prunable=prunable)
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.optimizers.Adam(alpha_lr, beta_1=0.5, beta_2=0.999),
        order=order,
        **compile_kwargs,
    )
    return model


def test_alphas_are_own_variables_split_by_identity():
    model = _compiled()
    assert [a.path.split("/")[-1] for a in model.arch_variables] == ["alpha_normal", "alpha_reduce", "alpha_seq"]
    assert {k: v.shape for k, v in model.alpha_arrays().items()} == {"normal": (2, 4), "reduce": (2, 4), "seq": (2, 4)}
    arch = {id(v) for v in model.arch_variables}
    weights = {id(v) for v in model.weight_variables}
    assert not arch & weights
    assert arch | weights == {id(v) for v in model.trainable_variables}
    assert len(model.weight_variables) == len(model.backbone.trainable_variables)
    # 1e-3 * N(0, 1), seeded.
    values = np.concatenate([a.ravel() for a in model.alpha_arrays().values()])
    assert 1e-4 < values.std() < 1e-2
    again = SearchModel(TinyBackbone(), input_shape=(4, 4, 1), seed=0).alpha_arrays()
    other = SearchModel(TinyBackbone(), input_shape=(4, 4, 1), seed=1).alpha_arrays()
    np.testing.assert_array_equal(again["normal"], model.alpha_arrays()["normal"])
    assert not np.array_equal(other["normal"], again["normal"])
    # Softmaxed weights per edge.
    for w in model.alpha_weights().values():
        np.testing.assert_allclose(w.sum(axis=-1), 1.0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="backbone"):
        SearchModel(keras.layers.Dense(3))
    model = SearchModel(TinyBackbone(), input_shape=(4, 4, 1))
    sgd = keras.optimizers.SGD(0.1)
    with pytest.raises(ValueError, match="order"):
        model.compile(sgd, keras.optimizers.Adam(), order="third")
    with pytest.raises(ValueError, match="two distinct"):
        model.compile(sgd, sgd)
    with pytest.raises(ValueError, match="grad_clip"):
        model.compile(sgd, keras.optimizers.Adam(), grad_clip=0)
    with pytest.raises(ValueError, match="jit_compile: expected a bool, received 'auto'"):
        model.compile(sgd, keras.optimizers.Adam(), jit_compile="auto")
    with pytest.raises(ValueError, match="alpha_init_scale: expected a number >= 0, received -1"):
        SearchModel(TinyBackbone(), alpha_init_scale=-1)


def test_train_step_alternates_updates_under_fit():
    model = _compiled()
    alphas0 = [a.numpy().copy() for a in model.arch_variables]
    weights0 = [w.numpy().copy() for w in model.weight_variables]
    ds, steps = search_dataset(64, 16)
    history = model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    assert set(history.history) >= {"loss", "accuracy", "alpha_loss", "lr"}
    assert model.a_optimizer.iterations.numpy() == steps
    assert model.w_optimizer.iterations.numpy() == steps
    assert all(not np.array_equal(a.numpy(), b) for a, b in zip(model.arch_variables, alphas0))
    assert all(not np.array_equal(w.numpy(), b) for w, b in zip(model.weight_variables, weights0))
    # The weight optimizer never saw the alphas and vice versa.
    assert len(model.w_optimizer.momentums) == len(model.weight_variables)
    assert len(model.a_optimizer.variables) == 2 + 2 * len(model.arch_variables)  # iterations, lr, m, v
    # test_step / evaluate report loss and accuracy.
    x = tf.random.normal((8, 4, 4, 1))
    logs = model.evaluate(x, tf.zeros((8,), tf.int32), verbose=0, return_dict=True)
    assert set(logs) == {"loss", "accuracy"}


def test_weight_step_clips_then_decays():
    """One step with huge gradients: the update is lr * (clipped grad + wd * w) (SGD without momentum)."""
    model = SearchModel(TinyBackbone(), input_shape=(4, 4, 1))
    model.compile(keras.optimizers.SGD(0.1), keras.optimizers.Adam(), grad_clip=1e-3, w_weight_decay=0.5)
    model.alpha_active.assign(0.0)
    ds, _ = search_dataset(32, 16)
    (xw, yw), batch_a = next(iter(ds))
    weights = model.weight_variables
    with tf.GradientTape() as tape:
        loss = model._loss_only(xw, yw)
    grads = tape.gradient(loss, weights)
    clipped, _ = tf.clip_by_global_norm(grads, 1e-3)
    expected = [w.numpy() - 0.1 * (g.numpy() + 0.5 * w.numpy()) for w, g in zip(weights, clipped)]
    model.train_step(((xw, yw), batch_a))
    for w, e in zip(weights, expected):
        np.testing.assert_allclose(w.numpy(), e, rtol=1e-5, atol=1e-7)


def test_warmup_freezes_alphas_and_their_optimizer_then_releases_them():
    model = _compiled()
    model.build_optimizers()
    alphas0 = [a.numpy().copy() for a in model.arch_variables]
    ds, steps = search_dataset(64, 16)
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(
                (
                    [a.numpy().copy() for a in self.model.arch_variables],
                    int(self.model.a_optimizer.iterations.numpy()),
                    [v.numpy().copy() for v in self.model.a_optimizer.variables[2:]],
                    float(self.model.w_optimizer.iterations.numpy()),
                )
            )

    model.fit(ds, steps_per_epoch=steps, epochs=3, verbose=0, callbacks=[AlphaWarmup(2), Snapshot()])
    for epoch in (0, 1):
        alphas, a_iters, moments, w_iters = snapshots[epoch]
        for a, a0 in zip(alphas, alphas0):
            np.testing.assert_array_equal(a, a0)
        assert a_iters == 0
        assert all(not m.any() for m in moments)  # Adam moments untouched
        assert w_iters == steps * (epoch + 1)  # the weights trained
    alphas, a_iters, moments, _ = snapshots[2]
    assert a_iters == steps
    assert all(not np.array_equal(a, a0) for a, a0 in zip(alphas, alphas0))
    assert all(m.any() for m in moments)
    with pytest.raises(ValueError, match="warmup_epochs"):
        AlphaWarmup(-1)


@pytest.mark.parametrize("kind,order", [("normal", "first"), ("normal", "second"), ("seq", "first")])
def test_short_search_moves_alphas_to_the_only_op_that_solves_the_task(kind, order):
    """Ring task (x0^2 + x1^2 > median) on raw 2-D inputs through one cell and a linear classifier: only the
    square op (named sep_conv_3x3 / lstm_1 here) makes it solvable."""
    backbone = TinyBackbone(solver="square", cells=(kind,), stem=False)
    model = SearchModel(backbone, input_shape=(2, 1, 1), seed=0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.03, 0.5, 0.999), order=order)
    ops = backbone.cnn_ops if kind != "seq" else backbone.seq_ops
    solver = ops.index(SOLVER["seq" if kind == "seq" else "cnn"])
    before = model.alpha_weights()[kind][:, solver]
    ds, steps = search_dataset(256, 32, task="ring", shape=(2, 1, 1))
    history = model.fit(ds, steps_per_epoch=steps, epochs=6, verbose=0)
    assert history.history["accuracy"][-1] > 0.85
    weights = model.alpha_weights()[kind]
    assert np.all(weights[:, solver] > before + 0.2)
    assert np.all(weights.argmax(axis=1) == solver)
    genotype = model.genotype(max_skip=2)
    assert [op for op, _ in genotype.cell(kind)[0]] == [ops[solver], ops[solver]]


@pytest.mark.parametrize("arch", [False, True], ids=["alphas", "betas+pruned"])
def test_mixed_precision_keeps_alphas_float32_and_scales_losses(arch):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _compiled(edge_norm=arch, prunable=arch)
        if arch:
            model.prune(3)
        assert model.compute_dtype == "float16"
        assert len(model.arch_variables) == (6 if arch else 3)
        assert all(a.dtype == "float32" for a in model.arch_variables)
        assert isinstance(model.w_optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.a_optimizer, keras.optimizers.LossScaleOptimizer)
        alphas0 = [a.numpy().copy() for a in model.arch_variables]
        ds, steps = search_dataset(64, 16)
        history = model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][-1])
        assert all(not np.array_equal(a.numpy(), b) for a, b in zip(model.arch_variables, alphas0))
        assert all(np.isfinite(a.numpy()).all() for a in model.arch_variables)
        if arch:  # the pruned candidates keep weight 0 in float16
            for kind, weights in model.mixing_weights().items():
                weights = keras.ops.convert_to_numpy(weights)
                assert (weights[model.alpha_masks()[kind] < 0.5] == 0).all() and np.isfinite(weights).all()
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_jit_compile_step_matches_the_graph_step():
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(7)
        model = _compiled(seed=3, jit_compile=jit)
        assert model.jit_compile is jit
        ds, steps = search_dataset(32, 16)
        model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
        results.append(model.alpha_arrays())
    for kind in results[0]:
        np.testing.assert_allclose(results[0][kind], results[1][kind], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("order", ["first", "second"])
def test_eager_updates_step_equals_the_graph_step(order):
    """eager_updates (only the forward+backward pass traced, the updates run eagerly) is the same step as the
    whole step in one graph: same alphas, weights, optimizer state and logs after a few steps."""
    runs = []
    for eager in (False, True):
        keras.utils.set_random_seed(5)
        model = _compiled(seed=2, order=order, eager_updates=eager, grad_clip=0.5)
        assert model.eager_updates is eager and model.run_eagerly is eager
        ds, _ = search_dataset(48, 16)
        history = model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)
        runs.append((model, history.history))
    (graph, h_graph), (eager, h_eager) = runs
    for a, b in zip(graph.arch_variables + graph.weight_variables, eager.arch_variables + eager.weight_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(graph.w_optimizer.variables + graph.a_optimizer.variables,
                    eager.w_optimizer.variables + eager.a_optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    for key in ("loss", "alpha_loss", "accuracy"):
        np.testing.assert_allclose(h_graph[key], h_eager[key], rtol=1e-5)
    # Eagerly, only the gradient function is a graph: one trace for all passes of all steps.
    assert eager._gradient_fn.experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match="eager_updates"):
        _compiled(eager_updates="yes")


def test_execution_mode_resolves_the_compile_switches():
    """run_eagerly wins, eager_updates needs a single replica, and XLA applies to what the mode traces."""
    assert EXECUTIONS == ("graph", "eager_updates", "eager")
    assert resolve_execution(run_eagerly=False, eager_updates=False, replicas=1) == "graph"
    assert resolve_execution(run_eagerly=False, eager_updates=True, replicas=1) == "eager_updates"
    assert resolve_execution(run_eagerly=False, eager_updates=True, replicas=2) == "graph"
    assert resolve_execution(run_eagerly=True, eager_updates=True, replicas=1) == "eager"
    assert resolve_execution(run_eagerly=True, eager_updates=False, replicas=2) == "eager"
    # (switches) -> (execution, xla, Keras' jit_compile, Keras' run_eagerly, eager_updates)
    cases = {
        (False, False, False): ("graph", False, False, False, False),
        (True, False, False): ("graph", True, True, False, False),
        (False, True, False): ("eager_updates", False, False, True, True),
        (True, True, False): ("eager_updates", True, False, True, True),
        (True, False, True): ("eager", False, False, True, False),
        (True, True, True): ("eager", False, False, True, False),
    }
    for (jit, eager_updates, run_eagerly), expected in cases.items():
        model = _compiled(jit_compile=jit, eager_updates=eager_updates, run_eagerly=run_eagerly)
        got = (model.execution, model.xla, model.jit_compile, model.run_eagerly, model.eager_updates)
        assert got == expected, (jit, eager_updates, run_eagerly)


def test_run_eagerly_step_equals_the_graph_step():
    """The "eager" execution (nothing traced) computes the same second-order step as the graph."""
    runs = []
    for run_eagerly in (False, True):
        keras.utils.set_random_seed(5)
        model = _compiled(seed=2, order="second", run_eagerly=run_eagerly, grad_clip=0.5)
        ds, _ = search_dataset(48, 16)
        model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
        runs.append(model)
    graph, eager = runs
    assert eager.execution == "eager" and eager._gradient_fn is None
    for a, b in zip(graph.arch_variables + graph.weight_variables, eager.arch_variables + eager.weight_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_genotype_is_the_backbones_derivation_of_the_alphas():
    """Against an independent reading of the alphas: with one node of two edges, the genotype keeps both
    edges, each with its largest non-`none` alpha."""
    model = _compiled()
    rng = np.random.default_rng(4)
    for a in model.arch_variables:
        a.assign(rng.normal(size=a.shape) * 2.0)
    genotype = model.genotype(meta={"epoch": 1})
    assert genotype.meta == {"epoch": 1}
    backbone = model.backbone
    for kind, alpha in model.alpha_arrays().items():
        ops = backbone.seq_ops if kind == "seq" else backbone.cnn_ops
        expected = []
        for edge, row in enumerate(alpha):
            best = max((value, op) for value, op in zip(row, ops) if op != "none")[1]
            expected.append((best, edge))
        assert genotype.cell(kind) == [expected], kind
        assert genotype.concat(kind) == [2]
    assert genotype == backbone.derive_genotype(model.alpha_arrays(), meta={"epoch": 1})


def test_backbone_without_derive_genotype_is_refused():
    class Bare(keras.layers.Layer):
        def alpha_shapes(self):
            return {"normal": (2, 4)}

    with pytest.raises(ValueError, match="backbone: expected a searchable layer with `derive_genotype`"):
        SearchModel(Bare())


def test_genotype_json_round_trip_and_config_round_trip(tmp_path):
    model = _compiled()
    meta = {"corpus": "demo", "fold": 1, "train_speakers": ["a", "b"], "test_speakers": ["c"], "epoch": 3}
    genotype = model.genotype(max_skip=2, meta=meta)
    path = genotype.save(tmp_path / "genotype.json")
    loaded = Genotype.load(path)
    assert loaded == genotype
    assert loaded.meta == meta
    clone = SearchModel.from_config(model.get_config())
    assert {k: v.shape for k, v in clone.alpha_arrays().items()} == {k: v.shape for k, v in model.alpha_arrays().items()}
    np.testing.assert_array_equal(clone.alpha_arrays()["seq"], model.alpha_arrays()["seq"])  # same seed


def test_checkpoint_save_and_restore_keep_alphas_weights_and_optimizers(tmp_path):
    model = _compiled(order="first")
    state = SearchState(model, tmp_path / "checkpoints")
    ds, steps = search_dataset(64, 16)
    model.fit(ds, steps_per_epoch=steps, epochs=2, verbose=0)
    state.best_ua.assign(0.625)
    state.best_epoch.assign(2)
    state.save(2)

    keras.utils.set_random_seed(99)
    other = _compiled(seed=5)
    other_state = SearchState(other, tmp_path / "checkpoints")
    assert not np.array_equal(other.alpha_arrays()["normal"], model.alpha_arrays()["normal"])
    assert other_state.restore() == 2
    for a, b in zip(model.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for opt, opt2 in ((model.w_optimizer, other.w_optimizer), (model.a_optimizer, other.a_optimizer)):
        assert len(opt.variables) == len(opt2.variables)
        for a, b in zip(opt.variables, opt2.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(other_state.best_ua.numpy()) == 0.625 and int(other_state.best_epoch.numpy()) == 2
    # The restored model continues exactly like the original.
    model.fit(ds.take(1), steps_per_epoch=1, epochs=1, verbose=0)
    other.fit(ds.take(1), steps_per_epoch=1, epochs=1, verbose=0)
    for a, b in zip(model.trainable_variables, other.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)

    wrong = SearchModel(TinyBackbone(units=5), input_shape=(4, 4, 1))
    wrong.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.optimizers.Adam())
    with pytest.raises(ValueError):
        SearchState(wrong, tmp_path / "checkpoints").restore()


# ------------------------------------------------------------------ a backbone of two named inputs
TWO_STREAM_SHAPES = {"spectrogram": (4, 6, 1), "frames": (5, 3)}


def _two_stream_backbone(fusion="supplement"):
    from emodarts_tf.config import SearchSpaceConfig
    from emodarts_tf.search_space.two_stream import TwoStreamSearchBackbone

    space = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=1, stem_multiplier=1, seq_cells=1, seq_nodes=1,
                              seq_hidden=4, cnn_ops=["none", "skip_connect", "sep_conv_3x3"],
                              seq_ops=["none", "skip_connect", "rnn_1"], fusion=fusion)
    return TwoStreamSearchBackbone(space, TWO_STREAM_SHAPES, num_classes=2)


def _two_stream_data(n, seed):
    rng = np.random.default_rng(seed)
    x = {name: rng.normal(size=(n, *shape)).astype("float32") for name, shape in TWO_STREAM_SHAPES.items()}
    y = (x["spectrogram"][:, 0, 0, 0] * x["frames"][:, 0, 0] > 0).astype("int32")
    return x, y


def test_dict_inputs_of_a_two_stream_backbone_under_fit_evaluate_and_config():
    model = SearchModel(_two_stream_backbone(), input_shape=TWO_STREAM_SHAPES, seed=0)
    assert model.alpha_kinds == ("normal", "reduce", "seq")
    # the run_eagerly execution computes the graph step (test_run_eagerly_step_equals_the_graph_step), untraced
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.03, beta_1=0.5), run_eagerly=True)
    parts = [tf.data.Dataset.from_tensor_slices(_two_stream_data(16, seed)).batch(8) for seed in (1, 2)]
    alphas0 = [a.numpy().copy() for a in model.arch_variables]
    weights0 = [w.numpy().copy() for w in model.weight_variables]
    model.fit(tf.data.Dataset.zip(tuple(parts)).repeat(), steps_per_epoch=2, epochs=1, verbose=0)
    assert model.a_optimizer.iterations.numpy() == 2 and model.w_optimizer.iterations.numpy() == 2
    assert all(not np.array_equal(a.numpy(), b) for a, b in zip(model.arch_variables, alphas0))
    changed = [not np.array_equal(w.numpy(), b) for w, b in zip(model.weight_variables, weights0)]
    assert all(changed), [w.path for w, c in zip(model.weight_variables, changed) if not c]
    x, y = _two_stream_data(8, 3)
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == {"loss", "accuracy"}
    genotype = model.genotype(max_skip=1)
    assert genotype.stream_cells == {"spectrogram": ["normal", "reduce"], "frames": ["seq"]}
    assert genotype == model.backbone.derive_genotype(model.alpha_arrays(), max_skip=1)
    # the config keeps the named shapes; a clone has the same (seeded) initial alphas
    config = model.get_config()
    assert config["input_shape"] == {"spectrogram": [4, 6, 1], "frames": [5, 3]}
    clone = SearchModel.from_config(config)
    assert clone.built and clone._example_shape == TWO_STREAM_SHAPES
    np.testing.assert_array_equal(clone.alpha_arrays()["seq"], SearchModel(_two_stream_backbone()).alpha_arrays()["seq"])
    # built on the first call when no input_shape is given
    lazy = SearchModel(_two_stream_backbone("frames"))
    assert lazy.alpha_kinds == ("seq",)
    assert tuple(lazy({"frames": x["frames"]}).shape) == (8, 2) and lazy._example_shape == {"frames": (5, 3)}
    # fit() needs every layer built (or it builds from the zipped data), a single-stream fusion's too
    assert all(layer.built for layer in lazy.backbone._flatten_layers())
    # the per-epoch log line of its genotype (which has the seq cell only)
    from emodarts_tf.search.callbacks import format_genotype

    assert format_genotype(lazy.genotype()).startswith("seq[")


# ------------------------------------------------------------------ passes without weight gradients
def _real_supernet(dtype="float32"):
    """A small emoDARTS supernet with every memory feature of the paper configuration: recomputed CNN edges,
    grouped and recomputed SeqNN banks (shared bank functions), LSTM and attention candidates."""
    from emodarts_tf.config import SearchSpaceConfig
    from emodarts_tf.search_space.network import SearchBackbone

    space = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=2, stem_multiplier=2, seq_cells=1, seq_nodes=2,
                              seq_hidden=6, cnn_ops=["none", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"],
                              seq_ops=["none", "skip_connect", "lstm_1", "rnn_att_1"], frequency_pooling="flatten")
    backbone = SearchBackbone(space, (12, 9, 1), num_classes=3, recompute=True, seq_grouped=True, recompute_seq=True,
                              dtype=dtype)
    return SearchModel(backbone, input_shape=(12, 9, 1), alpha_init_scale=0.5, seed=1, dtype=dtype)


@pytest.mark.parametrize("execution", ["eager_updates", "eager"])
def test_arch_only_pass_gives_the_alpha_gradients_of_the_full_pass(execution, float64_policy):
    """The forward+backward without weight gradients (arch_only_passes) returns the loss and the alpha gradients
    of a plain tape over every variable, in float64, on a supernet with recomputation and shared bank functions."""
    keras.utils.set_random_seed(3)
    model = _real_supernet("float64")
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.03), order="second",
                  eager_updates=execution == "eager_updates", run_eagerly=execution == "eager")
    assert model.execution == execution and model.arch_only_passes
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4, 12, 9, 1)))
    y = tf.constant([0, 1, 2, 1])
    with tf.GradientTape() as tape:  # the independent computation: every variable watched, no traced function
        loss = model.loss_fn(y, model(x, training=True))
    expected = tape.gradient(loss, model.arch_variables + model.weight_variables)
    loss_a, logits_a, alpha_a, weights_a = model._gradients(x, y, 1.0, "arch")
    loss_f, logits_f, alpha_f, weights_f = model._gradients(x, y, 1.0, "all")
    assert logits_a is None and weights_a == [] and len(weights_f) == len(model.weight_variables)
    np.testing.assert_allclose(float(loss_a), float(loss), rtol=1e-12)
    n = len(model.arch_variables)
    assert n == 3 and all(g is not None for g in expected[:n])
    scale = max(float(np.abs(g).max()) for g in expected[:n])
    assert scale > 1e-3
    for got, full, want in zip(alpha_a, alpha_f, expected[:n]):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-12 * scale)
        np.testing.assert_allclose(full.numpy(), want.numpy(), rtol=1e-9, atol=1e-12 * scale)
    if execution == "eager_updates":
        assert model._arch_gradient_fn is not None and model._arch_gradient_fn is not model._gradient_fn
        # the arch-only function computes no weight gradient: none of its outputs is weight-shaped
        concrete = model._arch_gradient_fn.get_concrete_function(x, y, tf.constant(1.0))
        shapes = {tuple(t.shape) for t in tf.nest.flatten(concrete.structured_outputs)}
        assert shapes == {()} | {tuple(a.shape) for a in model.arch_variables}
    else:
        assert model._arch_gradient_fn is None and model._gradient_fn is None


@pytest.mark.parametrize("order", ["first", "second"])
def test_arch_only_passes_compute_the_same_step(order):
    """search.arch_only_passes on and off: the same alphas, weights and logs after a few eager-updates steps;
    each traced function is traced once for all passes of all steps."""
    runs = []
    for arch_only in (True, False):
        keras.utils.set_random_seed(5)
        model = _real_supernet()
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.03, beta_1=0.5),
                      order=order, grad_clip=0.5, eager_updates=True, arch_only_passes=arch_only)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 12, 9, 1)).astype("float32")
        y = rng.integers(0, 3, 32).astype("int32")
        parts = [tf.data.Dataset.from_tensor_slices((x[i::2], y[i::2])).batch(8) for i in (0, 1)]
        history = model.fit(tf.data.Dataset.zip(tuple(parts)), steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
        runs.append((model, history.history))
    (on, h_on), (off, h_off) = runs
    assert on._gradient_fn.experimental_get_tracing_count() == 1
    assert on._arch_gradient_fn.experimental_get_tracing_count() == 1
    assert off._arch_gradient_fn is None
    for a, b in zip(on.arch_variables + on.weight_variables, off.arch_variables + off.weight_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    for key in ("loss", "alpha_loss", "accuracy"):
        np.testing.assert_allclose(h_on[key], h_off[key], rtol=1e-5)
    assert any(not np.allclose(a.numpy(), b) for a, b in
               zip(on.arch_variables, _real_supernet().arch_variables))  # the alphas moved
    with pytest.raises(ValueError, match="arch_only_passes"):
        _compiled(arch_only_passes="yes")
    # time and memory only: a resumed search may change it
    import dataclasses

    from emodarts_tf.config import load_config
    from emodarts_tf.search.runner import config_differences

    config = load_config("paper")
    assert config.search.arch_only_passes is True
    off = dataclasses.replace(config, search=dataclasses.replace(config.search, arch_only_passes=False))
    assert config_differences(config.to_dict(), off.to_dict()) == []


def test_a_search_resumes_when_only_fields_its_feature_kind_ignores_changed():
    import dataclasses

    from emodarts_tf.config import load_config
    from emodarts_tf.search.runner import config_differences

    config = load_config("emotionnas", ["features.kind=logmel", "features.n_mels=40"])
    features = config.features
    ignored = dataclasses.replace(config, features=dataclasses.replace(features, window_ms=32.0, freq_bins=64))
    assert config_differences(config.to_dict(), ignored.to_dict()) == []
    read = dataclasses.replace(config, features=dataclasses.replace(features, n_mels=64, time_pool=2))
    assert config_differences(config.to_dict(), read.to_dict()) == ["features.n_mels", "features.time_pool"]
    spectrogram = dataclasses.replace(config, features=dataclasses.replace(features, kind="spectrogram"))
    assert config_differences(config.to_dict(), spectrogram.to_dict()) == ["features.kind"]
    assert config_differences(config.to_dict(), dataclasses.replace(config, seed=3).to_dict()) == ["seed"]
