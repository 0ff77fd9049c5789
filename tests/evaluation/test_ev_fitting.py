"""``fit_fold`` on real EmoDB features (a stand-in CNN): selection on validation UA, one test pass,
the fold directory, resume after an interruption, and checkpoints that do not fit the model."""
from __future__ import annotations

import json
import logging

import keras
import numpy as np
import pytest

from emodarts_tf.evaluation.fitting import CheckpointMismatchError, fit_fold
from emodarts_tf.evaluation.metrics import classification_metrics
from emodarts_tf.evaluation.model_dir import load_model_dir
from eval_helpers import standin_builder, standin_info


class _Interrupt(Exception):
    pass


class _StopAfter(keras.callbacks.Callback):
    """Simulates a kill after the checkpoint of epoch ``n`` was written."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.n:
            raise _Interrupt(f"killed after epoch {self.n}")


def test_fold_directory_and_metrics(standin_run, fold1, mini_prepared):
    fold_dir, metrics = standin_run
    for name in ("model.keras", "model_info.json", "normalization.npz", "metrics.json", "history.csv",
                 "history.json", "learning_curves.png", "confusion_matrix.png"):  # fmt: skip
        assert (fold_dir / name).is_file(), name
    assert not (fold_dir / "checkpoint").exists()
    assert json.loads((fold_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["n"] == len(fold1.test_paths) == 8
    assert metrics["epochs_run"] == 3 and 1 <= metrics["best_epoch"] <= 3
    assert metrics["test_speakers"] == ["03"] and metrics["val_speakers"] == fold1.val_speakers
    assert not set(metrics["val_speakers"]) & set(metrics["test_speakers"])

    # The saved model is the best-on-validation one and the test metrics come from one confusion matrix
    # over the whole test part: recompute both from raw features with the model directory alone.
    trained = load_model_dir(fold_dir)
    for part, paths, expected in (("test", fold1.test_paths, metrics), ("val", fold1.val_paths, metrics["val"])):
        raw = mini_prepared.features(paths)
        labels = mini_prepared.labels(paths)
        predicted = trained.probabilities(raw).argmax(axis=1)
        again = classification_metrics(labels, predicted, len(fold1.classes))
        assert again["ua"] == pytest.approx(expected["ua"]), part
        assert again["wa"] == pytest.approx(expected["wa"]), part
    history = json.loads((fold_dir / "history.json").read_text())
    best = max(history, key=lambda r: (r["val_ua"], -r["epoch"]))
    assert best["epoch"] == metrics["best_epoch"]
    info = trained.info
    assert info["fold"]["test_speakers"] == ["03"] and info["classes"] == fold1.classes
    np.testing.assert_allclose(trained.mean, fold1.mean)


def test_resume_after_interruption_continues_the_optimisation(tmp_path, fold1, mini_config):
    build = standin_builder(fold1.input_shape, len(fold1.classes))

    def optimizer(steps):
        schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=4 * steps, alpha=0.1)
        return keras.optimizers.SGD(schedule, momentum=0.9)

    kwargs = dict(epochs=4, batch_size=8, optimizer=optimizer, patience=None, extra_info=standin_info(mini_config),
                  fingerprint={"model": "standin-4"})  # fmt: skip
    keras.utils.set_random_seed(3)
    straight = fit_fold(build, fold1, tmp_path / "straight", **kwargs)

    keras.utils.set_random_seed(3)
    with pytest.raises(_Interrupt):
        fit_fold(build, fold1, tmp_path / "resumed", callbacks=[_StopAfter(2)], **kwargs)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert not (tmp_path / "resumed" / "metrics.json").exists()

    keras.utils.set_random_seed(99)  # another initialisation: the checkpoint must override it
    resumed = fit_fold(build, fold1, tmp_path / "resumed", **kwargs)
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    reference = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert resumed["epochs_run"] == 4
    # Same learning-rate schedule position (optimizer iterations restored), same first two epochs.
    assert [r["lr"] for r in history] == pytest.approx([r["lr"] for r in reference])
    assert [r["val_ua"] for r in history[:2]] == pytest.approx([r["val_ua"] for r in reference[:2]])
    assert straight["epochs_run"] == 4

    # A finished fold is not trained again.
    again = fit_fold(build, fold1, tmp_path / "resumed", **kwargs)
    assert again == json.loads((tmp_path / "resumed" / "metrics.json").read_text())


def test_checkpoint_of_another_model_or_config_is_refused(tmp_path, fold1, mini_config):
    small = standin_builder(fold1.input_shape, len(fold1.classes), width=4)
    wide = standin_builder(fold1.input_shape, len(fold1.classes), width=6)
    kwargs = dict(epochs=3, batch_size=8, patience=None, extra_info=standin_info(mini_config))
    with pytest.raises(_Interrupt):
        fit_fold(small, fold1, tmp_path / "f", optimizer=keras.optimizers.Adam(1e-3), callbacks=[_StopAfter(1)],
                 fingerprint={"space": {"width": 4}}, **kwargs)  # fmt: skip
    # The config says width 6 now: the differing key is named.
    with pytest.raises(CheckpointMismatchError, match=r"differing: space\.width"):
        fit_fold(wide, fold1, tmp_path / "f", optimizer=keras.optimizers.Adam(1e-3),
                 fingerprint={"space": {"width": 6}}, **kwargs)  # fmt: skip
    # Same fingerprint but another network: the variable and both shapes are named.
    with pytest.raises(CheckpointMismatchError, match=r"has shape \(3, 3, 1, 4\) in the checkpoint but \(3, 3, 1, 6\)"):
        fit_fold(wide, fold1, tmp_path / "f", optimizer=keras.optimizers.Adam(1e-3),
                 fingerprint={"space": {"width": 4}}, **kwargs)  # fmt: skip


def test_bad_arguments(tmp_path, fold1):
    build = standin_builder(fold1.input_shape, 3)  # the corpus has 4 classes
    with pytest.raises(ValueError, match="outputs 3 logits, the corpus has 4 classes"):
        fit_fold(build, fold1, tmp_path / "x", epochs=1, batch_size=8, optimizer=keras.optimizers.Adam(),
                 extra_info={"features": {}})  # fmt: skip
    with pytest.raises(ValueError, match="epochs: expected an integer >= 1"):
        fit_fold(build, fold1, tmp_path / "x", epochs=0, batch_size=8, optimizer=keras.optimizers.Adam())


def _two_head_builder(input_shape, num_classes: int, extra: str = "aux_extra"):
    """The stand-in CNN with a second classifier ``extra`` on the same features."""

    def build():
        inputs = keras.Input(tuple(input_shape), name="mfcc")
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, {"logits": keras.layers.Dense(num_classes, name="logits")(x),
                                    extra: keras.layers.Dense(num_classes, name=extra)(x)}, name="two_heads")

    return build


def test_auxiliary_outputs_are_trained_with_their_loss_weight_and_left_out_of_the_saved_model(tmp_path, fold1,
                                                                                             mini_config):
    build = _two_head_builder(fold1.input_shape, 4)
    with pytest.raises(ValueError, match=r"output\(s\) \['aux_extra'\] have no loss weight"):
        fit_fold(build, fold1, tmp_path / "none", epochs=1, batch_size=8, optimizer=keras.optimizers.Adam())
    with pytest.raises(ValueError, match=r"unexpected output\(s\) \['extra'\]"):
        fit_fold(_two_head_builder(fold1.input_shape, 4, "extra"), fold1, tmp_path / "bad", epochs=1, batch_size=8,
                 optimizer=keras.optimizers.Adam())
    moved = {}
    for weight in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        record = _KernelAtEnd("aux_extra")
        fit_fold(build, fold1, tmp_path / f"w{weight}", epochs=1, batch_size=8, optimizer=keras.optimizers.Adam(1e-2),
                 output_weights={"aux_extra": weight}, callbacks=[record], extra_info=standin_info(mini_config))
        assert not isinstance(load_model_dir(tmp_path / f"w{weight}").model.output, dict)  # the logits only
        moved[weight] = float(np.abs(record.end - record.start).max())
    # with weight 0 no gradient reaches the extra head; with weight 1 it is trained
    assert moved[0.0] == 0.0 and moved[1.0] > 1e-3


class _KernelAtEnd(keras.callbacks.Callback):
    """The kernel of one layer at the start and at the end of training."""

    def __init__(self, layer: str):
        super().__init__()
        self.layer = layer

    def on_train_begin(self, logs=None):
        self.start = np.array(self.model.get_layer(self.layer).kernel)

    def on_train_end(self, logs=None):
        self.end = np.array(self.model.get_layer(self.layer).kernel)


class _InRefit(keras.callbacks.Callback):
    """Counts ``fit_fold``'s calls of ``fit``: the second one is the refit."""

    def __init__(self):
        super().__init__()
        self.fits = 0

    def on_train_begin(self, logs=None):
        self.fits += 1

    @property
    def in_refit(self) -> bool:
        return self.fits == 2


class _StopInSecondFit(_InRefit):
    """Simulates a kill after epoch ``n`` of the second ``fit`` (the refit)."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def on_epoch_end(self, epoch, logs=None):
        if self.in_refit and epoch + 1 == self.n:
            raise _Interrupt(f"killed after refit epoch {self.n}")


def test_refit_trains_on_train_and_validation_speakers_for_the_selected_epochs(tmp_path, fold1, mini_config, mini_prepared,
                                                                            caplog):
    from emodarts_tf.config import RecipeConfig

    build = standin_builder(fold1.input_shape, len(fold1.classes))

    def optimizer(steps):
        return keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.05, decay_steps=4 * steps, alpha=0.1))

    kwargs = dict(epochs=4, batch_size=8, optimizer=optimizer, patience=None, extra_info=standin_info(mini_config),
                  recipe=RecipeConfig(refit=True), fingerprint={"model": "standin-refit"})  # fmt: skip
    keras.utils.set_random_seed(5)
    with pytest.raises(_Interrupt):
        fit_fold(build, fold1, tmp_path / "fold1", callbacks=[_StopInSecondFit(1)], **kwargs)
    assert not (tmp_path / "fold1" / "metrics.json").exists()
    with caplog.at_level(logging.INFO, logger="emodarts_tf.evaluation"):
        metrics = fit_fold(build, fold1, tmp_path / "fold1", **kwargs)  # resumes inside the refit
    # the refit's lines say that their validation figures are on speakers it trains on
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("fold 1 refit (validation speakers trained on)") for m in messages)
    assert not any(m.startswith("fold 1 refit ") and "trained on" not in m.split(":")[0] for m in messages)

    best = metrics["best_epoch"]
    refit_history = json.loads((tmp_path / "fold1" / "refit" / "history.json").read_text())
    history = json.loads((tmp_path / "fold1" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert [r["epoch"] for r in refit_history] == list(range(1, best + 1))
    n_train, n_val = fold1.size("train"), fold1.size("val")
    assert metrics["refit"]["epochs"] == best and metrics["refit"]["n_train"] == n_train + n_val
    # The schedule is the selection run's, epoch for epoch, although an epoch now holds more steps.
    assert [r["lr"] for r in refit_history] == pytest.approx([r["lr"] for r in history[:best]])
    assert not (tmp_path / "fold1" / "refit" / "checkpoint").exists()

    # The refit model is the one saved and tested: recompute the test figures from the model directory.
    trained = load_model_dir(tmp_path / "fold1")
    assert trained.info["refit"] == metrics["refit"]
    predicted = trained.probabilities(mini_prepared.features(fold1.test_paths)).argmax(axis=1)
    again = classification_metrics(mini_prepared.labels(fold1.test_paths), predicted, len(fold1.classes))
    assert again["ua"] == pytest.approx(metrics["ua"]) and again["wa"] == pytest.approx(metrics["wa"])


def _predictions(path) -> tuple[list, np.ndarray]:
    """The paths and class probabilities of a ``predictions*.csv``."""
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["path"] for r in rows], np.array([[float(r[c]) for c in rows[0] if c.startswith("p_")] for r in rows])


def _probabilities(path) -> np.ndarray:
    return _predictions(path)[1]


def test_refit_keeps_the_first_models_test_predictions(tmp_path, fold1, mini_config):
    """``predictions_selection.csv`` holds the test predictions of the model that the same fit without the refit
    keeps, also when the run was killed inside the refit and resumed; ``refit.selection_test`` scores them."""
    from emodarts_tf.config import RecipeConfig

    build = standin_builder(fold1.input_shape, len(fold1.classes))
    kwargs = dict(epochs=3, batch_size=8, optimizer=lambda steps: keras.optimizers.SGD(0.05), patience=None,
                  extra_info=standin_info(mini_config))  # fmt: skip

    keras.utils.set_random_seed(5)
    alone = fit_fold(build, fold1, tmp_path / "alone", recipe=RecipeConfig(refit=False), fingerprint={"m": "a"}, **kwargs)
    keras.utils.set_random_seed(5)
    with pytest.raises(_Interrupt):
        fit_fold(build, fold1, tmp_path / "refit", recipe=RecipeConfig(refit=True), fingerprint={"m": "r"},
                 callbacks=[_StopInSecondFit(1)], **kwargs)  # fmt: skip
    metrics = fit_fold(build, fold1, tmp_path / "refit", recipe=RecipeConfig(refit=True), fingerprint={"m": "r"}, **kwargs)
    (first_paths, first), (paths, expected) = (_predictions(tmp_path / "refit" / "predictions_selection.csv"),
                                               _predictions(tmp_path / "alone" / "predictions.csv"))  # fmt: skip
    assert first_paths == paths == list(fold1.test_paths)
    np.testing.assert_allclose(first, expected, atol=2e-6)
    assert metrics["refit"]["selection_test"] == pytest.approx({k: alone[k] for k in ("ua", "wa", "f1")})
    assert not (tmp_path / "alone" / "predictions_selection.csv").exists()


def test_ensemble_serves_the_mean_of_the_first_models_and_the_refits_probabilities(tmp_path, fold1, mini_config,
                                                                                   mini_prepared):
    """With ``recipe.ensemble`` the saved and tested model is the pair: its probabilities (loaded back from the model
    directory) equal the mean of the first model's (``predictions_selection.csv``) and those of the refit that the
    same fit without the ensemble serves; the training itself is the same."""
    from emodarts_tf.config import RecipeConfig

    build = standin_builder(fold1.input_shape, len(fold1.classes))
    kwargs = dict(epochs=3, batch_size=8, optimizer=lambda steps: keras.optimizers.SGD(0.05), patience=None,
                  extra_info=standin_info(mini_config), fingerprint={"m": "e"})  # fmt: skip

    keras.utils.set_random_seed(5)
    refit = fit_fold(build, fold1, tmp_path / "refit", recipe=RecipeConfig(refit=True), **kwargs)
    keras.utils.set_random_seed(5)
    pair = fit_fold(build, fold1, tmp_path / "pair", recipe=RecipeConfig(refit=True, ensemble=True), **kwargs)
    assert pair["refit"]["ensemble"] is True and refit["refit"]["ensemble"] is False
    assert pair["refit"]["selection_test"] == refit["refit"]["selection_test"]
    expected = (_probabilities(tmp_path / "refit" / "predictions_selection.csv")
                + _probabilities(tmp_path / "refit" / "predictions.csv")) / 2  # fmt: skip
    np.testing.assert_allclose(_probabilities(tmp_path / "pair" / "predictions.csv"), expected, atol=2e-6)
    # the pair's run also keeps the refit alone, which is the other run's served model
    np.testing.assert_allclose(_probabilities(tmp_path / "pair" / "predictions_refit.csv"),
                               _probabilities(tmp_path / "refit" / "predictions.csv"), atol=2e-6)  # fmt: skip
    assert pair["refit"]["refit_test"] == pytest.approx({k: refit[k] for k in ("ua", "wa", "f1")})
    assert "refit_test" not in refit["refit"]
    trained = load_model_dir(tmp_path / "pair")
    np.testing.assert_allclose(trained.probabilities(mini_prepared.features(fold1.test_paths)), expected, atol=2e-6)
    again = classification_metrics(mini_prepared.labels(fold1.test_paths), expected.argmax(axis=1), len(fold1.classes))
    assert again["ua"] == pytest.approx(pair["ua"])


def test_ensemble_without_the_refit_serves_the_one_model(tmp_path, fold1, mini_config, caplog):
    """``recipe.ensemble`` averages the first model with the refit; without the refit there is one model, served
    as a run without the ensemble serves it (so ``--set recipe.refit=false`` works on a config that serves the
    pair). A finished fold resumed under a recipe that serves something else keeps its model, with a warning."""
    from emodarts_tf.config import RecipeConfig

    build = standin_builder(fold1.input_shape, len(fold1.classes))
    kwargs = dict(epochs=2, batch_size=8, optimizer=lambda steps: keras.optimizers.SGD(0.05), patience=None,
                  extra_info=standin_info(mini_config), fingerprint={"m": "o"})  # fmt: skip
    keras.utils.set_random_seed(5)
    plain = fit_fold(build, fold1, tmp_path / "plain", recipe=RecipeConfig(), **kwargs)
    keras.utils.set_random_seed(5)
    flagged = fit_fold(build, fold1, tmp_path / "flagged", recipe=RecipeConfig(ensemble=True), **kwargs)
    assert flagged["refit"] is None and flagged["ua"] == pytest.approx(plain["ua"])
    np.testing.assert_allclose(_probabilities(tmp_path / "flagged" / "predictions.csv"),
                               _probabilities(tmp_path / "plain" / "predictions.csv"), atol=2e-6)  # fmt: skip
    assert not (tmp_path / "flagged" / "predictions_selection.csv").exists()
    with caplog.at_level(logging.WARNING, logger="emodarts_tf.evaluation.fitting"):
        fit_fold(build, fold1, tmp_path / "flagged", recipe=RecipeConfig(ensemble=True), **kwargs)
        assert "finished earlier" not in caplog.text  # the same served model: nothing to warn about
        again = fit_fold(build, fold1, tmp_path / "flagged", recipe=RecipeConfig(refit=True, ensemble=True), **kwargs)
    assert again == flagged
    assert "finished earlier serving one model" in caplog.text and "now serves the first model and the refit" in caplog.text


def test_with_validation_in_training_appends_the_validation_part(fold1):
    merged = fold1.with_validation_in_training()
    x, y = merged.arrays("train")
    np.testing.assert_array_equal(x, np.concatenate([fold1.arrays("train")[0], fold1.arrays("val")[0]]))
    np.testing.assert_array_equal(y, np.concatenate([fold1.labels("train"), fold1.labels("val")]))
    assert merged.train_paths == fold1.train_paths + fold1.val_paths
    np.testing.assert_array_equal(merged.arrays("val")[0], fold1.arrays("val")[0])
    np.testing.assert_array_equal(merged.arrays("test")[0], fold1.arrays("test")[0])
    assert fold1.size("train") + fold1.size("val") == merged.size("train")


class _RefitWeights(_InRefit):
    """The model's weights at the end of every epoch of the second ``fit`` (the refit)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        if self.in_refit:
            self.epochs.append([np.array(w, dtype=np.float64) for w in self.model.weights])


def test_refit_with_weight_averaging_trains_every_epoch_and_keeps_the_refits_average(tmp_path, fold1, mini_config,
                                                                                     mini_prepared):  # fmt: skip
    """With ``recipe.swa`` the epoch count is fixed, so the refit on train + validation speakers runs all of it,
    and the model saved and tested is the mean of the refit's own last epochs' weights."""
    from emodarts_tf.config import RecipeConfig

    build = standin_builder(fold1.input_shape, len(fold1.classes))
    record = _RefitWeights()
    keras.utils.set_random_seed(3)
    metrics = fit_fold(build, fold1, tmp_path / "fold1", epochs=4, batch_size=8, optimizer=lambda steps: keras.optimizers.SGD(0.05),
                       patience=1, extra_info=standin_info(mini_config), recipe=RecipeConfig(refit=True, swa=0.5),
                       fingerprint={"model": "standin-refit-swa"}, callbacks=[record])  # fmt: skip

    refit_history = json.loads((tmp_path / "fold1" / "refit" / "history.json").read_text())
    assert [r["epoch"] for r in refit_history] == [1, 2, 3, 4]  # no early stopping, no selected epoch count
    assert metrics["refit"]["epochs"] == 4
    assert metrics["refit"]["n_train"] == fold1.size("train") + fold1.size("val")
    assert metrics["swa"] == {"first_epoch": 3, "epochs_averaged": 2}
    assert len(record.epochs) == 4

    trained = load_model_dir(tmp_path / "fold1")
    expected = [(a + b) / 2 for a, b in zip(record.epochs[2], record.epochs[3])]  # epochs 3 and 4 of the refit
    assert not all(np.allclose(e, np.asarray(last)) for e, last in zip(expected, record.epochs[3]))
    for got, want in zip(trained.model.weights, expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    predicted = trained.probabilities(mini_prepared.features(fold1.test_paths)).argmax(axis=1)
    again = classification_metrics(mini_prepared.labels(fold1.test_paths), predicted, len(fold1.classes))
    assert again["ua"] == pytest.approx(metrics["ua"])
