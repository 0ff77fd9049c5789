"""Where a run executes: the distribution strategy, the dtype policy shared by the search and the
retraining, and the machine and memory figures written next to results."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
_STRATEGIES: dict = {}  # one MirroredStrategy / MultiWorkerMirroredStrategy per process


def resolve_strategy(name: str, key: str = "search.strategy") -> tf.distribute.Strategy:
    """``auto``: MirroredStrategy over the visible GPUs when there are several, else the default strategy.
    ``multi_worker``: :func:`multi_worker_strategy` (the cluster of ``TF_CONFIG``)."""
    if name not in STRATEGIES:
        raise ValueError(f"{key}: expected one of {STRATEGIES}, received {name!r}")
    if name == "multi_worker":
        return multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        # One MirroredStrategy per process: a second one (the next fold of --fold all) would reuse the
        # collective-op instance keys of the first and fail with a shape mismatch.
        if "mirrored" not in _STRATEGIES:
            _STRATEGIES["mirrored"] = tf.distribute.MirroredStrategy()
        return _STRATEGIES["mirrored"]
    return tf.distribute.get_strategy()


# ----------------------------------------------------------------------------------- several machines


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable; ValueError naming what is wrong with it."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        raise ValueError(
            "multi_worker: the TF_CONFIG environment variable is not set; every process needs "
            '{"cluster": {"worker": ["host0:port", "host1:port", ...]}, "task": {"type": "worker", "index": i}} '
            "(see README, Several machines)"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"multi_worker: TF_CONFIG is not JSON ({exc}): {text[:200]!r}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise ValueError(f"multi_worker: TF_CONFIG needs a 'cluster' mapping and a 'task', received {text[:200]!r}")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(
            f"multi_worker: TF_CONFIG task {task!r} is not in its cluster {cluster!r} (type must be one of "
            f"{sorted(cluster)}, index 0..n-1)"
        )
    return config


def multi_worker_strategy() -> tf.distribute.Strategy:
    """The process's ``MultiWorkerMirroredStrategy`` (made on first call, from ``TF_CONFIG``).

    It must be made before TensorFlow runs any op (it configures the collective ops of the eager
    context): the commands call :func:`start_strategies` right after reading their config. The
    collectives and the coordination service go over gRPC to the addresses of ``TF_CONFIG``; a worker
    that stops heartbeating (killed, crashed) makes the others' next collective fail with an
    ``UnavailableError``, which :func:`lost_worker_message` turns into one line.
    """
    if "multi_worker" not in _STRATEGIES:
        config = tf_config()
        log.info(
            "multi_worker: this process is %s %d of cluster %s", config["task"]["type"], config["task"]["index"],
            json.dumps(config["cluster"]),
        )  # fmt: skip
        _patch_keras_symbolic_build()
        try:
            _STRATEGIES["multi_worker"] = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as exc:
            raise ValueError(
                f"multi_worker: could not start MultiWorkerMirroredStrategy ({exc}); it has to be created before "
                "TensorFlow runs anything in the process"
            ) from exc
    return _STRATEGIES["multi_worker"]


def _patch_keras_symbolic_build() -> None:
    """Work around Keras 3.15's ``fit()`` under MultiWorkerMirroredStrategy (keras-team/keras#20585): before
    training, ``TensorFlowTrainer._maybe_symbolic_build`` builds the model's metrics and optimizer from one
    batch, which it first reduces over the replicas with ``strategy.reduce``; that fails for a nested batch
    (``(x, y)``) under this strategy ("Attempt to convert a value (PerReplica ...) to a Tensor"). Only
    the batch's shapes and dtypes matter there, so under this strategy the patch builds from zeros of the
    dataset's element spec instead. Other strategies keep Keras' code."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    cls = tf_trainer.TensorFlowTrainer
    if getattr(cls, "_emodarts_multi_worker_patch", False):
        return
    original = cls._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is None or strategy is None or not is_multi_worker(strategy):
            return original(self, iterator=iterator, data_batch=data_batch)
        # Zeros of the dataset's element spec, not a batch drawn from it: drawing one would start an iterator
        # and so advance a reshuffling dataset's order, which one process does not do.
        spec = iterator.data_adapter.get_tf_dataset().element_spec
        data_batch = tf.nest.map_structure(
            lambda s: tf.zeros([1 if d is None else d for d in s.shape], s.dtype), spec
        )
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    cls._maybe_symbolic_build = _maybe_symbolic_build
    cls._emodarts_multi_worker_patch = True

    # The same Keras version reduces every value a train step returns with ``strategy.reduce("MEAN", v,
    # axis=0)`` under this strategy, which fails for the scalar logs (loss, metrics): those are averaged
    # over the replicas without an axis instead.
    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if not is_multi_worker(strategy) or reduction not in ("auto", "mean"):
            return original_reduce(values, strategy, reduction)

        def reduce_one(v):
            if isinstance(v, tf.distribute.DistributedValues) or tf.is_tensor(v):
                rank = strategy.experimental_local_results(v)[0].shape.rank if isinstance(
                    v, tf.distribute.DistributedValues) else v.shape.rank  # fmt: skip
                if rank == 0:
                    return strategy.reduce("MEAN", v, axis=None)
            return original_reduce(v, strategy, reduction)

        return tf.nest.map_structure(reduce_one, values)

    tf_trainer.reduce_per_replica = reduce_per_replica


def start_strategies(*names: str) -> None:
    """Create, at program start, the MultiWorkerMirroredStrategy that any of the strategy names asks for."""
    if "multi_worker" in names:
        multi_worker_strategy()


def sync_workers() -> None:
    """Under ``multi_worker``: wait until every worker got here (one tiny all-reduce). The commands call it
    before they return, so that no worker exits while another still runs: the chief hosts the cluster's
    coordination service, and a worker that stops heartbeating reads as lost to the others."""
    strategy = _STRATEGIES.get("multi_worker")
    if strategy is None:
        return

    @tf.function
    def barrier():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.constant(1.0)))

    barrier()


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_identity(strategy=None) -> tuple:
    """``(task_type, task_id)`` of this process in a multi-worker cluster, ``(None, None)`` otherwise."""
    strategy = strategy if strategy is not None else _STRATEGIES.get("multi_worker")
    if strategy is None or not is_multi_worker(strategy):
        return None, None
    resolver = strategy.cluster_resolver
    return resolver.task_type, resolver.task_id


def is_chief(strategy=None) -> bool:
    """True unless this process is a non-chief worker of a multi-worker cluster: the chief (the ``chief``
    task, or worker 0 when the cluster has none) writes every output; the other workers write none."""
    strategy = strategy if strategy is not None else _STRATEGIES.get("multi_worker")
    if strategy is None or not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    kind, index = resolver.task_type, resolver.task_id
    if kind in (None, "chief"):
        return True
    return kind == "worker" and index == 0 and "chief" not in resolver.cluster_spec().as_dict()


def check_global_batch(batch_size: int, strategy, key: str) -> None:
    """Under MultiWorkerMirroredStrategy: ValueError unless the global batch ``key`` divides evenly over the
    replicas (each worker trains on an equal slice of every global batch, so that the mean of the workers'
    losses is the batch's)."""
    replicas = int(strategy.num_replicas_in_sync)
    if is_multi_worker(strategy) and int(batch_size) % replicas:
        raise ValueError(
            f"{key} {batch_size}: expected a multiple of the {replicas} replicas of multi_worker (the global batch is "
            "split into equal slices, one per replica)"
        )


def shard_by_data(dataset, strategy):
    """Under MultiWorkerMirroredStrategy: shard ``dataset`` by DATA, so that every worker builds the same
    global batches (seeded) and keeps its slice of each (the per-worker batch is the global batch divided
    by the replicas); the global batches, and their order, are those of one process. Else unchanged."""
    if not is_multi_worker(strategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


@contextlib.contextmanager
def worker_output_dir(out_dir):
    """The folder this process writes its outputs into: ``out_dir`` itself on the chief (and without a
    multi-worker strategy); on the other workers a private temporary folder, removed afterwards, so that
    only the chief writes under ``out_dir``. The temporary folder starts as a copy of what ``out_dir``
    holds (its TensorBoard logs left out), so that a worker takes the chief's decisions (refusing to
    overwrite, resuming from the same checkpoint, skipping finished folds): for a resumed run ``out_dir``
    must be readable by every worker at the same path (shared storage, or a copy of the chief's folder)."""
    if is_chief():
        yield Path(out_dir)
        return
    kind, index = worker_identity()
    scratch = Path(tempfile.mkdtemp(prefix=f"emodarts-{kind}{index}-"))
    target = scratch / "out"
    source = Path(out_dir)
    if source.is_dir():
        try:
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("tensorboard", "*.lock"))
        except shutil.Error as exc:  # a temporary file of an atomic write of the chief's, gone meanwhile
            log.debug("copying %s: %s", source, exc)
        log.info("%s %d: writes nothing under %s; resumes from a copy of it in %s", kind, index, source, target)
    else:
        target.mkdir(parents=True)
        log.info("%s %d: writes nothing under %s (its own files go to %s, removed at the end)", kind, index, source,
                 target)  # fmt: skip
    try:
        yield target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_LOST_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")


def lost_worker_message(exc: BaseException, command: str, hint: str) -> str | None:
    """One line naming the lost worker when ``exc`` (or an exception it came from) is the error a
    multi-worker run raises when a worker is killed or unreachable (a heartbeat timeout, an aborted
    collective, an unavailable task), ending with ``hint`` (what to do next); None for any other exception or
    without a multi-worker strategy."""
    if "multi_worker" not in _STRATEGIES:
        return None
    seen, current = set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                                tf.errors.DeadlineExceededError, tf.errors.InternalError)):  # fmt: skip
            text = str(current)
            if isinstance(current, tf.errors.InternalError) and "ollective" not in text and "oordination" not in text:
                current = current.__cause__ or current.__context__
                continue
            me = worker_identity()
            lost = [m for m in _LOST_TASK.findall(text) if (m[0], int(m[1])) != (me[0], me[1])]
            if lost:
                kind, index = lost[0][0], int(lost[0][1])
                who = f"{kind} {index}"
                try:
                    who += f" ({tf_config()['cluster'][kind][index]})"
                except (ValueError, KeyError, IndexError):
                    pass
            else:
                who = "a worker of the cluster (the error names none)"
            detail = "heartbeat timeout" if "heartbeat" in text else type(current).__name__
            return f"{command}: lost {who}: {detail}; the run stopped. {hint}"
        current = current.__cause__ or current.__context__
    return None


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
    }
    for gpu in gpus:
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, RuntimeError):
            details = {}
        info["gpus"].append(details.get("device_name", gpu.name))
    return info
