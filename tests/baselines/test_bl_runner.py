"""The tuner loop end to end on tiny in-memory folds: validation-only objective, resume, bounded memory."""
from __future__ import annotations

import gc
import json

import keras
import pytest

from emodarts_tf.baselines import runner
from emodarts_tf.baselines.hypermodels import make_hypermodel
from emodarts_tf.baselines.runner import distributed_role, run_baseline, tune_fold

from baseline_helpers import SHAPE, StandInFoldData


def _never_test():
    raise AssertionError("the test part was read during tuning")


class CountingFits:
    """Wraps a hypermodel's fit to count the trials that actually train."""

    def __init__(self, hypermodel):
        self.count = 0
        original = hypermodel.fit

        def fit(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        hypermodel.fit = fit


def test_tune_fold_uses_validation_only_and_resumes(tmp_path, tiny_config):
    data = StandInFoldData(test_guard=_never_test)
    bl = tiny_config.baseline
    hm = make_hypermodel("cnn", SHAPE, 4, space_file=bl.space_file)
    fits = CountingFits(hm)
    best = tune_fold(hm, data, tmp_path / "fold1", bl, seed=0)
    assert fits.count == 2 and best["trials_completed"] == 2
    assert 0.0 <= best["val_ua"] <= 1.0 and "conv_blocks" in best["values"]
    assert "test" not in data.calls and {"train", "val"} <= set(data.calls)
    assert (tmp_path / "fold1" / "tuner" / "cnn" / "oracle.json").is_file()
    assert json.loads((tmp_path / "fold1" / "tuning_time.json").read_text())["seconds"] > 0

    # A rerun into the same folder resumes: finished trials are not trained again ...
    hm2 = make_hypermodel("cnn", SHAPE, 4, space_file=bl.space_file)
    fits2 = CountingFits(hm2)
    again = tune_fold(hm2, data, tmp_path / "fold1", bl, seed=0)
    # (the same best score; with tied scores Keras Tuner may name another of the tied trials)
    assert fits2.count == 0 and again["val_ua"] == best["val_ua"] and again["trials_completed"] == 2
    # ... and a larger budget runs only the missing trial.
    bl.trials = 3
    hm3 = make_hypermodel("cnn", SHAPE, 4, space_file=bl.space_file)
    fits3 = CountingFits(hm3)
    third = tune_fold(hm3, data, tmp_path / "fold1", bl, seed=0)
    assert fits3.count == 1 and third["trials_completed"] == 3


def _census() -> tuple[int, int, int]:
    """Live traced graphs, Keras layers and Python objects."""
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    objects = gc.get_objects()
    # type(o), not isinstance(o, ...): isinstance reads o.__class__, which raises ReferenceError for a
    # weakref.proxy whose object is gone (earlier tests in the same process can leave such proxies).
    types = [type(o) for o in objects]
    graphs = sum(1 for t in types if issubclass(t, FuncGraph))
    layers = sum(1 for t in types if issubclass(t, keras.layers.Layer))
    return graphs, layers, len(objects)


class Census(keras.callbacks.Callback):
    """Takes a census when each trial starts training (the callback is deep-copied into every trial)."""

    counts: list = []

    def on_train_begin(self, logs=None):
        Census.counts.append(_census())


def test_memory_does_not_grow_across_trials(tmp_path, tiny_config, monkeypatch):
    bl = tiny_config.baseline
    bl.trials = 5
    data = StandInFoldData(test_guard=_never_test)
    hm = make_hypermodel("cnn", SHAPE, 4, space_file=bl.space_file)
    hm.space["conv_blocks"] = {"kind": "fixed", "value": 1}  # same layers every trial; only sizes and rates vary
    Census.counts = []
    monkeypatch.setattr(runner, "_tuning_callbacks", lambda config: [Census()])
    tune_fold(hm, data, tmp_path / "fold1", bl, seed=0)
    counts = Census.counts
    assert len(counts) == 5
    graphs = [c[0] for c in counts]
    layers = [c[1] for c in counts]
    objects = [c[2] for c in counts]
    # Every trial starts with the same number of traced graphs and layers alive: nothing of earlier
    # trials survives (without releasing the custom-gradient registry, each trial left ~30 graphs behind).
    assert len(set(graphs)) == 1 and len(set(layers)) == 1, counts
    assert max(objects[1:]) - min(objects[1:]) < 0.01 * objects[1], counts


def test_run_baseline_end_to_end_and_rerun(tmp_path, tiny_config):
    out = tmp_path / "run"
    made = {}

    def factory(k):
        guard = None

        def guard():
            # the test part is read only after the fold's tuning result is final
            assert (out / f"fold{k}" / "best_hp.json").is_file(), "test part read before tuning finished"

        made[k] = StandInFoldData(index=k, test_guard=guard)
        return made[k]

    summary = run_baseline(tiny_config, out, folds=[1, 2], fold_data_factory=factory)
    assert summary["kind"] == "baseline:cnn" and summary["folds"] == [1, 2]
    for key in ("ua", "wa", "f1"):
        assert set(summary[key]) == {"mean", "std", "per_fold"}
        assert set(summary[key]["per_fold"]) == {"1", "2"}
    assert set(summary["compute_s"]) == {"tuning", "train"} and summary["compute_s"]["tuning"] > 0
    assert summary["params"] > 0 and summary["flops"] > 0
    for k in (1, 2):
        fold = out / f"fold{k}"
        metrics = json.loads((fold / "metrics.json").read_text())
        assert summary["ua"]["per_fold"][str(k)] == pytest.approx(metrics["ua"])
        best = json.loads((fold / "best_hp.json").read_text())
        assert best["family"] == "cnn" and best["params"] > 0
        assert made[k].calls.count("test") == 1
        assert (fold / "model.keras").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["ua"]["mean"] == pytest.approx(summary["ua"]["mean"])

    # Rerun: everything is finished, nothing is tuned, trained or read again.
    made.clear()
    again = run_baseline(tiny_config, out, folds=[1, 2], fold_data_factory=factory)
    assert made == {} and again["ua"] == summary["ua"]

    # Another family into the same folder is refused.
    tiny_config.baseline.family = "lstm"
    with pytest.raises(ValueError, match="another baseline run"):
        run_baseline(tiny_config, out, folds=[1], fold_data_factory=factory)


def test_distributed_role_from_environment(monkeypatch):
    for var in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(var, raising=False)
    assert distributed_role() == "single"
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    with pytest.raises(ValueError, match="KERASTUNER_ORACLE_PORT"):
        distributed_role()
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert distributed_role() == "chief"
    with runner._fold_oracle_port(3) as port:
        assert port == 8002 and runner.os.environ["KERASTUNER_ORACLE_PORT"] == "8002"
    assert runner.os.environ["KERASTUNER_ORACLE_PORT"] == "8000"
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner1")
    assert distributed_role() == "worker"


def test_bad_baseline_config(tiny_config):
    tiny_config.baseline.tuner = "grid"
    with pytest.raises(ValueError, match="baseline.tuner"):
        runner.check_baseline_config(tiny_config.baseline)


@pytest.mark.slow
def test_distributed_chief_and_worker(tmp_path, tiny_space_file, project_root):
    """Keras Tuner's chief/worker mode through our runner: the worker runs the trials and writes nothing in
    the chief's folder; the chief serves the oracle, then retrains and writes the summary."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = project_root / "tests" / "baselines" / "baseline_dist_process.py"
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port),
           "PYTHONPATH": str(project_root)}
    chief_out, worker_out = tmp_path / "chief", tmp_path / "worker"
    chief = subprocess.Popen([sys.executable, str(script), str(chief_out), str(tiny_space_file)],
                             env={**env, "KERASTUNER_TUNER_ID": "chief"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = subprocess.Popen([sys.executable, str(script), str(worker_out), str(tiny_space_file)],
                              env={**env, "KERASTUNER_TUNER_ID": "tuner0"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        worker_log, _ = worker.communicate(timeout=240)
        chief_log, _ = chief.communicate(timeout=120)
    finally:
        for proc in (chief, worker):
            if proc.poll() is None:
                proc.kill()
    assert worker.returncode == 0, worker_log[-3000:]
    assert chief.returncode == 0, chief_log[-3000:]
    assert "SUMMARY null" in worker_log  # a worker returns no summary ...
    assert not (worker_out / "summary.json").exists() and not (worker_out / "fold1" / "best_hp.json").exists()
    summary = json.loads(chief_log.split("SUMMARY ", 1)[1].splitlines()[0])  # ... the chief does
    assert summary["kind"] == "baseline:cnn" and summary["folds"] == [1]
    best = json.loads((chief_out / "fold1" / "best_hp.json").read_text())
    assert best["trials_completed"] == 2
    assert (chief_out / "fold1" / "metrics.json").is_file()


@pytest.mark.parametrize("kind", ["bayesian", "hyperband"])
def test_other_tuner_kinds(tmp_path, tiny_config, kind):
    bl = tiny_config.baseline
    bl.tuner, bl.tuning_epochs = kind, 2
    data = StandInFoldData(test_guard=_never_test)
    hm = make_hypermodel("lstm", SHAPE, 4, space_file=bl.space_file)
    best = tune_fold(hm, data, tmp_path / "fold1", bl, seed=0)
    assert 1 <= best["trials_completed"] <= 2
    assert not any(k.startswith("tuner/") for k in best["values"]) and "lstm_units" in best["values"]


def test_failing_trials_give_a_clear_error(tmp_path, tiny_config):
    bl = tiny_config.baseline
    bl.trials = 4
    hm = make_hypermodel("cnn", SHAPE, 4, space_file=bl.space_file)

    def broken(*args, **kwargs):
        raise ValueError("synthetic failure in fit")

    hm.fit = broken
    with pytest.raises(ValueError, match="consecutive failed trials.*synthetic failure"):
        tune_fold(hm, StandInFoldData(test_guard=_never_test), tmp_path / "fold1", bl, seed=0)


def test_a_run_saved_before_new_feature_settings_still_resumes(tmp_path):
    """baseline_run.json of a run saved before features.kind / window_ms / hop_ms / freq_bins existed is the
    same run; another MFCC size is not."""
    import dataclasses
    import json

    from emodarts_tf.baselines.runner import RUN_FILE, _check_run_dir
    from emodarts_tf.config import load_config

    config = load_config("cpu", ["features.kind=mfcc", "features.n_mels=64"])  # the maps of the runs saved then
    _check_run_dir(tmp_path, config)
    saved = json.loads((tmp_path / RUN_FILE).read_text())
    for key in ("kind", "window_ms", "hop_ms", "freq_bins"):
        del saved["features"][key]
    (tmp_path / RUN_FILE).write_text(json.dumps(saved))
    _check_run_dir(tmp_path, config)  # no error
    other = dataclasses.replace(config, features=dataclasses.replace(config.features, n_mfcc=20))
    with pytest.raises(ValueError, match="holds another baseline run"):
        _check_run_dir(tmp_path, other)
    ignored = dataclasses.replace(config, features=dataclasses.replace(config.features, window_ms=32.0))
    _check_run_dir(tmp_path, ignored)  # an MFCC map does not read the spectrogram's window
