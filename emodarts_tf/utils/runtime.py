"""Where a run executes: the distribution strategy, the dtype policy shared by the search and the
retraining, and the machine and memory figures written next to results."""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import resource
import sys

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
_STRATEGIES: dict = {}  # one MirroredStrategy per process (multi_worker: utils.cluster)


def resolve_strategy(name: str, key: str = "search.strategy") -> tf.distribute.Strategy:
    """``auto``: MirroredStrategy over the visible GPUs when there are several, else the default strategy.
    ``multi_worker``: :func:`emodarts_tf.utils.cluster.multi_worker_strategy` (the cluster of ``TF_CONFIG``)."""
    if name not in STRATEGIES:
        raise ValueError(f"{key}: expected one of {STRATEGIES}, received {name!r}")
    if name == "multi_worker":
        from emodarts_tf.utils.cluster import multi_worker_strategy

        return multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        # One MirroredStrategy per process: a second one (the next fold of --fold all) would reuse the
        # collective-op instance keys of the first and fail with a shape mismatch.
        if "mirrored" not in _STRATEGIES:
            _STRATEGIES["mirrored"] = tf.distribute.MirroredStrategy()
        return _STRATEGIES["mirrored"]
    return tf.distribute.get_strategy()


@contextlib.contextmanager
def precision_policy(enabled: bool):
    """Set the Keras dtype policy for a block (mixed_float16 on a GPU), restoring it afterwards; used by the
    search (``search.mixed_precision``) and the retraining (``train.mixed_precision``).

    Variables stay float32 (the policy's variable dtype); the search's loss is scaled dynamically by the
    LossScaleOptimizers ``SearchModel.compile`` wraps around both optimisers, the retraining's by Keras'
    ``compile``. On a CPU mixed precision is slower than float32, so it is refused with a warning.
    """
    previous = keras.mixed_precision.global_policy()
    name = "float32"
    if enabled:
        if tf.config.list_physical_devices("GPU"):
            name = "mixed_float16"
        else:
            log.warning("mixed_precision: no GPU visible; running in float32")
    try:
        if name != previous.name:
            keras.mixed_precision.set_global_policy(name)
        yield name
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def graph_optimization(enabled: bool):
    """Run a block with TensorFlow's graph optimiser (Grappler) on or off, restoring the previous setting.

    Grappler rewrites every traced function once, when it is first called: it folds constants, fuses ops and
    prunes the graph. A DARTS supernet's step is a graph of tens of thousands of nodes, so that rewriting
    takes seconds to tens of seconds, and the rewritten steps run faster; ``search.graph_optimization``
    switches it (docs/performance.md has the trade-off). The functions compute the same values either way,
    up to rounding; the setting is process-wide while the block runs.
    """
    previous = bool(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False))
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not enabled})
    try:
        yield bool(enabled)
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": previous})


def peak_memory() -> dict:
    """Peak resident memory of this process (MB) and, with a GPU, the peak GPU memory (MB)."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": round(rss_kb / 1024.0, 1)}
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        try:
            out["peak_gpu_mb"] = round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
        except (ValueError, RuntimeError):
            pass
    return out


def device_info() -> dict:
    gpus = tf.config.list_physical_devices("GPU")
    info = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpus": [],
        # TensorFlow's thread pools (utils/threads.py; 0: TensorFlow's default, one thread per core)
        "threads": {"inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                    "intra_op": tf.config.threading.get_intra_op_parallelism_threads()},
    }
    for gpu in gpus:
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, RuntimeError):
            details = {}
        info["gpus"].append(details.get("device_name", gpu.name))
    return info
