"""The shared retraining recipe, each part against an independent computation: coupled weight decay
against PyTorch's SGD step, EMA weights against the closed form, mixup targets, the time shift against
numpy, label smoothing against the hand-written loss, class-balanced batches, and EMA inside fit_fold."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.config import RecipeConfig, TrainConfig
from emodarts_tf.evaluation import recipe as recipes
from emodarts_tf.evaluation.optimizers import CoupledSGD
from emodarts_tf.evaluation.trainer import sgd_factory


def test_coupled_decay_one_step_equals_closed_form():
    w0 = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    g = np.array([[0.1, 0.2], [-0.3, 0.4]], np.float32)
    lr, wd = 0.1, 0.05
    var = keras.Variable(w0)
    opt = CoupledSGD(learning_rate=lr, momentum=0.9, l2=wd)
    opt.apply_gradients([(tf.constant(g), var)])
    np.testing.assert_allclose(var.numpy(), w0 - lr * (g + wd * w0), rtol=1e-6)


def test_coupled_decay_with_momentum_matches_pytorch_recursion():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3,)).astype(np.float64)
    grads = [rng.normal(size=(3,)) for _ in range(4)]
    lr, mu, wd = 0.05, 0.9, 3e-3
    var = keras.Variable(w.astype(np.float32))
    opt = CoupledSGD(learning_rate=lr, momentum=mu, l2=wd)
    buf = np.zeros(3)
    for g in grads:  # PyTorch: d = g + wd w; b = mu b + d; w -= lr b
        d = g + wd * w
        buf = mu * buf + d
        w = w - lr * buf
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-5, atol=1e-6)


def test_decoupled_mode_and_bad_mode():
    opt = sgd_factory(TrainConfig(weight_decay_mode="decoupled"))(10)
    assert type(opt) is keras.optimizers.SGD and opt.weight_decay == pytest.approx(3e-4)
    assert isinstance(sgd_factory(TrainConfig())(10), CoupledSGD)
    with pytest.raises(ValueError, match="weight_decay_mode"):
        sgd_factory(TrainConfig(weight_decay_mode="l1"))
    with pytest.raises(ValueError, match="l2"):
        CoupledSGD(l2=-1.0)


def test_coupled_sgd_config_round_trip():
    opt = CoupledSGD(learning_rate=0.1, momentum=0.5, l2=0.01)
    again = CoupledSGD.from_config(opt.get_config())
    assert again.l2 == pytest.approx(0.01) and again.momentum == pytest.approx(0.5)


def test_ema_weights_equal_closed_form_after_k_steps():
    w0 = np.array([1.0, -2.0], np.float32)
    var = keras.Variable(w0)
    opt = keras.optimizers.SGD(learning_rate=0.1)
    recipes.enable_ema(opt, RecipeConfig(ema=0.8))
    grads = [np.array([1.0, 0.5]), np.array([-2.0, 1.0]), np.array([0.5, 0.5])]
    trajectory = []
    for g in grads:
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
        trajectory.append(var.numpy().astype(np.float64).copy())
    # a_1 = w_1; a_t = m a_{t-1} + (1 - m) w_t
    average = trajectory[0]
    for w in trajectory[1:]:
        average = 0.8 * average + 0.2 * w
    class Holder:  # what averaged_weights reads of a model
        trainable_variables = [var]

    with recipes.averaged_weights(Holder, opt) as used:
        assert used
        np.testing.assert_allclose(var.numpy(), average, rtol=1e-6)
    np.testing.assert_allclose(var.numpy(), trajectory[-1], rtol=1e-6)  # restored


def test_enable_ema_refuses_a_built_optimizer():
    var = keras.Variable([1.0])
    opt = keras.optimizers.SGD(0.1)
    opt.build([var])
    with pytest.raises(ValueError, match="already built"):
        recipes.enable_ema(opt, RecipeConfig(ema=0.9))
    recipes.enable_ema(opt, RecipeConfig(ema=0.0))  # off: nothing to do


def test_mixup_targets_sum_to_one_and_mix_inputs_alike():
    x = tf.constant(np.arange(6 * 2 * 3, dtype=np.float32).reshape(6, 2, 3, 1))
    y = tf.one_hot([0, 1, 2, 3, 0, 1], 4)
    xm, ym = recipes.mixup_batch(x, y, 0.4, seed=3)
    ym = ym.numpy()
    np.testing.assert_allclose(ym.sum(axis=1), 1.0, rtol=1e-6)
    assert (ym >= 0).all()
    # Every mixed example is l x_i + (1 - l) x_j with the same l as its target: recover l from x.
    x_np, xm_np, y_np = x.numpy(), xm.numpy(), y.numpy()
    for i in range(6):
        found = False
        for j in range(6):
            d = x_np[i] - x_np[j]
            if not np.any(d):
                if np.allclose(xm_np[i], x_np[i]):
                    found = np.allclose(ym[i], y_np[i]) or found
                continue
            lam = float(((xm_np[i] - x_np[j]) * d).sum() / (d * d).sum())
            if np.allclose(xm_np[i], lam * x_np[i] + (1 - lam) * x_np[j], atol=1e-4):
                found = found or np.allclose(ym[i], lam * y_np[i] + (1 - lam) * y_np[j], atol=1e-5)
        assert found, i


def test_beta_samples_have_the_beta_mean_and_variance():
    a = 0.4
    s = recipes.sample_beta([20000], a, seed=1).numpy()
    assert s.min() >= 0 and s.max() <= 1
    assert s.mean() == pytest.approx(0.5, abs=0.01)
    assert s.var() == pytest.approx(a * a / ((2 * a) ** 2 * (2 * a + 1)), rel=0.05)


def test_time_shift_equals_numpy_shift():
    x = np.random.default_rng(0).normal(size=(5, 3, 10, 1)).astype(np.float32)
    tf.random.set_seed(7)
    shifted = recipes.time_shift_batch(tf.constant(x), 3).numpy()
    for i in range(5):
        matches = []
        for s in range(-3, 4):
            expected = np.zeros_like(x[i])
            if s >= 0:
                expected[:, s:] = x[i][:, : 10 - s]
            else:
                expected[:, :s] = x[i][:, -s:]
            matches.append(np.allclose(shifted[i], expected))
        assert sum(matches) >= 1, i
    assert recipes.time_shift_batch(tf.constant(x), 0) is not None


def test_label_smoothing_loss_equals_hand_computation():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], np.float32)
    labels = np.array([0, 2])
    eps = 0.1
    loss = recipes.training_loss(RecipeConfig(label_smoothing=eps))
    target = (1 - eps) * np.eye(3)[labels] + eps / 3
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = float(-(target * logp).sum(axis=1).mean())
    assert float(loss(tf.one_hot(labels, 3), logits)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "bad",
    [{"label_smoothing": 1.0}, {"mixup": -0.1}, {"time_shift": 0.6}, {"ema": 1.0}, {"class_balanced": "yes"}, {"refit": 1},
     {"speed_perturb": [1.0]}, {"speed_perturb": 0.9}, {"ensemble": 1, "refit": True}, {"ensemble": 1}],
)
def test_bad_recipe_values_are_named(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=f"recipe.{key}"):
        recipes.check_recipe(RecipeConfig(**bad))


def test_ensemble_without_the_refit_is_a_valid_recipe():
    recipes.check_recipe(RecipeConfig(ensemble=True))  # one model to serve; fitting serves it alone


@pytest.mark.parametrize("refit,ensemble", [(False, False), (False, True), (True, False), (True, True)])
def test_the_recorded_recipe_says_ensemble_only_where_the_pair_is_served(refit, ensemble):
    from dataclasses import asdict

    recipe = RecipeConfig(refit=refit, ensemble=ensemble, mixup=0.2, swa=0.5)
    record = recipes.recipe_record(recipe)
    assert recipes.serves_pair(recipe) is (refit and ensemble) and record["ensemble"] is (refit and ensemble)
    assert {k: v for k, v in record.items() if k != "ensemble"} == {k: v for k, v in asdict(recipe).items() if k != "ensemble"}
    assert recipes.serves_pair(None) is False


def test_class_balanced_batches_draw_classes_uniformly(fold1):
    labels = fold1.labels("train")
    ds = fold1.dataset("train", 4, shuffle=True, balanced=True, seed=0)
    drawn = np.concatenate([y.numpy() for _ in range(60) for _, y in ds])
    assert len(drawn) == 60 * len(labels)  # one pass per epoch: as many examples as the part holds
    counts = np.bincount(drawn, minlength=len(fold1.classes)) / len(drawn)
    present = np.unique(labels)
    np.testing.assert_allclose(counts[present], 1.0 / len(present), atol=0.04)


def test_recipe_train_dataset_yields_one_hot_targets(fold1):
    ds = recipes.train_dataset(fold1, 4, RecipeConfig(), augment=False)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    y = np.concatenate(ys)
    assert y.shape == (fold1.size("train"), len(fold1.classes))
    np.testing.assert_array_equal(np.sort(y.argmax(axis=1)), np.sort(fold1.labels("train")))


def test_fit_fold_with_ema_keeps_the_averaged_weights(tmp_path, fold1, mini_config):
    from emodarts_tf.evaluation.fitting import fit_fold
    from emodarts_tf.evaluation.model_dir import load_model_dir
    from eval_helpers import standin_builder, standin_info

    recipe = RecipeConfig(ema=0.9, label_smoothing=0.1, mixup=0.2, time_shift=0.1, class_balanced=True)
    metrics = fit_fold(standin_builder(fold1.input_shape, len(fold1.classes)), fold1, tmp_path / "f", epochs=2,
                       batch_size=4, optimizer=keras.optimizers.SGD(0.05), recipe=recipe,
                       extra_info=standin_info(mini_config))  # fmt: skip
    history = json.loads((tmp_path / "f" / "history.json").read_text())
    assert len(history) == 2 and metrics["best_epoch"] in (1, 2)
    # The saved model reproduces the selected epoch's validation UA: the EMA weights were kept.
    trained = load_model_dir(tmp_path / "f")
    predicted = trained.probabilities(fold1_raw(fold1, "val")).argmax(axis=1)
    from emodarts_tf.evaluation.metrics import classification_metrics

    again = classification_metrics(fold1.labels("val"), predicted, len(fold1.classes))
    assert again["ua"] == pytest.approx(metrics["val"]["ua"])


def fold1_raw(fold, part):
    """Un-normalised features of a part (the model directory normalises them itself)."""
    x, _ = fold.arrays(part)
    return (x * fold.std + fold.mean)[..., 0]


def test_refit_optimizer_is_a_fresh_copy_of_the_given_one():
    import keras

    from emodarts_tf.evaluation.fitting import _fresh_optimizer
    from emodarts_tf.evaluation.optimizers import CoupledSGD

    schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10, alpha=0.1)
    for opt in (keras.optimizers.Adam(schedule, beta_1=0.8), CoupledSGD(0.05, momentum=0.9, l2=3e-4)):
        var = keras.Variable(np.ones(3, np.float32))
        opt.apply([keras.ops.ones(3)], [var])  # used: one iteration and slots
        fresh = _fresh_optimizer(opt)
        assert fresh is not opt and type(fresh) is type(opt) and int(fresh.iterations) == 0
        assert fresh.get_config() == opt.get_config()
    factory = lambda steps: keras.optimizers.SGD(0.1)  # noqa: E731
    assert _fresh_optimizer(factory) is factory


def test_recipe_batches_are_the_same_from_run_to_run(fold1):
    from emodarts_tf.config import RecipeConfig

    recipe = RecipeConfig(mixup=0.4, time_shift=0.1)

    def one_pass(ds):
        return [(x.numpy(), y.numpy()) for x, y in ds]

    ds = recipes.train_dataset(fold1, 8, recipe, augment=False)
    first, second = one_pass(ds), one_pass(ds)  # two iterations of one dataset are two epochs: new draws
    again = one_pass(recipes.train_dataset(fold1, 8, recipe, augment=False))
    assert len(first) == len(again) == fold1.steps("train", 8)
    for (xa, ya), (xb, yb) in zip(first, again):  # a new dataset (a new run) makes the same first epoch
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(ya, yb) for (_, ya), (_, yb) in zip(first, second))


def test_swa_start_epoch_counts_the_last_share_of_the_epochs():
    assert recipes.swa_start_epoch(RecipeConfig(), 30) is None
    assert recipes.swa_start_epoch(RecipeConfig(swa=0.5), 30) == 16  # epochs 16..30: 15 = 0.5 x 30
    assert recipes.swa_start_epoch(RecipeConfig(swa=1.0), 30) == 1
    assert recipes.swa_start_epoch(RecipeConfig(swa=0.01), 30) == 30  # at least the last epoch


@pytest.mark.parametrize("bad", [{"swa": 1.5}, {"swa": -0.1}, {"swa": 0.5, "ema": 0.9}])
def test_bad_swa_values_are_named(bad):
    with pytest.raises(ValueError, match="recipe.swa"):
        recipes.check_recipe(RecipeConfig(**bad))


@keras.saving.register_keras_serializable(package="emodarts_tf_tests")
class _CallCounter(keras.layers.Layer):
    """Counts its training calls in an integer variable (as a random-generator state would advance)."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False, name="calls")

    def call(self, x, training=None):
        if training:
            self.calls.assign_add(1)
        return x


def _bn_builder(input_shape, num_classes):
    def build():
        inputs = keras.Input(tuple(input_shape), name="mfcc")
        x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = _CallCounter()(keras.layers.ReLU()(x))
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name="standin_bn")

    return build


class _RecordWeights(keras.callbacks.Callback):
    """The model's weights at the end of every epoch (run after the tracker, which puts them back)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append([np.array(v.numpy()) for v in self.model.weights])


def _assert_weights_are_the_mean_of(model, recorded):
    for i, var in enumerate(model.weights):
        values = np.stack([epoch[i] for epoch in recorded])
        if "float" in str(var.dtype):  # weights and batch-norm moving statistics: the mean
            np.testing.assert_allclose(var.numpy(), values.astype(np.float64).mean(0), rtol=1e-5, atol=1e-7, err_msg=var.path)
        else:  # integer state: the last epoch's
            np.testing.assert_array_equal(var.numpy(), values[-1], err_msg=var.path)


def test_fit_fold_with_swa_keeps_the_mean_of_the_last_epochs(tmp_path, fold1, mini_config):
    from emodarts_tf.evaluation.fitting import fit_fold
    from emodarts_tf.evaluation.metrics import classification_metrics
    from emodarts_tf.evaluation.model_dir import load_model_dir
    from eval_helpers import standin_info

    keras.utils.set_random_seed(5)
    record = _RecordWeights()
    metrics = fit_fold(_bn_builder(fold1.input_shape, len(fold1.classes)), fold1, tmp_path / "f", epochs=4, batch_size=4,
                       optimizer=keras.optimizers.SGD(0.05, momentum=0.9), patience=1, recipe=RecipeConfig(swa=0.5),
                       callbacks=[record], extra_info=standin_info(mini_config))  # fmt: skip
    assert metrics["epochs_run"] == 4 and not metrics["stopped_early"]  # no early stopping under SWA
    assert metrics["swa"] == {"first_epoch": 3, "epochs_averaged": 2} and metrics["best_epoch"] == 4
    trained = load_model_dir(tmp_path / "f")
    _assert_weights_are_the_mean_of(trained.model, record.epochs[2:])
    # The validation figures are the averaged model's, as the saved model reproduces them.
    history = json.loads((tmp_path / "f" / "history.json").read_text())
    assert [r["swa_val_ua"] is None for r in history] == [True, True, False, False]
    assert metrics["val"]["ua"] == pytest.approx(history[-1]["swa_val_ua"])
    predicted = trained.probabilities(fold1_raw(fold1, "val")).argmax(axis=1)
    again = classification_metrics(fold1.labels("val"), predicted, len(fold1.classes))
    assert again["ua"] == pytest.approx(metrics["val"]["ua"])


def test_swa_average_survives_a_kill(tmp_path, fold1, mini_config):
    from emodarts_tf.evaluation.fitting import fit_fold
    from emodarts_tf.evaluation.model_dir import load_model_dir
    from eval_helpers import standin_info

    class Killed(Exception):
        pass

    class KillAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == 3:
                raise Killed()

    kwargs = dict(epochs=5, batch_size=4, optimizer=lambda steps: keras.optimizers.SGD(0.05), recipe=RecipeConfig(swa=0.6),
                  extra_info=standin_info(mini_config))  # fmt: skip
    build = _bn_builder(fold1.input_shape, len(fold1.classes))
    first, second = _RecordWeights(), _RecordWeights()
    keras.utils.set_random_seed(5)
    with pytest.raises(Killed):  # epochs 1-3; the average holds epoch 3
        fit_fold(build, fold1, tmp_path / "f", callbacks=[first, KillAfter()], **kwargs)
    metrics = fit_fold(build, fold1, tmp_path / "f", callbacks=[second], **kwargs)  # epochs 4-5
    assert len(first.epochs) == 3 and len(second.epochs) == 2
    assert metrics["swa"] == {"first_epoch": 3, "epochs_averaged": 3}
    _assert_weights_are_the_mean_of(load_model_dir(tmp_path / "f").model, [first.epochs[2], *second.epochs])


def test_fit_fold_trains_and_refits_on_speed_perturbed_copies(tmp_path, mini_prepared, mini_config):
    """The whole loop with recipe.speed_perturb: the selection run and the refit (train + validation speakers,
    copies included) train, and the copies reach the batches."""
    import dataclasses

    from emodarts_tf.data.pipeline import make_fold_data
    from emodarts_tf.evaluation.fitting import fit_fold
    from eval_helpers import standin_builder, standin_info

    recipe = RecipeConfig(speed_perturb=[0.9, 1.1], refit=True, mixup=0.2)
    config = dataclasses.replace(mini_config, recipe=recipe)
    fold = make_fold_data(mini_prepared, 1, config)
    assert fold._x_speed["train"].shape == (2, fold.size("train"), *fold.input_shape)
    originals = {x.tobytes() for x in fold.arrays("train")[0]}
    drawn = [x.tobytes() for batch, _ in recipes.train_dataset(fold, 4, dataclasses.replace(recipe, mixup=0.0)) for x in batch.numpy()]
    assert any(x not in originals for x in drawn)
    metrics = fit_fold(standin_builder(fold.input_shape, len(fold.classes)), fold, tmp_path / "f", epochs=2,
                       batch_size=4, optimizer=keras.optimizers.SGD(0.05), recipe=recipe,
                       extra_info=standin_info(config))  # fmt: skip
    assert (tmp_path / "f" / "refit").is_dir() and 0.0 <= metrics["ua"] <= 1.0


def test_recipe_fingerprint_leaves_out_speed_perturbation_only_while_it_is_off_and_the_ensemble_always():
    from dataclasses import asdict

    off = recipes.recipe_fingerprint(RecipeConfig(mixup=0.2))
    expected = {k: v for k, v in asdict(RecipeConfig(mixup=0.2)).items() if k not in ("speed_perturb", "ensemble")}
    assert "speed_perturb" not in off and off == expected
    assert recipes.recipe_fingerprint(RecipeConfig(speed_perturb=[0.9]))["speed_perturb"] == [0.9]
    # serving the pair changes nothing in training: a checkpoint written without it resumes with it
    assert recipes.recipe_fingerprint(RecipeConfig(mixup=0.2, refit=True, ensemble=True)) == {**expected, "refit": True}
