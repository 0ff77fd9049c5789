"""Model size and cost: parameter count and FLOPs of one forward pass for one example.

Convention (the TensorFlow profiler's): a matrix or convolution product counts 2 FLOPs per
multiply-add; an element-wise add or multiply counts 1 per element (bias adds, residual sums, batch-norm
arithmetic); activation functions (ReLU, sigmoid, tanh, softmax's exp) count 0. The same convention is
used for emoDARTS and baseline models, so their figures compare.

The FLOPs come from ``tf.compat.v1.profiler`` on the graph of
``tf.function(model).get_concrete_function(tf.TensorSpec([1, *input_shape]))`` at inference
(``training=False``). The profiler does not look inside ``tf.while_loop`` bodies: for a Keras recurrent
layer it counts the first time step (which Keras computes outside the loop) and none of the others. Each
recurrent layer (``LSTM``, ``GRU``, ``SimpleRNN`` and ``Bidirectional`` around them) is therefore
counted analytically, per time step x time steps, and its profiler share is replaced by that count. The
per-step formulas (``d`` input features, ``u`` units, biases included when the layer uses them) equal what
the profiler counts for the same layer unrolled (``unroll=True``), which the tests check:

- LSTM: ``8 u (d + u)`` products + ``4u`` bias + ``4u`` (input + recurrent projections) + ``4u``
  (``f*c``, ``i*g``, their sum, ``o*tanh(c)``).
- GRU, ``reset_after=True``: ``6 u (d + u)`` + ``6u`` biases + ``2u`` (z, r sums) + ``2u``
  (``x_h + r * h_h``) + ``4u`` (``z*h + (1-z)*hh``).
- GRU, ``reset_after=False``: ``6 u d + 4 u^2 + 2 u^2`` + ``3u`` bias + ``u`` (``r*h``) + ``3u`` sums
  + ``4u`` update.
- SimpleRNN: ``2 u (d + u)`` + ``u`` bias + ``u`` sum.
- Bidirectional: both directions, plus the merge (concat 0; sum and mul 1 per output element, ave 2).

A recurrent layer with ``unroll=True`` is left to the profiler (it sees every step). A generic
``keras.layers.RNN`` around some other cell cannot be counted analytically: its count stays the
profiler's (one step) and a warning says so.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


def count_params(model) -> int:
    """Trainable plus non-trainable parameters (batch-norm statistics included)."""
    if not model.built:
        raise ValueError(f"model {model.name!r}: not built; call it once or pass input_shape to model_complexity")
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def _profile_flops(fn, spec) -> int:
    """Float operations the TF profiler counts in the graph of ``fn`` traced at ``spec``."""
    import tensorflow as tf
    from tensorflow.python.profiler import option_builder

    concrete = tf.function(fn).get_concrete_function(spec)
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    info = tf.compat.v1.profiler.profile(graph=concrete.graph, options=options)
    return int(info.total_float_ops) if info is not None else 0


def _is_recurrent(layer) -> bool:
    import keras

    return isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))


def _recurrent_layers(layer) -> list:
    """Outermost recurrent layers inside ``layer`` (a Bidirectional counts as one; its children are not listed)."""
    found = []
    for child in layer._flatten_layers(include_self=False, recursive=False):
        if _is_recurrent(child):
            found.append(child)
        else:
            found.extend(_recurrent_layers(child))
    return found


def _rnn_step_flops(rnn, input_dim: int) -> int | None:
    """Analytic FLOPs of one time step of a Keras LSTM, GRU or SimpleRNN layer; None for other cells."""
    import keras

    d = int(input_dim)
    if isinstance(rnn, keras.layers.LSTM):
        u = int(rnn.units)
        return 8 * u * (d + u) + (4 * u if rnn.cell.use_bias else 0) + 4 * u + 4 * u
    if isinstance(rnn, keras.layers.GRU):
        u = int(rnn.units)
        if rnn.cell.reset_after:
            return 6 * u * (d + u) + (6 * u if rnn.cell.use_bias else 0) + 2 * u + 2 * u + 4 * u
        return 6 * u * d + 6 * u * u + (3 * u if rnn.cell.use_bias else 0) + u + 3 * u + 4 * u
    if isinstance(rnn, keras.layers.SimpleRNN):
        u = int(rnn.units)
        return 2 * u * (d + u) + (u if rnn.cell.use_bias else 0) + u
    return None


def _rnn_output_units(rnn) -> int:
    return int(rnn.units)


def _analytic_recurrent_flops(layer, shape: Sequence[int]) -> int | None:
    """FLOPs of a recurrent layer over an input of shape (1, time, features); None if not countable."""
    import keras

    if len(shape) != 3:
        return None
    steps, features = int(shape[1]), int(shape[2])
    if isinstance(layer, keras.layers.Bidirectional):
        total = 0
        for direction in (layer.forward_layer, layer.backward_layer):
            step = _rnn_step_flops(direction, features)
            if step is None:
                return None
            total += steps * step
        if layer.merge_mode in ("sum", "mul", "ave"):
            per_output = 2 if layer.merge_mode == "ave" else 1
            units = _rnn_output_units(layer.forward_layer)
            outputs = units * (steps if layer.return_sequences else 1)
            total += per_output * outputs
        return total
    step = _rnn_step_flops(layer, features)
    return None if step is None else steps * step


def _unrolled(layer) -> bool:
    import keras

    if isinstance(layer, keras.layers.Bidirectional):
        return bool(layer.forward_layer.unroll and layer.backward_layer.unroll)
    return bool(getattr(layer, "unroll", False))


def _one_shape(shape, what: str) -> tuple:
    shape = tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{what}: expected positive sizes without the batch axis, received {shape!r}")
    return shape


def _input_shape_of(model, input_shape):
    """One example's input shape: a tuple, or ``{input name: tuple}`` for a model of named inputs (EmotionNAS)."""
    if input_shape is not None:
        if isinstance(input_shape, dict):
            return {name: _one_shape(shape, f"input_shape[{name!r}]") for name, shape in input_shape.items()}
        return _one_shape(input_shape, "input_shape")
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(
            f"model {model.name!r}: pass input_shape (without the batch axis); it cannot be read from a model "
            "that is not a functional model"
        )
    shapes = {t.name.split(":")[0]: tuple(t.shape[1:]) for t in inputs}
    if any(s is None for shape in shapes.values() for s in shape):
        raise ValueError(f"model {model.name!r}: input shape(s) {shapes} have unknown sizes; pass input_shape")
    if len(inputs) == 1:
        return tuple(int(s) for s in next(iter(shapes.values())))
    return {name: tuple(int(s) for s in shape) for name, shape in shapes.items()}


def model_flops(model, input_shape: Sequence[int] | None = None) -> int:
    """FLOPs of one inference forward pass for one example (see the module docstring for the convention)."""
    import tensorflow as tf

    shape = _input_shape_of(model, input_shape)
    if isinstance(shape, dict):
        spec = {name: tf.TensorSpec([1, *s], tf.float32) for name, s in shape.items()}
    else:
        spec = tf.TensorSpec([1, *shape], tf.float32)
    if not model.built:
        model(tf.nest.map_structure(lambda t: tf.zeros(t.shape), spec), training=False)

    recurrent = _recurrent_layers(model)
    seen_shapes: dict[int, tuple] = {}

    def recording(layer):
        original = layer.call

        def call(inputs, *args, **kwargs):
            seen_shapes.setdefault(id(layer), tuple(inputs.shape))
            return original(inputs, *args, **kwargs)

        return call

    patched = []
    try:
        for layer in recurrent:
            object.__setattr__(layer, "call", recording(layer))
            patched.append(layer)
        total = _profile_flops(lambda x: model(x, training=False), spec)
    finally:
        for layer in patched:
            layer.__dict__.pop("call", None)

    for layer in recurrent:
        if _unrolled(layer):
            continue
        shape_in = seen_shapes.get(id(layer))
        if shape_in is None:  # the layer exists but the forward pass never called it
            continue
        analytic = _analytic_recurrent_flops(layer, shape_in)
        if analytic is None:
            log.warning(
                "layer %r (%s): no analytic FLOP count for this recurrent layer; its FLOPs are the profiler's, "
                "which counts one time step only",
                layer.name,
                type(layer).__name__,
            )
            continue
        layer_spec = tf.TensorSpec([int(s) for s in shape_in], tf.float32)
        profiled = _profile_flops(lambda x, _layer=layer: _layer(x, training=False), layer_spec)
        total += analytic - profiled
    return int(total)


def model_complexity(model, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """``{"params": trainable + non-trainable, "flops": one forward pass of one example}``.

    Args:
        model: a Keras model; a functional model knows its input shape, any other needs ``input_shape``.
        input_shape: the shape of one example without the batch axis, e.g. ``(128, 128, 1)``.
    """
    flops = model_flops(model, input_shape)
    return {"params": count_params(model), "flops": flops}
