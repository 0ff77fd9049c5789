"""Under tf.distribute.MirroredStrategy (two logical CPU devices, in a subprocess: logical devices must be
set before TensorFlow starts) the search step equals the single-device step on the same global batch:
losses divided by the replica count, gradients all-reduced before the clip, the decay and the unrolled
step, the warm-up branch taken at trace time; with edge normalisation's betas and pruning masks too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


SCRIPT = r"""
import json, os, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from search_helpers import TinyBackbone, search_dataset
from emodarts_tf.search.callbacks import AlphaWarmup
from emodarts_tf.search.model import SearchModel

# One strategy for the process: a second MirroredStrategy would reuse collective instance keys.
MIRRORED = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def compare(order, arch=False):
  runs = []
  for mirrored in (False, True):
      keras.utils.set_random_seed(0)
      strategy = MIRRORED if mirrored else tf.distribute.get_strategy()
      with strategy.scope():
          # arch: edge normalisation's betas and a pruned edge set (keep masks) beside the alphas
          model = SearchModel(TinyBackbone(), input_shape=(4, 4, 1), seed=0, edge_norm=arch, prunable=arch)
          model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.03, 0.5, 0.999),
                        order=order, grad_clip=0.5, eager_updates=True)
          if arch:
              model.prune(3)
      ds, steps = search_dataset(64, 16)
      history = model.fit(ds, steps_per_epoch=steps, epochs=2, verbose=0, shuffle=False, callbacks=[AlphaWarmup(1)])
      runs.append({
          "replicas": strategy.num_replicas_in_sync,
          "eager_updates": model.eager_updates,
          "alpha_loss": history.history["alpha_loss"],
          "loss": history.history["loss"],
          "alphas": [a.numpy() for a in model.arch_variables],
          "weights": [w.numpy() for w in model.weight_variables],
          "a_iterations": int(model.a_optimizer.iterations.numpy()),
      })
  one, two = runs
  return {
      "replicas": [one["replicas"], two["replicas"]],
      "arch_variables": len(one["alphas"]),
      "eager_updates": [one["eager_updates"], two["eager_updates"]],
      "a_iterations": [one["a_iterations"], two["a_iterations"]],
      "warmup_alpha_loss": [one["alpha_loss"][0], two["alpha_loss"][0]],
      "loss_diff": max(abs(a - b) for a, b in zip(one["loss"], two["loss"])),
      "alpha_diff": max(float(np.abs(a - b).max()) for a, b in zip(one["alphas"], two["alphas"])),
      "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(one["weights"], two["weights"])),
  }

print(json.dumps({"first": compare("first"), "second": compare("second"), "second+betas+pruned": compare("second", True)}))
"""


def test_mirrored_strategy_matches_single_device():
    here = Path(__file__).resolve().parent
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([str(here), str(here.parent.parent)]))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300, cwd=here
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for order, result in results.items():
        assert result["replicas"] == [1, 2], order
        assert result["arch_variables"] == (6 if "betas" in order else 3), order
        # Eager updates on one device; off (the step graph) with two replicas, and the results agree.
        assert result["eager_updates"] == [True, False], order
        assert result["a_iterations"][0] == result["a_iterations"][1] == 4, order  # 1 of 2 epochs x 4 steps
        assert result["warmup_alpha_loss"] == [0.0, 0.0], order
        assert result["loss_diff"] < 1e-5, order
        assert result["alpha_diff"] < 1e-5, order
        assert result["weight_diff"] < 1e-5, order
