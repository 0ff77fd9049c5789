"""Floating-point operations of one search step, counted once per configuration (for achieved GFLOP/s).

The count is analytic on top of one measured figure, the forward pass:

1. ``F``, the FLOPs of one training-mode forward pass of the search model on one batch
   (``model(x, training=True)``: the supernet with the softmaxed alphas, every candidate of every mixed
   edge computed, as DARTS runs them all; ``none`` candidates cost nothing). Counted on the traced graph
   with the TensorFlow profiler's per-op rules (:func:`graph_flops`), which are the convention of
   :mod:`emodarts_tf.evaluation.complexity`: a multiply-add counts 2, an element-wise add or multiply 1 per
   element, activation functions 0, softmax 5 per element, a fused batch norm 0. Unlike the profiler, the
   count also goes inside the graph's function calls (the shared SeqNN bank functions) and ``while``
   loops (the SeqNN time loops, counted body x trip count), and counts ``Einsum`` (``2 x`` the product
   of all index sizes when an index is summed over, else the product).
2. ``R``, the part of ``F`` that the backward pass recomputes: the forward of every CNN mixed op when
   ``search.recompute_cnn`` is on and of every grouped SeqNN bank when ``search.recompute_seq`` is on
   (their ops, found while tracing ``F``).
3. A *full pass* (``SearchModel._gradients(wrt="all")``: the loss and the gradients w.r.t. the alphas and
   the weights) costs ``3 F + R``: the forward, the backward (gradients w.r.t. the activations and w.r.t.
   the weights, each about one forward's FLOPs: ``2 F``) and the recomputed forwards. An *alpha pass*
   (``wrt="arch"``) with ``search.arch_only_passes`` (outside the one-graph execution) computes no weight
   gradients: ``2 F + R``; without it, it runs the full pass and drops the weight gradients: ``3 F + R``.
4. A first-order step is one alpha pass on the alphas batch and one full pass (the weight step) on the
   weights batch: ``(2 F + R) + (3 F + R)``. A second-order step (``search/architect.py``) is three full
   passes (the virtual step's on the weights batch, the one at ``w'`` on the alphas batch, which also needs
   the weight gradients, and the weight step's) and two alpha passes (the finite differences at
   ``w +- eps v`` on the weights batch): ``3 (3 F + R) + 2 (2 F + R)``.

Not counted: the loss (a few FLOPs per example), the optimizer and update arithmetic (SGD with momentum,
clipping, decay, Adam on the alphas; in second order the virtual step, ``w +- eps v`` and the restore):
about 10-25 FLOPs per weight and step, element-wise, under 1 % of the step at the paper's sizes.
The backward's ``2 F`` is the usual approximation (exact for the products; the element-wise backward of
activations differs slightly).
"""
from __future__ import annotations

import logging
import math
from typing import Iterable

log = logging.getLogger(__name__)

PASSES = {"first": 2, "second": 5}  # forward+backward passes per search step (see the module docstring)
ALPHA_PASSES = {"first": 1, "second": 2}  # of which the passes that need only the alpha gradients
BACKWARD_FACTOR = 2  # backward FLOPs ~= 2 x forward FLOPs (activation gradients + weight gradients)
ACTIVATION_BACKWARD_FACTOR = 1  # the activation gradients alone ~= 1 x forward FLOPs

_CALLS = ("PartitionedCall", "StatefulPartitionedCall")
_WHILES = ("While", "StatelessWhile")
_IFS = ("If", "StatelessIf")
_BINARY = {"Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum", "Pow", "SquaredDifference", "Less",
           "LessEqual", "Greater", "GreaterEqual", "Equal", "NotEqual", "BiasAdd"}  # fmt: skip
_UNARY = {"Reciprocal": 1, "Square": 1, "Rsqrt": 1, "Log": 1, "Neg": 1, "Softmax": 5}


def step_flops(forward: int, recomputed: int, order: str, arch_only: bool = True) -> int:
    """FLOPs of one search step: ``PASSES[order]`` passes of ``(1 + BACKWARD_FACTOR) * forward + recomputed``,
    of which, with ``arch_only``, ``ALPHA_PASSES[order]`` cost ``(1 + ACTIVATION_BACKWARD_FACTOR) * forward +
    recomputed`` (no weight gradients)."""
    if order not in PASSES:
        raise ValueError(f"order: expected one of {tuple(PASSES)}, received {order!r}")
    full = (1 + BACKWARD_FACTOR) * int(forward) + int(recomputed)
    alpha = (1 + ACTIVATION_BACKWARD_FACTOR) * int(forward) + int(recomputed) if arch_only else full
    return (PASSES[order] - ALPHA_PASSES[order]) * full + ALPHA_PASSES[order] * alpha


# ---------------------------------------------------------------------------------------------- graph walk
def _dims(shape, fill: int | None) -> list | None:
    """The dimensions of ``shape`` with unknown ones replaced by ``fill`` (None if unknown and no fill)."""
    if shape.rank is None:
        return None
    out = []
    for d in shape.as_list():
        if d is None:
            if fill is None:
                return None
            d = fill
        out.append(int(d))
    return out


def einsum_flops(equation: str, shapes: list) -> int | None:
    """FLOPs of ``tf.einsum(equation, *operands)`` with operand shapes ``shapes`` (lists of ints): ``2 x``
    the product of the sizes of all indices when some index is summed over (a multiply-add per term),
    else the product (one multiply per output element; 0 for a one-operand transpose)."""
    equation = equation.replace(" ", "")
    if "->" not in equation or "." in equation:
        return None  # implicit output or ellipsis: not used in this code base
    inputs, output = equation.split("->")
    terms = inputs.split(",")
    if len(terms) != len(shapes):
        return None
    sizes = {}
    for term, shape in zip(terms, shapes):
        if shape is None or len(term) != len(shape):
            return None
        for index, size in zip(term, shape):
            sizes[index] = max(sizes.get(index, 1), size)
    total = math.prod(sizes.values())
    summed = set("".join(terms)) - set(output)
    if len(terms) == 1:
        return total if summed else 0
    return 2 * total if summed else total * (len(terms) - 1)


def _fallback_flops(op, fill: int | None) -> int | None:
    """The profiler's rule for ``op``, on its shapes with unknown dimensions set to ``fill``."""
    t = op.type
    if t in _BINARY:
        out = _dims(op.outputs[0].shape, fill)
        return None if out is None else math.prod(out)
    if t in _UNARY:
        shape = _dims(op.inputs[0].shape, fill)
        return None if shape is None else _UNARY[t] * math.prod(shape)
    if t == "AddN":
        shape = _dims(op.inputs[0].shape, fill)
        return None if shape is None else math.prod(shape) * (len(op.inputs) - 1)
    if t in ("Mean", "Sum"):
        shape_in, shape_out = _dims(op.inputs[0].shape, fill), _dims(op.outputs[0].shape, fill)
        if shape_in is None or shape_out is None:
            return None
        return math.prod(shape_in) - (0 if t == "Mean" else math.prod(shape_out))
    if t == "MatMul":
        a, b = _dims(op.inputs[0].shape, fill), _dims(op.inputs[1].shape, fill)
        if a is None or b is None:
            return None
        k = a[0] if op.get_attr("transpose_a") else a[1]
        n = b[0] if op.get_attr("transpose_b") else b[1]
        return 2 * (a[1] if op.get_attr("transpose_a") else a[0]) * k * n
    if t.startswith("BatchMatMul"):
        a, out = _dims(op.inputs[0].shape, fill), _dims(op.outputs[0].shape, fill)
        if a is None or out is None:
            return None
        adj_x = op.get_attr("adj_x")
        k = a[-2] if adj_x else a[-1]
        return 2 * math.prod(out) * k
    return None


def _static_int(tensor) -> int | None:
    """The value of a scalar int tensor known at trace time: a constant, or an element of a static shape
    (``tf.shape(x)[i]``, which ``tf.get_static_value`` does not resolve)."""
    import tensorflow as tf

    value = tf.get_static_value(tensor)
    if value is not None:
        return int(value)
    op = tensor.op
    if op.type == "StridedSlice" and op.get_attr("shrink_axis_mask") == 1:
        begin = tf.get_static_value(op.inputs[1])
        if begin is None or len(begin) != 1:
            return None
        source = op.inputs[0]
        values = tf.get_static_value(source)
        if values is not None:
            return int(values[int(begin[0])])
        if source.op.type == "Shape" and source.op.inputs[0].shape.rank is not None:
            d = source.op.inputs[0].shape.as_list()[int(begin[0])]
            return None if d is None else int(d)
    return None


def _function_graph(graph, name: str):
    """The FuncGraph of the function ``name`` called from ``graph`` (searched outwards)."""
    g = graph
    while g is not None:
        fn = g._get_function(name)
        if fn is not None:
            if getattr(fn, "graph", None) is not None:
                return fn.graph
            from tensorflow.python.framework.function_def_to_graph import function_def_to_graph

            return function_def_to_graph(fn.cached_definition)
        g = getattr(g, "outer_graph", None)
    return None


class FlopCounter:
    """Walks a traced graph, its function calls and loop bodies, and sums FLOPs (see the module docstring).

    Args:
        fill: the size used for unknown dimensions (None: such ops are counted as far as possible, the
            rest is recorded in :attr:`uncounted`). :func:`graph_flops` sets it to the trip count of the
            graph's ``while`` loops: in the search network the only dynamic size is the time axis of the
            tensors a time loop stacks.
        marked: names of ops (in any graph) whose FLOPs, nested ones included, also go to :attr:`marked_flops`.
    """

    def __init__(self, fill: int | None = None, marked: Iterable[tuple] = ()):
        import tensorflow as tf  # noqa: F401  (registers the profiler's statistics)
        from tensorflow.python.profiler.internal import flops_registry  # noqa: F401

        self.fill = fill
        self.marked = set(marked)
        self._marked_graphs = {graph_id for graph_id, _ in self.marked}
        self.marked_flops = 0
        self.uncounted: dict = {}
        self.loops: list = []  # (loop op name, trip count)
        self._cache: dict = {}

    def op_flops(self, graph, op) -> int:
        """FLOPs of one op of ``graph`` (a call or a loop: its body's, times the trip count)."""
        from tensorflow.python.framework import ops as tf_ops

        t = op.type
        if t in _CALLS:
            body = _function_graph(graph, op.get_attr("f").name)
            return self.graph_flops(body) if body is not None else self._uncounted(t)
        if t in _WHILES:
            trips = _static_int(op.inputs[1])  # while_v2: (loop counter, maximum_iterations, *loop vars)
            if trips is None or trips < 0:
                return self._uncounted(t + " (unknown trip count)")
            self.loops.append((op.name, trips))
            body = _function_graph(graph, op.get_attr("body").name)
            return trips * self.graph_flops(body) if body is not None else self._uncounted(t)
        if t in _IFS:
            branches = [_function_graph(graph, op.get_attr(b).name) for b in ("then_branch", "else_branch")]
            return max(self.graph_flops(b) for b in branches if b is not None)
        if t == "Einsum":
            shapes = [_dims(x.shape, self.fill) for x in op.inputs]
            value = einsum_flops(op.get_attr("equation").decode(), shapes)
            return value if value is not None else self._uncounted(t)
        try:
            stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
        except ValueError:  # incomplete shapes
            value = _fallback_flops(op, self.fill)
            return value if value is not None else self._uncounted(t)
        return int(stats.value) if stats is not None and stats.value else 0

    def graph_flops(self, graph, operations=None) -> int:
        """FLOPs of ``operations`` (default: all) of ``graph``, nested calls and loops included."""
        key = id(graph)
        cacheable = operations is None and key not in self._marked_graphs
        if cacheable and key in self._cache:
            return self._cache[key]
        total = 0
        for op in graph.get_operations() if operations is None else operations:
            flops = self.op_flops(graph, op)
            if (id(graph), op.name) in self.marked:
                self.marked_flops += flops
            total += flops
        if cacheable:
            self._cache[key] = total
        return total

    def _uncounted(self, what: str) -> int:
        self.uncounted[what] = self.uncounted.get(what, 0) + 1
        return 0


def _loop_trip_counts(graph, seen=None) -> set:
    """The static trip counts of every ``while`` loop under ``graph``."""
    seen = set() if seen is None else seen
    if id(graph) in seen:
        return set()
    seen.add(id(graph))
    out = set()
    for op in graph.get_operations():
        names = []
        if op.type in _CALLS:
            names = [op.get_attr("f").name]
        elif op.type in _WHILES:
            trips = _static_int(op.inputs[1])
            if trips is not None:
                out.add(trips)
            names = [op.get_attr("body").name, op.get_attr("cond").name]
        elif op.type in _IFS:
            names = [op.get_attr("then_branch").name, op.get_attr("else_branch").name]
        for name in names:
            body = _function_graph(graph, name)
            if body is not None:
                out |= _loop_trip_counts(body, seen)
    return out


def graph_flops(graph, fill: int | None = None, marked: Iterable[tuple] = ()) -> dict:
    """FLOPs of a traced graph (e.g. ``tf.function(f).get_concrete_function(spec).graph``).

    ``fill``: the size of unknown dimensions; by default the trip count of the graph's ``while`` loops
    when they all have the same one. Returns ``{"flops", "marked_flops", "uncounted", "loops", "fill"}``
    (``uncounted``: op types whose FLOPs could not be counted, with how often they occur).
    """
    if fill is None:
        trips = _loop_trip_counts(graph)
        fill = trips.pop() if len(trips) == 1 else None
    counter = FlopCounter(fill=fill, marked=marked)
    total = counter.graph_flops(graph)
    return {"flops": int(total), "marked_flops": int(counter.marked_flops), "uncounted": dict(counter.uncounted),
            "loops": len(counter.loops), "fill": fill}


# ---------------------------------------------------------------------------------------------- the search model
def _recomputed_layers(model) -> list:
    """The layers whose forward the backward pass recomputes in training (CNN mixed ops and SeqNN banks with
    ``recompute=True``)."""
    from emodarts_tf.search_space.mixed_op import MixedOp
    from emodarts_tf.search_space.seq_bank import GroupedSeqEdges

    return [layer for layer in model._flatten_layers()
            if isinstance(layer, (MixedOp, GroupedSeqEdges)) and getattr(layer, "recompute", False)]  # fmt: skip


def forward_flops(model, batch: int, input_shape=None, training: bool = True) -> dict:
    """``F`` and ``R`` of the module docstring for ``model`` (a ``SearchModel``, or any Keras model or layer
    called as ``model(x, training=...)``) on a batch of ``batch`` examples.

    Returns ``{"forward_flops": F, "recomputed_flops": R, "uncounted": {...}, "loops": n, "fill": T}``.
    """
    import tensorflow as tf

    shape = tuple(int(s) for s in (input_shape or model._example_shape))
    spec = tf.TensorSpec((int(batch),) + shape, tf.float32)
    recorded: list = []

    def recording(layer):
        original = layer.call

        def call(*args, **kwargs):
            graph = tf.compat.v1.get_default_graph()
            start = len(graph.get_operations())
            out = original(*args, **kwargs)
            if kwargs.get("training", args[2] if len(args) > 2 else None):
                recorded.extend((id(graph), op.name) for op in graph.get_operations()[start:])
            return out

        return call

    patched = []
    try:
        if training:
            for layer in _recomputed_layers(model):
                object.__setattr__(layer, "call", recording(layer))
                patched.append(layer)
        graph = tf.function(lambda x: model(x, training=training)).get_concrete_function(spec).graph
    finally:
        for layer in patched:
            layer.__dict__.pop("call", None)
    counted = graph_flops(graph, marked=recorded)
    if counted["uncounted"]:
        log.warning("FLOPs not counted for ops %s (unknown shapes or loop counts)", counted["uncounted"])
    return {"forward_flops": counted["flops"], "recomputed_flops": counted["marked_flops"],
            "uncounted": counted["uncounted"], "loops": counted["loops"], "fill": counted["fill"]}


def search_step_flops(model, batch: int, orders: Iterable[str] = ("first", "second"), input_shape=None) -> dict:
    """Forward FLOPs and the FLOPs of one search step per order (see the module docstring):
    ``{"forward_flops", "recomputed_flops", "step_flops": {order: flops}, "uncounted", ...}``."""
    counted = forward_flops(model, batch, input_shape=input_shape, training=True)
    arch_only = bool(model.skips_weight_gradients)
    counted["step_flops"] = {o: step_flops(counted["forward_flops"], counted["recomputed_flops"], o, arch_only)
                             for o in orders}
    counted["arch_only_passes"] = arch_only
    counted["rule"] = ("step = full passes x (3 forward + recomputed) + alpha passes x "
                       f"({2 if arch_only else 3} forward + recomputed); full + alpha passes: first 1 + 1, "
                       "second 3 + 2")
    return counted


__all__ = ["PASSES", "ALPHA_PASSES", "BACKWARD_FACTOR", "ACTIVATION_BACKWARD_FACTOR", "step_flops", "einsum_flops", "graph_flops", "forward_flops",
           "search_step_flops", "FlopCounter"]
