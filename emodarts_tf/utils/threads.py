"""How many threads TensorFlow runs ops with: chosen from the machine at start, logged, and overridable.

TensorFlow runs a graph's ready ops on an inter-op thread pool and splits each op's work over an intra-op
pool; by default both pools have one thread per core. A DARTS supernet is the opposite of the workload that
default suits: tens of thousands of small ops per step (every candidate of every edge, the SeqNN time
loops' per-step products and gates), many of them independent of each other. Handing each small op to the
intra-op pool costs a thread wake-up and a join that can take as long as the op, and the two pools
together put two threads on each core. On a CPU-only machine the automatic plan therefore runs every op on
the thread that dispatched it (intra-op 1) and gets the parallelism from independent ops (inter-op = the
usable cores). docs/performance.md has the measurements; with a GPU the plan keeps TensorFlow's defaults
(the GPU does the op-level parallel work).

``runtime.inter_op_threads`` and ``runtime.intra_op_threads`` override the plan: ``null`` (the default)
for the automatic plan, ``0`` for TensorFlow's own default, ``n >= 1`` for n threads. The pools are fixed
once TensorFlow's runtime has started, so :func:`configure_threads` must run before the first op; the
commands that read a config and run TensorFlow (search, train, evaluate, baseline) call it right after reading it
(``commands.common.config_from_args``); predict and export keep TensorFlow's pools.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

KEYS = ("inter_op_threads", "intra_op_threads")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_plan(inter_op: int | None, intra_op: int | None, cores: int, gpu: bool) -> dict:
    """The pools' sizes for the settings, the usable cores and whether a GPU is visible.

    Returns ``{"inter_op_threads", "intra_op_threads", "reason"}``; 0 means TensorFlow's default (one
    thread per core for each pool).
    """
    for key, value in zip(KEYS, (inter_op, intra_op)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"runtime.{key} must be null (automatic), 0 (TensorFlow's default) or a number of "
                             f"threads >= 1, got {value!r}")
    if gpu:
        auto, reason = (0, 0), "a GPU is visible: TensorFlow's defaults"
    else:
        auto, reason = (cores, 1), f"CPU only, {cores} usable cores: one op per thread, independent ops in parallel"
    chosen = (auto[0] if inter_op is None else inter_op, auto[1] if intra_op is None else intra_op)
    if (inter_op, intra_op) != (None, None):
        reason = "set in runtime.*_op_threads" if None not in (inter_op, intra_op) else reason + "; partly set"
    return {"inter_op_threads": chosen[0], "intra_op_threads": chosen[1], "reason": reason}


def configure_threads(inter_op: int | None = None, intra_op: int | None = None) -> dict:
    """Size TensorFlow's thread pools by :func:`thread_plan` for this machine, and log the plan.

    Once TensorFlow's runtime has started the pools cannot change: then the plan is logged as not applied
    (a warning when it differs from the pools in use) and the returned dict says ``"applied": False``.
    """
    import tensorflow as tf

    cores = usable_cores()
    plan = thread_plan(inter_op, intra_op, cores, gpu=bool(tf.config.list_physical_devices("GPU")))
    current = (tf.config.threading.get_inter_op_parallelism_threads(),
               tf.config.threading.get_intra_op_parallelism_threads())
    wanted = (plan["inter_op_threads"], plan["intra_op_threads"])
    try:
        tf.config.threading.set_inter_op_parallelism_threads(wanted[0])
        tf.config.threading.set_intra_op_parallelism_threads(wanted[1])
        applied = True
    except RuntimeError:  # the runtime has started: the pools are fixed
        applied = False
    plan.update(cores=cores, applied=applied)
    text = f"threads: inter-op {_count(wanted[0])}, intra-op {_count(wanted[1])} ({plan['reason']})"
    if applied:
        log.info("%s", text)
    elif wanted != current:
        log.warning("%s not applied: TensorFlow's runtime had started; its pools stay inter-op %s, intra-op %s",
                    text, _count(current[0]), _count(current[1]))
    return plan


def _count(value: int) -> str:
    return "TensorFlow's default" if value == 0 else str(value)
