"""Several machines: the process's ``MultiWorkerMirroredStrategy`` (cluster from ``TF_CONFIG``), who writes
(the chief), how each worker takes its slice of the global batches, the wait at the end, and the one-line
message when a worker is lost (README, Several machines; ``utils.runtime.resolve_strategy`` hands out the
strategy for ``search.strategy`` / ``train.strategy: multi_worker``)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)

_STRATEGY: dict = {}  # the process's one MultiWorkerMirroredStrategy, under "multi_worker"


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
    if "multi_worker" not in _STRATEGY:
        config = tf_config()
        log.info(
            "multi_worker: this process is %s %d of cluster %s", config["task"]["type"], config["task"]["index"],
            json.dumps(config["cluster"]),
        )  # fmt: skip
        _patch_keras_symbolic_build()
        try:
            _STRATEGY["multi_worker"] = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as exc:
            raise ValueError(
                f"multi_worker: could not start MultiWorkerMirroredStrategy ({exc}); it has to be created before "
                "TensorFlow runs anything in the process"
            ) from exc
    return _STRATEGY["multi_worker"]


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
    strategy = _STRATEGY.get("multi_worker")
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
    strategy = strategy if strategy is not None else _STRATEGY.get("multi_worker")
    if strategy is None or not is_multi_worker(strategy):
        return None, None
    resolver = strategy.cluster_resolver
    return resolver.task_type, resolver.task_id


def is_chief(strategy=None) -> bool:
    """True unless this process is a non-chief worker of a multi-worker cluster: the chief (the ``chief``
    task, or worker 0 when the cluster has none) writes every output; the other workers write none."""
    strategy = strategy if strategy is not None else _STRATEGY.get("multi_worker")
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
    if "multi_worker" not in _STRATEGY:
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
