"""Is a search learning, and does a non-finite step poison it? Alpha entropy and movement in the alpha
history, the epoch log and TensorBoard; a NaN/inf loss, alpha or weight stops the search before anything of
its epoch is written, the last finite checkpoint stays the one --resume restores, genotypes stay valid.

Searches use the micro space of ``test_runner.py`` on the synthetic demo corpus (seconds each).
"""
from __future__ import annotations

import json
import logging
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from search_helpers import MICRO, TinyBackbone, micro_config, search_dataset

from emodarts_tf.config import load_config
from emodarts_tf.search.callbacks import GenotypeTracker, NonFiniteGuard
from emodarts_tf.search.checkpoint import SearchState
from emodarts_tf.search.diagnostics import NonFiniteError, alpha_entropy, alpha_movement
from emodarts_tf.search.model import SearchModel
from emodarts_tf.search_space.genotype import Genotype

KINDS = ("normal", "reduce", "seq")


def _config(cache, *overrides):
    return micro_config(cache, *overrides)


def _checkpoint_tensors(fold_dir):
    path = tf.train.latest_checkpoint(str(fold_dir / "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    names = [n for n, _ in tf.train.list_variables(path) if n.startswith(("model/", "w_optimizer/", "a_optimizer/"))]
    return path, {n: reader.get_tensor(n) for n in names}


def _scalars(directory) -> dict:
    """``{tag: {step: value}}`` of the scalar summaries of every event file under ``directory``."""
    out = {}
    for path in sorted(directory.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return out


class Poison(keras.callbacks.Callback):
    """Make a variable non-finite at a given (1-based) epoch and step: at the step's start (its loss is
    then non-finite) or at its end (after the step's checks: only the end-of-epoch check can see it)."""

    def __init__(self, epoch, step, variable="weight", when="begin", value=math.inf):
        super().__init__()
        self.epoch, self.step, self.variable, self.when, self.value = epoch, step, variable, when, value
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def _poison(self, batch):
        if (self._epoch, batch + 1) != (self.epoch, self.step):
            return
        v = self.model.arch_variables[2] if self.variable == "alpha" else self.model.weight_variables[0]
        v.assign(tf.fill(v.shape, tf.constant(self.value, v.dtype)))

    def on_train_batch_begin(self, batch, logs=None):
        if self.when == "begin":
            self._poison(batch)

    def on_train_batch_end(self, batch, logs=None):
        if self.when == "end":
            self._poison(batch)


def _check_outputs_valid(fold_dir, epochs_done):
    """Genotype files load (validated), nothing of a later epoch exists, the history stops at epochs_done."""
    history = json.loads((fold_dir / "alpha_history.json").read_text())
    assert [e["epoch"] for e in history] == list(range(1, epochs_done + 1))
    for entry in history:
        for kind in KINDS:
            assert np.isfinite(entry["weights"][kind]).all()
    for name in ("genotype.json", "genotype_best.json"):
        assert Genotype.load(fold_dir / name).meta["epoch"] <= epochs_done
    assert sorted(p.name for p in (fold_dir / "genotypes").iterdir()) == \
        [f"epoch_{e:03d}.json" for e in range(1, epochs_done + 1)]  # fmt: skip
    for path in (fold_dir / "genotypes").iterdir():
        Genotype.load(path)
    path, tensors = _checkpoint_tensors(fold_dir)
    assert path.endswith(f"ckpt-{epochs_done}")
    assert tensors and all(np.isfinite(t).all() for t in tensors.values() if t.dtype.kind == "f")


# ----------------------------------------------------------------------------------------- entropy
def test_search_records_alpha_entropy_and_movement(tmp_path, demo_cache, demo_prepared, caplog):
    from emodarts_tf.search.runner import run_search

    config = _config(demo_cache, "search.epochs=2", "search.warmup_epochs=1", "search.alpha_lr=0.05",
                     "search.alpha_budget=null")
    with caplog.at_level(logging.INFO, logger="emodarts_tf"):
        run_search(config, tmp_path, 1, prepared=demo_prepared)
    fold_dir = tmp_path / "fold1"
    history = json.loads((fold_dir / "alpha_history.json").read_text())
    assert [e["epoch"] for e in history] == [1, 2]
    first_weights = {k: np.asarray(v) for k, v in history[0]["weights"].items()}
    for entry in history:
        weights = {k: np.asarray(v) for k, v in entry["weights"].items()}
        expected = alpha_entropy(weights)
        assert set(entry["entropy"]) == set(KINDS) == set(entry["moved"])
        for kind in KINDS:
            assert set(entry["entropy"][kind]) == {"mean", "normalized"}
            assert entry["entropy"][kind]["mean"] == pytest.approx(expected[kind]["mean"], abs=1e-5)
            assert entry["entropy"][kind]["normalized"] == pytest.approx(expected[kind]["normalized"], abs=1e-5)
            assert 0.9 < entry["entropy"][kind]["normalized"] <= 1.0
    # Epoch 1 is warm-up: the alphas have not moved from the seeded start (recomputed exactly).
    assert history[0]["alpha_active"] is False and history[0]["moved"] == {k: 0.0 for k in KINDS}
    # Epoch 2 moved them (Adam 0.05 for 2 steps), by the difference of the recorded weights.
    moved = alpha_movement({k: np.asarray(v) for k, v in history[1]["weights"].items()}, first_weights)
    for kind in KINDS:
        assert history[1]["moved"][kind] > 1e-4
        assert history[1]["moved"][kind] == pytest.approx(moved[kind], abs=2e-6)
        assert history[1]["entropy"][kind]["mean"] < history[0]["entropy"][kind]["mean"]

    # TensorBoard: the alpha scalars beside Keras' train/ and validation/ runs, step = 0-based epoch.
    scalars = _scalars(fold_dir / "tensorboard" / "alphas")
    for kind in KINDS:
        for e, entry in enumerate(history):
            assert scalars[f"alpha_entropy/{kind}"][e] == pytest.approx(entry["entropy"][kind]["normalized"], abs=1e-5)
            assert scalars[f"alpha_entropy_nats/{kind}"][e] == pytest.approx(entry["entropy"][kind]["mean"], abs=1e-5)
            assert scalars[f"alpha_moved/{kind}"][e] == pytest.approx(entry["moved"][kind], abs=1e-5)
    assert "epoch_loss" in _scalars(fold_dir / "tensorboard" / "train")

    lines = [r.getMessage() for r in caplog.records if "epoch 2/2:" in r.getMessage()]
    assert len(lines) == 1
    h = history[1]["entropy"]
    assert (f"alpha H normal {h['normal']['normalized']:.4f} reduce {h['reduce']['normalized']:.4f} "
            f"seq {h['seq']['normalized']:.4f} | moved normal ") in lines[0]  # fmt: skip


def test_initial_alpha_weights_are_the_start():
    model = SearchModel(TinyBackbone(), input_shape=(4, 4, 1), seed=7)
    start = model.alpha_weights()
    for a in model.arch_variables:
        a.assign(a + 1.0)  # the start is recomputed from the seed, not read from the variables
    again = model.initial_alpha_weights()
    for kind in KINDS:
        np.testing.assert_array_equal(again[kind], start[kind])


# ------------------------------------------------------------------------------------- non-finite
def test_nonfinite_step_stops_before_its_epoch_is_written_and_resume_continues(tmp_path, demo_cache, demo_prepared):
    from emodarts_tf.search.runner import SearchDivergedError, run_search

    config = _config(demo_cache, "search.epochs=3", "search.warmup_epochs=0")
    with pytest.raises(RuntimeError) as info:
        run_search(config, tmp_path / "nan", 1, prepared=demo_prepared, callbacks=[Poison(epoch=2, step=2)])
    fold_dir = tmp_path / "nan" / "fold1"
    text = str(info.value)
    assert isinstance(info.value, SearchDivergedError) and isinstance(info.value.__cause__, NonFiniteError)
    assert text.startswith(f"{fold_dir}: the search diverged: non-finite values at epoch 2/3, step 2/2 (global step 4)")
    assert "loss inf" in text or "loss nan" in text
    assert "weights (" in text and "ckpt-1 (epoch 1), is the last finite state" in text
    _check_outputs_valid(fold_dir, 1)
    assert list((fold_dir / "tensorboard" / "alphas").rglob("events.out.tfevents.*"))

    # --resume restores the finite epoch-1 state and ends where an uninterrupted run ends.
    resumed = run_search(config, tmp_path / "nan", 1, resume=True, prepared=demo_prepared)
    full = run_search(config, tmp_path / "full", 1, prepared=demo_prepared)
    assert resumed["epochs_done"] == 3 and resumed["final"] == full["final"]
    _, a = _checkpoint_tensors(tmp_path / "full" / "fold1")
    _, b = _checkpoint_tensors(fold_dir)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    _check_outputs_valid(fold_dir, 3)


def test_nonfinite_alphas_at_the_end_of_the_last_epoch_write_no_genotype(tmp_path, demo_cache, demo_prepared):
    """The issue's case: the last step leaves NaN alphas with a finite loss; formerly genotype.json got
    empty nodes ('node has no incoming edge' on load) and the NaN state became the latest checkpoint."""
    from emodarts_tf.search.runner import run_search

    config = _config(demo_cache, "search.epochs=2", "search.warmup_epochs=0")
    poison = Poison(epoch=2, step=2, variable="alpha", when="end", value=math.nan)
    with pytest.raises(RuntimeError, match=r"non-finite values after epoch 2/2 \(global step 4\): alphas \(1 variable: "
                                           r"search_model/alpha_seq\)"):  # fmt: skip
        run_search(config, tmp_path, 1, prepared=demo_prepared, callbacks=[poison])
    _check_outputs_valid(tmp_path / "fold1", 1)


def test_cli_reports_a_diverged_search_in_one_line(tmp_path, demo_cache, demo_prepared, caplog):
    from emodarts_tf.commands.search import main

    out = tmp_path / "search"
    args = ["--data", "demo", "--cache", str(demo_cache), "--out", str(out), "--fold", "1", "--epochs", "1",
            "--set", "search.warmup_epochs=0", "--set", "search.w_lr=1.0e+30"]  # fmt: skip
    for item in MICRO:
        args += ["--set", item]
    with caplog.at_level(logging.INFO):
        assert main(args) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith(f"{out / 'fold1'}: the search diverged: non-finite values at epoch 1/1, step ")
    assert "no epoch finished, so there is no checkpoint to resume" in errors[0]
    assert not (out / "fold1" / "genotype.json").exists() and not (out / "fold1" / "checkpoints").exists()


# --------------------------------------------------------------------- the guards, on a tiny model
def _tiny_state(tmp_path):
    model = SearchModel(TinyBackbone(), input_shape=(4, 4, 1), seed=0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.03, beta_1=0.5))
    return model, SearchState(model, tmp_path / "checkpoints")


def test_checkpoints_hold_only_finite_states(tmp_path, caplog):
    model, state = _tiny_state(tmp_path)
    ds, steps = search_dataset(32, 16)
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    good = state.save(1)
    expected = [v.numpy().copy() for v in model.weights]
    kernel = model.weight_variables[0]
    kernel.assign(tf.fill(kernel.shape, np.nan))
    with pytest.raises(NonFiniteError, match=r"not checkpointing epoch 2: non-finite values in weights \(1 variable: "):
        state.save(2)
    assert state.latest == good and state.last_finite == good
    # A non-finite latest checkpoint (as older versions wrote): restore falls back to the finite one.
    state.epoch.assign(2)
    state.manager.save(checkpoint_number=2)
    assert state.latest.endswith("ckpt-2")
    model2, state2 = _tiny_state(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert state2.restore() == 1
    assert "ckpt-2 (epoch 2) holds non-finite values in weights" in caplog.text
    assert state2.last_finite == good
    for v, e in zip(model2.weights, expected):
        np.testing.assert_array_equal(v.numpy(), e)
    with pytest.raises(ValueError, match="non-finite"):
        state2.restore(state.latest)


def test_guard_and_genotype_tracker_refuse_nonfinite_alphas(tmp_path):
    model, state = _tiny_state(tmp_path)
    alpha = model.arch_variables[0]
    alpha.assign(tf.fill(alpha.shape, np.inf))
    guard = NonFiniteGuard()
    guard.set_model(model)
    guard.set_params({"epochs": 5, "steps": 10})
    guard.on_epoch_begin(2)
    with pytest.raises(NonFiniteError, match=r"at epoch 3/5, step 4/10 \(global step 24\): alphas \(1 variable: "
                                             r"search_model/alpha_normal\)"):  # fmt: skip
        guard.on_train_batch_end(3, {"loss": 0.5, "alpha_loss": 0.7})
    alpha.assign(tf.zeros(alpha.shape))
    with pytest.raises(NonFiniteError, match=r"at epoch 3/5, step 1/10 \(global step 21\): alpha loss nan$"):
        guard.on_train_batch_end(0, {"loss": 0.5, "alpha_loss": float("nan")})
    guard.on_train_batch_end(0, {"loss": 0.5, "alpha_loss": 0.7})
    guard.on_epoch_end(2, {"loss": 0.5})

    alpha.assign(tf.fill(alpha.shape, np.nan))
    tracker = GenotypeTracker(tmp_path / "out", state, max_skip=2, meta={})
    tracker.set_model(model)
    with pytest.raises(NonFiniteError, match="epoch 1: non-finite alphas \\(normal\\); no genotype"):
        tracker.on_epoch_end(0, {})
    assert not (tmp_path / "out").exists()
