"""Gradient aggregation and variable assignment that behave the same with one replica and under
``tf.distribute`` (MirroredStrategy), for the search's hand-written train_step.

Keras optimizers all-reduce (sum) the gradients they are given in a replica context, and Keras losses
divide the per-replica loss by the number of replicas, so that the sum over replicas is the gradient of
the global-batch mean. The search needs the *global* gradient before it reaches an optimizer (for the
global-norm clip, for coupled weight decay, for the unrolled second-order step), so it all-reduces first
(:func:`all_reduce_sum`) and hands the optimizer ``g / replicas`` (:func:`for_optimizer`), which the
optimizer's own sum turns back into ``g``.
"""
from __future__ import annotations

import tensorflow as tf


def num_replicas() -> int:
    """Replicas of the strategy in scope (1 without a strategy)."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def in_multi_replica_context() -> bool:
    """True inside the replica context of a strategy with more than one replica (at trace time in graphs)."""
    ctx = tf.distribute.get_replica_context()
    return ctx is not None and ctx.num_replicas_in_sync > 1


def all_reduce_sum(grads: list) -> list:
    """Sum per-replica gradients over replicas (identity with a single replica). ``None`` entries stay."""
    if not in_multi_replica_context():
        return list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    if not present:
        return list(grads)
    reduced = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, [grads[i] for i in present]
    )
    out = list(grads)
    for i, g in zip(present, reduced):
        out[i] = g
    return out


def for_optimizer(grads: list) -> list:
    """Divide global gradients by the replica count so that the optimizer's own all-reduce restores them."""
    if not in_multi_replica_context():
        return list(grads)
    r = float(tf.distribute.get_replica_context().num_replicas_in_sync)
    return [None if g is None else g / tf.cast(r, g.dtype) for g in grads]


def _tf_variable(v):
    return getattr(v, "value", v) if not isinstance(v, tf.Variable) else v


def assign_variables(variables: list, values: list) -> None:
    """``v.assign(x)`` for each pair; under a multi-replica strategy through ``merge_call`` so that every
    replica's copy receives that replica's value (identical values, computed from all-reduced gradients).
    """
    if len(variables) != len(values):
        raise ValueError(f"assign_variables: {len(variables)} variables but {len(values)} values")
    if not in_multi_replica_context():
        for v, x in zip(variables, values):
            v.assign(tf.cast(x, v.dtype))
        return

    def merge_fn(distribution, pairs):
        for var, val in pairs:
            distribution.extended.update(
                var, lambda target, new: target.assign(tf.cast(new, target.dtype)), args=(val,), group=False
            )

    pairs = [(_tf_variable(v), x) for v, x in zip(variables, values)]
    tf.distribute.get_replica_context().merge_call(merge_fn, args=(pairs,))


def assign_each(variables: list, value_fn) -> None:
    """``variables[i].assign(value_fn(i))`` for each ``i``. With one replica each value is computed just
    before its assignment, so that, run eagerly, one temporary exists at a time instead of a list of them
    (a list of new values is a whole copy of the weights); under a multi-replica strategy as
    :func:`assign_variables`."""
    if not in_multi_replica_context():
        for i, v in enumerate(variables):
            v.assign(tf.cast(value_fn(i), v.dtype))
        return
    assign_variables(variables, [value_fn(i) for i in range(len(variables))])


def unscale_loss(loss):
    """Undo the ``1 / replicas`` that Keras losses apply under a strategy (for the loss trackers)."""
    r = num_replicas()
    return loss if r == 1 else loss * tf.cast(r, loss.dtype)
