"""``cli/train.py`` end to end on the mini EmoDB corpus: a real SIGKILL in the middle of fold 2, then the
same command skips fold 1 and resumes fold 2; the summary; a changed config and a leaking genotype are
refused."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from eval_helpers import TINY_GENOTYPE, tiny_overrides

KILLER = """
import os, signal, sys
from emodarts_tf.evaluation import fold_checkpoint
original = fold_checkpoint.FoldCheckpoint.save
def save(self, state, *args, **kwargs):
    original(self, state, *args, **kwargs)
    if self.dir.parent.name == "fold2" and state["epoch"] == 2:
        # fold 1 is finished and fold 2's checkpoint of epoch 2 is on disk: die without any clean-up
        os.kill(os.getpid(), signal.SIGKILL)
fold_checkpoint.FoldCheckpoint.save = save
from emodarts_tf.commands.train import main
sys.exit(main(sys.argv[1:]))
"""


def _args(manifest, cache, genotype, out, *extra):
    sets = [a for o in tiny_overrides(manifest, cache) if not o.startswith(("data.root", "train.epochs"))
            for a in ("--set", o)]  # fmt: skip
    return ["--data", "csv", "--root", str(manifest), "--genotype", str(genotype), "--out", str(out),
            "--folds", "1,2", "--epochs", "4", "--set", "train.drop_path=0.1", "--set", "train.aux_weight=0.3",
            *sets, *extra]  # fmt: skip


@pytest.mark.slow
def test_kill_then_same_command_resumes(tmp_path, mini_manifest, mini_cache, project_root, mini_prepared):
    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps(TINY_GENOTYPE))
    out = tmp_path / "run"
    args = _args(mini_manifest, mini_cache, genotype, out)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], cwd=project_root, env=env,
                            capture_output=True, text=True, timeout=400)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "fold1" / "metrics.json").is_file()
    fold1_metrics = (out / "fold1" / "metrics.json").read_text()
    state = json.loads((out / "fold2" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2
    assert not (out / "fold2" / "metrics.json").exists()

    resumed = subprocess.run([sys.executable, str(project_root / "cli" / "train.py"), *args], cwd=project_root,
                             env=env, capture_output=True, text=True, timeout=400)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "fold 1: finished earlier; skipped" in resumed.stderr
    assert "fold 2: resuming after epoch 2/4" in resumed.stderr
    assert (out / "fold1" / "metrics.json").read_text() == fold1_metrics
    history = json.loads((out / "fold2" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert [row["drop_path"] for row in history] == pytest.approx([0.0, 0.025, 0.05, 0.075])
    assert history[:2] == state["history"]  # the epochs before the kill are kept as they were

    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "emodarts" and summary["folds"] == [1, 2]
    for key in ("ua", "wa", "f1"):
        assert set(summary[key]) == {"mean", "std", "per_fold"}
        assert sorted(summary[key]["per_fold"]) == ["1", "2"]
    assert summary["params"] > 0 and summary["flops"] > 0
    assert summary["compute_s"]["train"] > 0 and summary["compute_s"]["search"] is None
    assert "| mean ± std |" in (out / "summary.md").read_text()
    info = json.loads((out / "fold2" / "model_info.json").read_text())
    assert info["kind"] == "emodarts" and info["genotype"]["normal"] == TINY_GENOTYPE["normal"]
    assert info["train"]["aux_weight"] == 0.3 and info["fold"]["test_speakers"] == ["08"]

    # Another config in the same --out is refused, naming what changed (in process, no training).
    from emodarts_tf.commands.train import main

    assert main(_args(mini_manifest, mini_cache, genotype, out, "--set", "train.lr=0.1")) == 2
    assert json.loads((out / "summary.json").read_text()) == summary


def test_leaking_genotype_is_refused_before_training(tmp_path, mini_manifest, mini_cache, mini_prepared, caplog):
    from emodarts_tf.commands.train import main

    leaky = dict(TINY_GENOTYPE, meta={"corpus": "csv", "protocol": "loso", "fold": 2,
                                      "train_speakers": ["03", "09"], "val_speakers": ["10"]})  # fmt: skip
    genotype = tmp_path / "leaky.json"
    genotype.write_text(json.dumps(leaky))
    out = tmp_path / "run"
    with caplog.at_level(logging.ERROR):
        code = main(_args(mini_manifest, mini_cache, genotype, out))
    assert code == 2
    assert "refusing to train fold 1" in caplog.text and "['03']" in caplog.text
    assert not (out / "fold1").exists() and not (out / "fold2").exists()


def test_changed_config_is_refused(tmp_path, mini_manifest, mini_cache, mini_prepared, caplog):
    from emodarts_tf.commands.train import _check_run_config
    from emodarts_tf.config import load_config

    first = load_config(None, overrides=["data.corpus=csv", *tiny_overrides(mini_manifest, mini_cache)])
    _check_run_config(tmp_path, first)
    _check_run_config(tmp_path, first)  # the same config resumes
    moved = load_config(None, overrides=["data.corpus=csv", *tiny_overrides(mini_manifest, tmp_path / "elsewhere")])
    _check_run_config(tmp_path, moved)  # another cache folder changes nothing
    threads = load_config(None, overrides=["data.corpus=csv", *tiny_overrides(mini_manifest, mini_cache),
                                           "runtime.intra_op_threads=1", "runtime.inter_op_threads=1"])  # fmt: skip
    _check_run_config(tmp_path, threads)  # other thread pools compute the same run
    unread = load_config(None, overrides=["data.corpus=csv", *tiny_overrides(mini_manifest, mini_cache),
                                          "features.window_ms=32.0", "features.freq_bins=64"])  # fmt: skip
    _check_run_config(tmp_path, unread)  # fields an MFCC map does not read compute the same run
    changed = load_config(None, overrides=["data.corpus=csv", *tiny_overrides(mini_manifest, mini_cache),
                                           "train.lr=0.1", "space.init_channels=4"])  # fmt: skip
    with pytest.raises(ValueError, match=r"another config \(differing: space\.init_channels, train\.lr\)"):
        _check_run_config(tmp_path, changed)


def test_restart_removes_the_previous_run_and_its_prepared_tables(tmp_path):
    from emodarts_tf.commands.train import _restart

    out = tmp_path / "run"
    for folder in ("fold1", "random3/fold2", "data"):
        (out / folder).mkdir(parents=True)
    for name in ("summary.json", "config.yaml", "random_summary.md", "data/folds.json", "fold1/metrics.json", "notes.txt"):
        (out / name).write_text("{}")
    (out / "randomness").mkdir()  # not a random<i>/ run folder
    _restart(out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "randomness"]


@pytest.mark.slow
def test_an_ensemble_run_serves_and_counts_both_networks(tmp_path, mini_manifest, mini_cache, mini_prepared):
    """``recipe.ensemble`` through ``cli/train.py`` (drop-path and an auxiliary head on): the summary counts the
    weights and FLOPs of both networks, and the saved pair reloads with the test figures it reported."""
    import numpy as np

    from emodarts_tf.commands.train import main
    from emodarts_tf.evaluation.metrics import classification_metrics
    from emodarts_tf.evaluation.model_dir import load_model_dir

    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps(TINY_GENOTYPE))
    out = tmp_path / "pair"
    # later options win: one fold, two epochs
    args = [*_args(mini_manifest, mini_cache, genotype, out), "--folds", "1", "--epochs", "2"]
    assert main([*args, "--set", "recipe.refit=true", "--set", "recipe.ensemble=true"]) == 0
    info = json.loads((out / "fold1" / "model_info.json").read_text())
    metrics = json.loads((out / "fold1" / "metrics.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert metrics["refit"]["ensemble"] is True and info["recipe"]["ensemble"] is True
    assert summary["params"] == 2 * info["complexity"]["params"] and summary["flops"] == 2 * info["complexity"]["flops"]
    trained = load_model_dir(out / "fold1")
    fold = next(f for f in mini_prepared.folds if f.index == 1)
    predicted = trained.probabilities(mini_prepared.features(fold.test)).argmax(axis=1)
    again = classification_metrics(mini_prepared.labels(fold.test), predicted, len(trained.classes))
    assert again["ua"] == pytest.approx(metrics["ua"]) and np.isclose(again["wa"], metrics["wa"])
