"""TensorFlow's thread pools: the plan per machine, the config's overrides, applying them at start."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from emodarts_tf.config import load_config
from emodarts_tf.utils.threads import configure_threads, thread_plan, usable_cores


def test_plan_on_a_cpu_runs_one_op_per_thread_on_every_core():
    plan = thread_plan(None, None, cores=2, gpu=False)
    assert (plan["inter_op_threads"], plan["intra_op_threads"]) == (2, 1)
    assert "2 usable cores" in plan["reason"]
    plan = thread_plan(None, None, cores=16, gpu=False)
    assert (plan["inter_op_threads"], plan["intra_op_threads"]) == (16, 1)


def test_plan_with_a_gpu_keeps_tensorflows_defaults():
    plan = thread_plan(None, None, cores=8, gpu=True)
    assert (plan["inter_op_threads"], plan["intra_op_threads"]) == (0, 0)


def test_config_values_override_the_plan_one_at_a_time():
    assert thread_plan(0, 0, cores=2, gpu=False)["intra_op_threads"] == 0  # TensorFlow's defaults
    plan = thread_plan(None, 2, cores=4, gpu=False)
    assert (plan["inter_op_threads"], plan["intra_op_threads"]) == (4, 2) and "partly set" in plan["reason"]
    plan = thread_plan(3, 2, cores=4, gpu=True)
    assert (plan["inter_op_threads"], plan["intra_op_threads"]) == (3, 2) and plan["reason"].startswith("set in")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"runtime.intra_op_threads .* got"):
        thread_plan(None, bad, cores=2, gpu=False)


@pytest.mark.parametrize("command", ["train", "search", "evaluate", "baseline"])
def test_a_command_reports_a_bad_thread_count_in_one_line_with_status_2(command, tmp_path, caplog):
    import importlib

    main = importlib.import_module(f"emodarts_tf.commands.{command}").main
    argv = {"train": ["--genotype", "random:1"], "evaluate": ["--model", str(tmp_path / "model")]}.get(command, [])
    argv += ["--data", "demo", "--set", "runtime.intra_op_threads=-1"]
    argv += ["--out", str(tmp_path / "out")]  # evaluate: where its report would go
    assert main(argv) == 2
    assert any("runtime.intra_op_threads must be null" in m for m in caplog.messages)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_runtime_section_of_the_config():
    config = load_config(None, overrides=["runtime.intra_op_threads=0"])
    assert config.runtime.intra_op_threads == 0 and config.runtime.inter_op_threads is None
    with pytest.raises(ValueError, match="runtime.inter_op_threads"):
        load_config(None, overrides=["runtime.inter_op_threads=two"])


def test_pools_are_set_before_the_runtime_starts():
    """In a fresh process the plan reaches TensorFlow's pools (and is logged)."""
    code = (
        "import json, logging, tensorflow as tf\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from emodarts_tf.utils.threads import configure_threads\n"
        "plan = configure_threads(None, 1)\n"
        "print(json.dumps([plan['applied'], plan['inter_op_threads'], tf.config.threading.get_inter_op_parallelism_threads(),"
        " tf.config.threading.get_intra_op_parallelism_threads(), float(tf.reduce_sum(tf.ones((3, 3))))]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2", **__import__("os").environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied, planned_inter, inter, intra, total = json.loads(proc.stdout.strip().splitlines()[-1])
    assert applied and inter == planned_inter and intra == 1 and total == 9.0
    assert "threads: inter-op" in proc.stderr


def test_pools_already_in_use_are_reported_not_changed(caplog):
    import tensorflow as tf

    float(tf.reduce_sum(tf.ones((2, 2))))  # the runtime has started
    before = (tf.config.threading.get_inter_op_parallelism_threads(),
              tf.config.threading.get_intra_op_parallelism_threads())
    wanted = before[1] + 3
    with caplog.at_level(logging.WARNING, logger="emodarts_tf.utils.threads"):
        plan = configure_threads(before[0], wanted)
    assert not plan["applied"] and plan["intra_op_threads"] == wanted
    assert (tf.config.threading.get_inter_op_parallelism_threads(),
            tf.config.threading.get_intra_op_parallelism_threads()) == before
    assert "not applied" in caplog.text
    assert usable_cores() >= 1


def test_commands_without_tensorflow_do_not_import_it_for_the_pools():
    """``cli/prepare.py`` extracts MFCCs without TensorFlow: sizing the pools must not import it there."""
    code = (
        "import argparse, sys\n"
        "from emodarts_tf.commands.common import config_from_args\n"
        "args = argparse.Namespace(data='demo', root=None, protocol=None, config=None, overrides=[], cache=None,"
        " encoding=None, seed=None, verbose=0)\n"
        "config_from_args(args, threads=False)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"
