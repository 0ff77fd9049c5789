"""Grouped SeqNN edges: every recurrent candidate of every edge that reads one state, in few time loops.

A searchable SeqNN cell with all 14 candidates has 32 recurrent layers per edge (lstm_1..4 and
rnn_1..4 stacked, lstm_att_1/2 and rnn_att_1/2 bidirectional); the paper's 4 cells x 14 edges make
1792 of them. As separate Keras layers each is its own ``while`` loop, and every loop costs graph
memory and tracing time in the traced gradient function of the search step. :class:`GroupedSeqEdges`
computes the same functions with one loop over time for every layer that can advance together, for all
edges reading the same state:

- loop 1 runs, at each time step, all unidirectional stacks level by level (layer ``l`` of ``lstm_k``
  reads layer ``l - 1``'s output at the same step) and the first bidirectional layer of the attention
  candidates (the backward direction reads the time-reversed input);
- loop ``l`` (``l >= 2``) runs bidirectional layer ``l``, which needs the whole output of layer ``l - 1``.

Within a loop, the cells of one kind (LSTM or RNN) and level form a group whose weights are stacked on a
leading cell axis, so a step is one batched matrix product per group. The inputs of the first level are
projected for all time steps before the loop. The math is exactly Keras' ``LSTM`` (gates i, f, c, o;
sigmoid and tanh; forget-gate bias 1 at start) and ``SimpleRNN`` (tanh), and
:meth:`GroupedSeqEdges.candidate_weights` gives each candidate's weights in the order of the plain op
(:func:`~emodarts_tf.search_space.op_registry.make_seq_op`), so the test suite checks the equivalence with
the plain Keras layers. The attention heads after the bidirectional layers (Keras'
``MultiHeadAttention`` math) are batched the same way, one einsum per projection for all attention
candidates of all edges, and the mixing of each edge's candidates is one einsum per group of outputs,
so that the graph of a bank stays small whatever the number of edges.

The computation (:meth:`GroupedSeqEdges.compute`) takes the weights as arguments, so that banks of equal
structure in different cells can call one traced function (:func:`share_functions`), and it can be
checkpointed (``recompute=True``: the backward pass re-runs a bank's loops instead of keeping their
activations).
"""
from __future__ import annotations

import dataclasses
import math
import random

import keras
import tensorflow as tf
from keras import ops

from emodarts_tf.search_space.recompute import recompute_grad
from emodarts_tf.search_space.seq_ops import direction_units
from emodarts_tf.search_space.seq_ops import parse_recurrent as _parse
from emodarts_tf.search_space.validation import check_bool, check_edge_weights, check_int, check_num_heads, check_ops

_register = keras.saving.register_keras_serializable(package="emodarts_tf")

GATES = {"lstm": 4, "rnn": 1}


@dataclasses.dataclass(frozen=True)
class _Cell:
    """One recurrent layer (one direction) of one candidate of one edge."""

    edge: int
    op: str
    layer: int  # 1-based level in the candidate's stack
    direction: int  # 0 forward, 1 backward (bidirectional candidates only)


@dataclasses.dataclass
class _Group:
    """Cells of one kind and level that advance together in one loop (weights stacked on axis 0)."""

    name: str
    kind: str  # "lstm" | "rnn"
    level: int  # 1-based level in the stacks
    bidirectional: bool
    hidden: int
    input_dim: int
    cells: list
    parent: str | None = None  # in-loop input: the group whose same-step output feeds this one
    parent_index: tuple = ()

    @property
    def gates(self) -> int:
        return GATES[self.kind]

    @property
    def loop(self) -> int:
        """Unidirectional levels advance together in loop 1; bidirectional level ``l`` needs loop ``l``."""
        return self.level if self.bidirectional else 1


def _seed() -> int:
    # Like Keras' unseeded initializers: an integer drawn from Python's `random` (seeded by
    # keras.utils.set_random_seed), so the initial values are reproducible and the initializer is a
    # stateless op that can run when the layer is first built inside a tf.function.
    return random.randint(1, 10**9)


def _glorot_uniform(fan_in: int, fan_out: int):
    """Keras' ``GlorotUniform`` for each ``(fan_in, fan_out)`` matrix of a stacked ``(K, fan_in, fan_out)``."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    seed = _seed()
    return lambda shape, dtype=None: keras.random.uniform(shape, -limit, limit, dtype=dtype, seed=seed)


def _stacked_orthogonal():
    """Keras' ``Orthogonal`` (gain 1) for each ``shape[1:]`` matrix of a stacked ``(K, rows, cols)``."""
    seed = _seed()

    def init(shape, dtype=None):
        k, rows, cols = shape
        flat = (k, max(rows, cols), min(rows, cols))
        q, r = tf.linalg.qr(tf.convert_to_tensor(keras.random.normal(flat, dtype="float32", seed=seed)))
        q = q * tf.sign(tf.linalg.diag_part(r))[:, None, :]
        if rows < cols:
            q = tf.transpose(q, (0, 2, 1))
        return ops.cast(q, dtype or "float32")

    return init


def _forget_bias(kind: str, hidden: int):
    def init(shape, dtype=None):
        if kind != "lstm":
            return ops.zeros(shape, dtype=dtype)
        ones = ops.concatenate([ops.zeros((hidden,)), ops.ones((hidden,)), ops.zeros((2 * hidden,))])
        return ops.cast(ops.broadcast_to(ones, shape), dtype or "float32")

    return init


@_register
class GroupedSeqEdges(keras.layers.Layer):
    """The mixed SeqNN ops of ``num_edges`` edges that all read the same sequence, computed together.

    For edge ``e`` the output is ``sum_o weights[e, o] * op_o(x)``, as ``num_edges`` separate
    :class:`~emodarts_tf.search_space.mixed_op.MixedSeqOp` layers would compute it, with the same
    candidate functions (``none``: zeros, never computed; ``skip_connect``: ``x``).

    Args:
        ops: candidate SeqNN op names (the columns of the weights).
        units: features in and out.
        num_edges: edges reading the input.
        num_heads: attention heads of the ``*_att_*`` candidates (as ``AttentionRNN``).
        recompute: gradient checkpointing: in training, the forward keeps none of the time loops'
            activations and the backward pass recomputes them
            (:func:`~emodarts_tf.search_space.recompute.recompute_grad`); one extra forward of the bank
            per backward, and the activations of one bank at a time instead of all.

    Call arguments:
        x: the shared input ``(B, T, units)``.
        weights: ``(num_edges, len(ops))`` mixing weights (softmaxed alphas).
        training: unused (no candidate has dropout or batch statistics).

    Returns:
        A list of ``num_edges`` tensors ``(B, T, units)``.
    """

    def __init__(self, ops: tuple, units: int, num_edges: int, num_heads: int = 1, recompute: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.recompute = check_bool(recompute, "recompute")
        self.op_names = check_ops(ops, "seq")
        self.units = check_int(units, "units")
        self.num_edges = check_int(num_edges, "num_edges")
        self.num_heads = check_num_heads(num_heads, units)
        self.direction_units = direction_units(units)
        self.groups = self._plan()
        self.attention_ops = [op for op in self.op_names if (_parse(op) or (None, False))[1]]
        # The attention candidates of all edges, stacked in the order of _attention_position.
        self.attention_keys = [(e, op) for e in range(num_edges) for op in self.attention_ops]
        self.key_dim = units // num_heads
        self.projected = 2 * self.direction_units != units  # odd units: a Dense back to units
        self.param_names = []  # the weights' attribute names, in build order
        # Set by share_functions(): one traced function for all banks of the same structure.
        self._shared_function = None

    # ------------------------------------------------------------------ the plan of groups
    def _plan(self) -> list:
        groups = []
        recurrent = [(op, _parse(op)) for op in self.op_names if _parse(op) is not None]
        for kind in GATES:
            uni = [(op, depth) for op, (k, att, depth) in recurrent if k == kind and not att]
            for level in range(1, max((d for _, d in uni), default=0) + 1):
                cells = [_Cell(e, op, level, 0) for e in range(self.num_edges) for op, d in uni if d >= level]
                group = _Group(f"{kind}_uni{level}", kind, level, False, self.units, self.units, cells)
                if level > 1:
                    parent = groups[-1]
                    position = {(c.edge, c.op): i for i, c in enumerate(parent.cells)}
                    group.parent = parent.name
                    group.parent_index = tuple(position[(c.edge, c.op)] for c in cells)
                groups.append(group)
            att = [(op, depth) for op, (k, a, depth) in recurrent if k == kind and a]
            for level in range(1, max((d for _, d in att), default=0) + 1):
                cells = [_Cell(e, op, level, direction) for direction in (0, 1)
                         for e in range(self.num_edges) for op, d in att if d >= level]
                input_dim = self.units if level == 1 else 2 * self.direction_units
                groups.append(_Group(f"{kind}_bi{level}", kind, level, True, self.direction_units, input_dim, cells))
        return groups

    def _group(self, kind: str, bidirectional: bool, level: int) -> _Group:
        return next(g for g in self.groups
                    if (g.kind, g.bidirectional, g.level) == (kind, bidirectional, level))

    def structure(self) -> tuple:
        """What the computation depends on besides the weights' values: banks with equal structures compute
        the same function of ``(x, weights, *params)``."""
        return (self.op_names, self.units, self.num_edges, self.num_heads, self.compute_dtype)

    def _attention_position(self, edge: int, op: str) -> int:
        return edge * len(self.attention_ops) + self.attention_ops.index(op)

    # ------------------------------------------------------------------ weights
    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(f"{self.name}: expected a sequence (B, T, features), received shape {shape}")
        if shape[-1] is not None and shape[-1] != self.units:
            raise ValueError(f"{self.name}: expected {self.units} input features, received shape {shape}")
        for g in self.groups:
            k, gh = len(g.cells), g.gates * g.hidden
            for part, part_shape, initializer in (
                ("kernel", (k, g.input_dim, gh), _glorot_uniform(g.input_dim, gh)),
                ("recurrent_kernel", (k, g.hidden, gh), _stacked_orthogonal()),
                ("bias", (k, gh), _forget_bias(g.kind, g.hidden)),
            ):
                var = self.add_weight(shape=part_shape, initializer=initializer, name=f"{g.name}_{part}")
                setattr(self, f"{g.name}_{part}", var)
                self.param_names.append(f"{g.name}_{part}")
        k, u, n, d = len(self.attention_keys), self.units, self.num_heads, self.key_dim
        if k:
            parts = [("query", (k, u, n, d), (k, n, d)), ("key", (k, u, n, d), (k, n, d)),
                     ("value", (k, u, n, d), (k, n, d)), ("output", (k, n, d, u), (k, u))]
            if self.projected:
                parts.insert(0, ("projection", (k, 2 * self.direction_units, u), (k, u)))
            for name, kernel_shape, bias_shape in parts:
                fan_in, fan_out = (kernel_shape[1], n * d) if name in ("query", "key", "value") else (
                    (n * d, u) if name == "output" else (kernel_shape[1], u))
                setattr(self, f"attention_{name}_kernel", self.add_weight(
                    shape=kernel_shape, initializer=_glorot_uniform(fan_in, fan_out), name=f"attention_{name}_kernel"))
                setattr(self, f"attention_{name}_bias", self.add_weight(
                    shape=bias_shape, initializer="zeros", name=f"attention_{name}_bias"))
                self.param_names += [f"attention_{name}_kernel", f"attention_{name}_bias"]
        self.built = True

    def candidate_weights(self, edge: int, op: str) -> list:
        """Candidate ``op`` of ``edge`` as numpy arrays in the order of ``make_seq_op(op, units).get_weights()``.

        Also the way to read one candidate out of the grouped weights (e.g. to inspect or transplant it).
        """
        parsed = _parse(op)
        if parsed is None or op not in self.op_names:
            raise ValueError(f"op: expected a recurrent candidate of {list(self.op_names)}, received {op!r}")
        if isinstance(edge, bool) or not isinstance(edge, int) or not 0 <= edge < self.num_edges:
            raise ValueError(f"edge: expected an integer in [0, {self.num_edges}), received {edge!r}")
        kind, att, depth = parsed
        out = []
        for level in range(1, depth + 1):
            group = self._group(kind, att, level)
            for direction in ((0, 1) if att else (0,)):
                i = group.cells.index(_Cell(edge, op, level, direction))
                for part in ("kernel", "recurrent_kernel", "bias"):
                    out.append(keras.ops.convert_to_numpy(getattr(self, f"{group.name}_{part}"))[i])
        if att:  # in the order of AttentionRNN: projection (odd units), then MultiHeadAttention's q, k, v, o
            position = self._attention_position(edge, op)
            for name in (["projection"] if self.projected else []) + ["query", "key", "value", "output"]:
                for part in ("kernel", "bias"):
                    out.append(keras.ops.convert_to_numpy(getattr(self, f"attention_{name}_{part}"))[position])
        return out

    # ------------------------------------------------------------------ computation
    def _run_loop(self, params: dict, groups: list, inputs: dict, steps):
        """One time loop over ``groups``; ``inputs[name]``: the projected input ``(T, K, B, G*H)`` of a group
        without a parent. Returns ``{name: (T, K, B, H)}`` hidden states."""
        dtype = self.compute_dtype
        batch = tf.shape(next(iter(inputs.values())))[2]
        weights = {}
        for g in groups:
            recurrent = params[f"{g.name}_recurrent_kernel"]
            if g.parent is not None:  # one product for [input, h] @ [[W], [U]]
                recurrent = ops.concatenate([params[f"{g.name}_kernel"], recurrent], axis=1)
            weights[g.name] = (recurrent, params[f"{g.name}_bias"][:, None, :])
        readers = {name: tf.TensorArray(dtype, size=steps).unstack(x) for name, x in inputs.items()}
        initial = []
        for g in groups:
            zeros = tf.zeros((len(g.cells), batch, g.hidden), dtype)
            initial.append((zeros, zeros) if g.kind == "lstm" else (zeros,))
        outputs = [tf.TensorArray(dtype, size=steps) for _ in groups]

        def body(t, states, outputs):
            new_states, new_outputs, hidden = [], [], {}
            for g, state, out in zip(groups, states, outputs):
                recurrent, bias = weights[g.name]
                h_prev = state[0]
                if g.parent is None:
                    z = readers[g.name].read(t) + tf.matmul(h_prev, recurrent)
                else:
                    below = tf.gather(hidden[g.parent], g.parent_index, axis=0)
                    z = tf.matmul(tf.concat([below, h_prev], axis=-1), recurrent) + bias
                if g.kind == "lstm":
                    zi, zf, zc, zo = tf.split(z, 4, axis=-1)
                    c = tf.sigmoid(zf) * state[1] + tf.sigmoid(zi) * tf.tanh(zc)
                    h = tf.sigmoid(zo) * tf.tanh(c)
                    new_states.append((h, c))
                else:
                    h = tf.tanh(z)
                    new_states.append((h,))
                hidden[g.name] = h
                new_outputs.append(out.write(t, h))
            return t + 1, new_states, new_outputs

        _, _, outputs = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), initial, outputs), maximum_iterations=steps
        )
        return {g.name: out.stack() for g, out in zip(groups, outputs)}

    def _project(self, params: dict, g: _Group, x, cells: slice = slice(None)):
        """The input projection of ``g``'s ``cells`` for all steps: ``(T, K, B, G*H)``.

        ``x``: ``(T, B, F)`` shared by all cells, or ``(T, K, B, F)``, one input per cell.
        """
        kernel = params[f"{g.name}_kernel"][cells]
        bias = params[f"{g.name}_bias"][cells][None, :, None, :]
        if len(x.shape) == 3:
            return tf.einsum("tbf,kfg->tkbg", x, kernel) + bias
        return tf.einsum("tkbf,kfg->tkbg", x, kernel) + bias

    def call(self, x, weights, training=None):
        check_edge_weights(weights, self)
        weights = ops.cast(weights, x.dtype)
        params = [ops.cast(getattr(self, name), self.compute_dtype) for name in self.param_names]
        if self._shared_function is not None and not tf.executing_eagerly():
            fn = self._shared_function.fn
        else:
            fn = self.compute
        if self.recompute and training:
            fn = recompute_grad(fn)
        return list(ops.unstack(fn(x, weights, *params), num=self.num_edges, axis=0))

    def compute(self, x, weights, *params):
        """The bank's function of the input ``x``, the mixing ``weights`` and the weights' values ``params``
        (one tensor per name of ``param_names``, in that order and in the compute dtype): the edges' outputs
        stacked, ``(num_edges, B, T, units)``."""
        params = dict(zip(self.param_names, params))
        x_t = tf.transpose(x, (1, 0, 2))  # time-major (T, B, F)
        x_rev = tf.reverse(x_t, axis=[0])
        steps = tf.shape(x_t)[0]
        sequences = {}  # bidirectional outputs per level: name -> (T, K, B, H), backward re-reversed in time
        # Each edge's mixture, (E, B, T, units), summed from one einsum per group of candidate outputs:
        # coefficient[k, e] = weights[e, op of output k] for the outputs of edge e, else 0.
        flat_weights = ops.reshape(weights, (-1,))
        n_ops = len(self.op_names)

        def coefficients(keys):
            index = [e * n_ops + self.op_names.index(op) for e, op in keys]
            mask = ops.one_hot(ops.convert_to_tensor([e for e, _ in keys]), self.num_edges, dtype=x.dtype)
            return ops.take(flat_weights, index)[:, None] * mask

        mixed = None

        def add(term):
            nonlocal mixed
            mixed = term if mixed is None else mixed + term

        attention_index = {}  # (edge, op) -> position along the concatenated attention outputs
        attention_outputs = []
        for loop in sorted({g.loop for g in self.groups}):
            groups = [g for g in self.groups if g.loop == loop]
            inputs = {}
            for g in groups:
                if g.parent is not None:
                    continue
                if not g.bidirectional:
                    inputs[g.name] = self._project(params, g, x_t)
                elif g.level == 1:  # forward cells read x, backward cells x reversed in time
                    half = len(g.cells) // 2
                    inputs[g.name] = tf.concat(
                        [self._project(params, g, x_t, slice(0, half)),
                         self._project(params, g, x_rev, slice(half, None))], axis=1
                    )
                else:
                    inputs[g.name] = self._project(params, g, self._bidirectional_input(g, sequences))
            hidden = self._run_loop(params, groups, inputs, steps)
            for g in groups:
                h = hidden[g.name]
                top = [i for i, c in enumerate(g.cells) if c.layer == _parse(c.op)[2] and c.direction == 0]
                if not g.bidirectional:
                    if top:
                        keys = [(g.cells[i].edge, g.cells[i].op) for i in top]
                        h_top = h if len(top) == len(g.cells) else tf.gather(h, top, axis=1)
                        add(tf.einsum("tkbh,ke->ebth", h_top, coefficients(keys)))
                    continue
                half = len(g.cells) // 2
                sequences[g.name] = tf.concat([h[:, :half], tf.reverse(h[:, half:], axis=[0])], axis=1)
                if top:
                    seq = sequences[g.name]
                    backward = [g.cells.index(_Cell(g.cells[i].edge, g.cells[i].op, g.level, 1)) for i in top]
                    both = tf.concat([tf.gather(seq, top, axis=1), tf.gather(seq, backward, axis=1)], axis=-1)
                    for i in top:
                        attention_index[(g.cells[i].edge, g.cells[i].op)] = len(attention_index)
                    attention_outputs.append(both)  # (T, K_top, B, 2 * direction_units)
        if self.attention_keys:
            # Stack in the order of attention_keys (the order of the attention weights).
            order = [attention_index[key] for key in self.attention_keys]
            y = tf.transpose(tf.gather(tf.concat(attention_outputs, axis=1), order, axis=1), (1, 2, 0, 3))  # (K, B, T, 2 * direction_units)
            add(tf.einsum("kbtu,ke->ebtu", self._attention(params, y), coefficients(self.attention_keys)))
        if "skip_connect" in self.op_names:
            skip = weights[:, self.op_names.index("skip_connect")]
            add(skip[:, None, None, None] * x[None])
        if mixed is None:  # only `none`
            return tf.zeros(tf.concat([[self.num_edges], tf.shape(x)], axis=0), dtype=x.dtype)
        return mixed

    def _attention(self, params: dict, y):
        """Keras' MultiHeadAttention (query = key = value = ``y``) added residually, for all stacked attention
        candidates at once: ``y`` is ``(K, B, T, features)``; returns ``(K, B, T, units)``."""
        def weight(name, part):
            return params[f"attention_{name}_{part}"]

        if self.projected:
            y = tf.einsum("kbtf,kfu->kbtu", y, weight("projection", "kernel")) + weight("projection", "bias")[:, None, None]
        q, k, v = (tf.einsum("kbtu,kund->kbtnd", y, weight(name, "kernel")) + weight(name, "bias")[:, None, None]
                   for name in ("query", "key", "value"))
        q = q * ops.cast(1.0 / math.sqrt(float(self.key_dim)), q.dtype)
        scores = tf.nn.softmax(tf.einsum("kbsnd,kbtnd->kbnts", k, q), axis=-1)
        context = tf.einsum("kbnts,kbsnd->kbtnd", scores, v)
        out = tf.einsum("kbtnd,kndu->kbtu", context, weight("output", "kernel")) + weight("output", "bias")[:, None, None]
        return y + out

    def _bidirectional_input(self, g: _Group, sequences: dict):
        """Per-cell inputs of bidirectional level ``l``: the aligned [forward, backward] output of level
        ``l - 1`` of the same candidate, time-reversed for the backward cells: ``(T, K, B, 2 * H)``."""
        below_group = self._group(g.kind, True, g.level - 1)
        below = sequences[below_group.name]
        index = {c: i for i, c in enumerate(below_group.cells)}
        fwd = [index[_Cell(c.edge, c.op, c.layer - 1, 0)] for c in g.cells]
        bwd = [index[_Cell(c.edge, c.op, c.layer - 1, 1)] for c in g.cells]
        merged = tf.concat([tf.gather(below, fwd, axis=1), tf.gather(below, bwd, axis=1)], axis=-1)
        half = len(g.cells) // 2
        return tf.concat([merged[:, :half], tf.reverse(merged[:, half:], axis=[0])], axis=1)

    def compute_output_shape(self, x_shape, weights_shape=None):
        return [tuple(x_shape)] * self.num_edges

    def get_config(self):
        return {**super().get_config(), "ops": list(self.op_names), "units": self.units,
                "num_edges": self.num_edges, "num_heads": self.num_heads, "recompute": self.recompute}


def share_functions(banks) -> int:
    """Let every bank of ``banks`` with the same :meth:`~GroupedSeqEdges.structure` call one traced function
    of ``(x, weights, *params)`` inside graphs, instead of tracing its own copy of the computation.

    The paper's SeqNN has 4 cells of 5 banks each; sharing leaves 4 distinct bodies (banks read by 4, 3, 2
    and 1 edges) instead of 20 in the step graph, and TensorFlow builds each one's forward-with-intermediates
    and backward function once, however many call sites it has. The function is not inlined
    (``_noinline``), so the runtime also holds one executor per body. The function closes over the first
    bank of its structure only for the plan of its groups (never for its variables: weights are arguments).

    Returns:
        The number of distinct functions.
    """
    functions = {}
    for bank in banks:
        if not isinstance(bank, GroupedSeqEdges):
            raise ValueError(f"banks: expected GroupedSeqEdges layers, received {type(bank).__name__}")
        key = bank.structure()
        if key not in functions:
            functions[key] = _Shared(tf.function(
                bank.compute, experimental_attributes={"_noinline": True}, reduce_retracing=True
            ))
        bank._shared_function = functions[key]
    return len(functions)


class _Shared:
    """Holds a shared ``tf.function`` out of sight of Keras' and ``tf.train.Checkpoint``'s attribute tracking
    (a function attribute would become a checkpoint dependency of every bank)."""

    def __init__(self, fn):
        self.fn = fn
