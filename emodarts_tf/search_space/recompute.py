"""Gradient checkpointing (recomputation) for the search's mixed ops, to cut the memory of the search.

A function wrapped by :func:`recompute_grad` runs its forward pass without recording on any gradient
tape, so none of its intermediate activations are kept for the backward pass; only its inputs and its
output are. When a tape asks for its gradient, the forward is run again under a local
``tf.GradientTape`` and differentiated there: gradients for every tensor input (the edge input and the
mixing-weights vector, so the architecture gradient flows) and for every trainable variable the forward
read. The price is one extra forward of the wrapped function per backward pass.

Layers with state updated in the forward (batch normalisation's moving statistics) must not update it
a second time while the backward recomputes: :func:`is_recomputing` is True (at trace time, in the
Python code that builds the recomputation) exactly then; ``operations.BatchNormalization`` reads it.

Works eagerly and inside ``tf.function`` (where the recomputation is tied to the incoming gradient by a
data dependency, so that the graph executor cannot run it early, during the forward, and keep its
activations alive after all), under tapes that watch only some tensors (the alphas), under mixed
precision and in the replica context of ``tf.distribute`` strategies.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import tensorflow as tf

# `stop_recording` pauses every active tape (as `tf.recompute_grad` does); TensorFlow exposes it only
# per tape (`GradientTape.stop_recording`), not for the tapes of the caller that this code cannot see.
from tensorflow.python.eager import record as _record

_RECOMPUTING: contextvars.ContextVar[bool] = contextvars.ContextVar("emodarts_tf_recomputing", default=False)


def is_recomputing() -> bool:
    """True while a :func:`recompute_grad` backward pass re-runs a forward (at trace time in graphs)."""
    return _RECOMPUTING.get()


@contextlib.contextmanager
def recomputing():
    """Mark the code inside as a recomputation (see :func:`is_recomputing`)."""
    token = _RECOMPUTING.set(True)
    try:
        yield
    finally:
        _RECOMPUTING.reset(token)


def _after(inputs: list, upstream) -> list:
    """``inputs`` made data-dependent on ``upstream`` (values unchanged), inside graphs only.

    A graph executor runs an op as soon as its inputs exist; the recomputed forward only needs the
    forward's inputs, so without this it could run during the forward and hold its activations until
    the backward. XLA ignores control dependencies, hence a data dependency (as ``tf.recompute_grad``):
    ``+ 0`` from one element of the incoming gradient (NaN if that element is NaN, so the backward of a
    non-finite loss stays non-finite).
    """
    if tf.executing_eagerly() or upstream is None:
        return [tf.identity(t) for t in inputs]
    first = tf.reduce_max(tf.reshape(upstream, [-1])[:1])
    zero = tf.where(tf.math.equal(first, first), tf.constant(0.0, first.dtype), tf.constant(float("nan"), first.dtype))
    return [t + tf.cast(zero, t.dtype) for t in inputs]


def recompute_grad(fn: Callable) -> Callable:
    """``fn`` with gradient checkpointing: the forward keeps no activations, the backward recomputes it.

    Args:
        fn: ``fn(*tensors) -> tensor``, a function of positional tensors only (no keyword arguments:
            bind them in a closure), returning one tensor. Its result must depend on its inputs and the
            variables it reads only (no randomness), or the recomputed gradient would not match.

    Returns:
        ``g(*tensors)`` computing ``fn(*tensors)`` (numpy arrays and variables are converted to tensors).

    Example:
        >>> dense = keras.layers.Dense(4)
        >>> g = recompute_grad(lambda x: dense(tf.nn.relu(x)))
        >>> with tf.GradientTape() as tape:
        ...     y = tf.reduce_sum(g(tf.ones((2, 3))))
        >>> grads = tape.gradient(y, dense.trainable_variables)  # recomputes relu and dense
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, received {fn!r}")

    @tf.custom_gradient
    def checkpointed(*inputs):
        with _record.stop_recording():
            result = fn(*inputs)
        if not isinstance(result, tf.Tensor):
            raise ValueError(f"fn: expected a function returning one tensor, received {type(result).__name__}")

        def grad_fn(upstream, variables=None):
            # `variables`: the trainable variables the forward read (found by tf.custom_gradient).
            variables = list(variables or [])
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                replay = _after(list(inputs), upstream)
                tape.watch(replay)
                tape.watch(variables)
                with recomputing():
                    recomputed = fn(*replay)
            grads = tape.gradient(recomputed, replay + variables, output_gradients=upstream,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            input_grads, variable_grads = grads[: len(replay)], grads[len(replay):]
            return (input_grads, variable_grads) if variables else input_grads

        return result, grad_fn

    def wrapped(*args):
        return checkpointed(*[tf.convert_to_tensor(a) for a in args])

    wrapped.__wrapped__ = fn
    return wrapped
