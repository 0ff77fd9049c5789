"""The search model: a searchable backbone, its architecture variables (alphas) and the bilevel step.

``SearchModel`` owns the backbone (the supernet, e.g. ``SearchBackbone``) and the alphas of the normal,
reduction and SeqNN cells as its own variables. Its custom ``compile`` takes two optimisers (the keras-io
GAN-guide pattern) and its ``train_step`` alternates, on one element ``((x_w, y_w), (x_a, y_a))`` of the
zipped weights and alphas parts:

1. the architecture step on the alphas batch (skipped, inside the graph, while ``alpha_active`` is 0:
   warm-up), first-order (``grad_a L_val(w, a)``) or second-order (unrolled, ``architect.py``), with L2
   decay on the alphas added to the gradient (pt.darts' Adam ``weight_decay``);
2. the weight step on the weights batch: global-norm clip, then coupled L2 weight decay, then SGD with
   momentum (pt.darts' order: ``clip_grad_norm_`` before ``SGD(weight_decay=...)``).

Every pass of both steps runs the network in training mode, so batch normalisation normalises with the
batch's statistics and updates its moving statistics. The first-order alpha pass (at the current weights,
on the alphas batch) keeps its update, as pt.darts' first-order step does; the second-order step restores
the moving statistics after its four passes (at ``w`` on the weights batch, then at the displaced weights
``w'`` and ``w +- eps v``, see ``architect.py``), as DARTS' throw-away copy of the network does. Only
inference-mode passes read the moving statistics (the search's validation metrics, which choose
``genotype_best``); the gradients, and so the alphas and weights, do not depend on this choice.

The backbone is any layer with ``call(x, weights, training=None)`` taking a dict of softmaxed
``(num_edges, num_ops)`` matrices, ``alpha_shapes()`` and ``derive_genotype(alphas, max_skip, meta)`` (with
``edges=`` too for a model with edge normalisation)
(``SearchBackbone``'s). Its input ``x`` is one tensor, or a dict of named tensors for a backbone of several
inputs (``TwoStreamSearchBackbone``: ``{"spectrogram", "frames"}``); the model passes it through as it is.
"""
from __future__ import annotations

import inspect
import logging

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from emodarts_tf.search import architect
from emodarts_tf.search.edge_normalization import edge_weights, edge_weights_tensor, initial_betas
from emodarts_tf.search.pruning import masked_alphas, prune_mask
from emodarts_tf.search.replicas import all_reduce_sum, for_optimizer, in_multi_replica_context, unscale_loss
from emodarts_tf.search_space.genotype import CELL_KINDS, Genotype
from emodarts_tf.search_space.validation import check_bool, check_int, check_number
from emodarts_tf.utils.numeric import softmax

log = logging.getLogger(__name__)

ORDERS = ("first", "second")
# What is traced (see SearchModel's docstring): the whole train_step, only the forward+backward function,
# nothing.
EXECUTIONS = ("graph", "eager_updates", "eager")


def resolve_execution(run_eagerly: bool, eager_updates: bool, replicas: int) -> str:
    """The execution mode (one of ``EXECUTIONS``) of ``SearchModel.compile``'s switches: ``run_eagerly``
    wins (``"eager"``); then ``eager_updates`` gives ``"eager_updates"`` with one replica (a multi-replica
    strategy's all-reduces need the step graph: ``"graph"``); otherwise ``"graph"``."""
    if run_eagerly:
        return "eager"
    if eager_updates and replicas == 1:
        return "eager_updates"
    return "graph"


def example_shape(shape):
    """The shape of one example as ``SearchModel`` keeps it: a tuple, or ``{input name: tuple}`` for a backbone
    of several inputs; None stays None."""
    if shape is None:
        return None
    if isinstance(shape, dict):
        return {name: tuple(s) for name, s in shape.items()}
    return tuple(shape)


def _with_batch(shape, batch=None):
    """``(batch,) + shape``, for a tuple or each tuple of a dict."""
    if isinstance(shape, dict):
        return {name: (batch,) + tuple(s) for name, s in shape.items()}
    return (batch,) + tuple(shape)


def _shape_config(shape):
    """``example_shape`` as JSON data (lists)."""
    if shape is None:
        return None
    if isinstance(shape, dict):
        return {name: list(s) for name, s in shape.items()}
    return list(shape)


def inner_optimizer(optimizer):
    """The optimizer itself, or the one a LossScaleOptimizer wraps."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def initial_alphas(shapes: dict, scale: float, seed: int) -> dict:
    """The alphas a search starts from: ``{kind: scale * N(0, 1)}`` (float64), drawn in the order of
    ``shapes`` from one generator seeded with ``seed`` (``SearchModel``'s initialisation)."""
    rng = np.random.default_rng(int(seed))
    return {
        kind: (float(scale) * rng.standard_normal(tuple(int(d) for d in shape))).astype("float64")
        for kind, shape in shapes.items()
    }


@keras.saving.register_keras_serializable(package="emodarts_tf")
class SearchModel(keras.Model):
    """DARTS search model: ``call(x) = backbone(x, softmax(alphas))`` (over the kept candidates, when pruned; each
    edge's row times its edge weight, with edge normalisation) and an alternating ``train_step``.

    Execution: :meth:`compile` resolves its three switches (``run_eagerly``, ``eager_updates``,
    ``jit_compile``) into one mode, :attr:`execution` (:func:`resolve_execution`), and :attr:`xla`
    (``jit_compile``, except in the ``"eager"`` mode), which XLA-compiles whatever the mode traces:

    - ``"graph"``: the default, and ``eager_updates=True`` under a multi-replica strategy (whose
      all-reduces need the step graph). Keras traces the whole ``train_step``; every pass in it calls one
      non-inlined forward+backward function (:meth:`_gradient_function`).
    - ``"eager_updates"``: ``eager_updates=True`` with one replica. Only the forward+backward function is
      traced (and, with ``arch_only_passes``, its variant without weight gradients for the alpha passes);
      ``train_step``, the update arithmetic between the passes, runs eagerly.
    - ``"eager"``: ``run_eagerly=True``, whatever the other two. Nothing is traced (debugging).

    The config's ``search.eager_updates`` and ``search.jit_compile`` reach :meth:`compile` as
    ``eager_updates`` and ``jit_compile``. Every mode computes the same step.

    Args:
        backbone: the searchable network (a Keras layer, see the module docstring).
        input_shape: shape of one example, e.g. ``(n_mfcc, frames, 1)``, or ``{input name: shape}`` for a
            backbone of several inputs (e.g. ``{"spectrogram": (128, 128, 1), "frames": (200, 40)}``); when
            given, the model (and the backbone's variables) is built at once, which ``fit()`` needs.
        alpha_init_scale: alphas start as ``alpha_init_scale * N(0, 1)`` (DARTS: 1e-3).
        seed: seed of the alpha initialisation.
        prunable: give each cell kind a keep mask (:meth:`alpha_masks`, non-trainable variables ``alpha_mask_<kind>``,
            all ones at the start) so that :meth:`prune` can take candidates out of the mixture (progressive
            pruning, :mod:`emodarts_tf.search.pruning`). Off: no mask variables (a checkpoint without them loads).
        edge_norm: give each cell kind one more architecture variable, ``beta_<kind>`` (one logit per edge, started
            like the alphas from a generator of their own), and scale each edge's mixing weights by the softmax of
            the betas of the edges into its node (PC-DARTS's edge normalisation,
            :mod:`emodarts_tf.search.edge_normalization`); the genotype then ranks a node's edges by that weight
            times the weight of the edge's best op. Off: no beta variables (a checkpoint without them loads).

    Call arguments:
        x: a batch of inputs, ``(batch,) + input_shape`` (a dict of such batches for a dict ``input_shape``).
        training: passed to the backbone.

    Example:
        ```python
        model = SearchModel(backbone, input_shape=(32, 32, 1))
        model.compile(keras.optimizers.SGD(0.025, momentum=0.9), keras.optimizers.Adam(3e-4, 0.5, 0.999))
        model.fit(tf.data.Dataset.zip((weights_ds, alphas_ds)).repeat(), steps_per_epoch=100, epochs=50)
        model.genotype(max_skip=2)
        ```
    """

    def __init__(self, backbone, input_shape=None, alpha_init_scale: float = 1e-3, seed: int = 0,
                 prunable: bool = False, edge_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        # Pruning also reads the candidates' names (which one is `none`).
        for attr in ("alpha_shapes", "derive_genotype") + (("cnn_ops", "seq_ops") if prunable else ()):
            if not hasattr(backbone, attr):
                raise ValueError(
                    f"backbone: expected a searchable layer with `{attr}` (like SearchBackbone), "
                    f"received {type(backbone).__name__}"
                )
        if edge_norm and "edges" not in inspect.signature(backbone.derive_genotype).parameters:
            raise ValueError(
                f"backbone: expected `derive_genotype(alphas, max_skip, meta, edges)` for edge_norm=True (the edge "
                f"weights rank the edges), received {type(backbone).__name__} without `edges`"
            )
        self.backbone = backbone
        self.alpha_init_scale = check_number(alpha_init_scale, "alpha_init_scale")
        self.seed = int(seed)
        self._example_shape = example_shape(input_shape)

        shapes = dict(backbone.alpha_shapes())
        unknown = [k for k in shapes if k not in CELL_KINDS]
        if unknown:
            raise ValueError(f"backbone.alpha_shapes(): unknown cell kind(s) {unknown}; expected {CELL_KINDS}")
        self.alpha_kinds = tuple(k for k in CELL_KINDS if k in shapes)
        initial = initial_alphas({k: shapes[k] for k in self.alpha_kinds}, self.alpha_init_scale, self.seed)
        self._alphas = [self._architecture_variable(f"alpha_{kind}", initial[kind]) for kind in self.alpha_kinds]
        # 1.0: the train_step updates the alphas; 0.0: warm-up (set by AlphaWarmup at epoch boundaries).
        self.alpha_active = self.add_weight(
            shape=(), initializer="ones", dtype="float32", trainable=False, autocast=False, name="alpha_active"
        )
        self.prunable = check_bool(prunable, "prunable")
        # 1: the candidate takes part in its edge's softmax; 0: pruned (mixing weight 0).
        self._alpha_masks = [
            self.add_weight(shape=tuple(a.shape), initializer="ones", dtype=self.dtype_policy.variable_dtype,
                            trainable=False, autocast=False, name=f"alpha_mask_{kind}")
            for kind, a in zip(self.alpha_kinds, self._alphas)
        ] if self.prunable else []
        self.edge_norm = check_bool(edge_norm, "edge_norm")
        self._betas = []
        if self.edge_norm:
            betas = initial_betas({k: shapes[k][0] for k in self.alpha_kinds}, self.alpha_init_scale, self.seed)
            self._betas = [self._architecture_variable(f"beta_{kind}", betas[kind]) for kind in self.alpha_kinds]
        self._search_compiled = False
        self.execution = "graph"  # set by compile()
        self.xla = False  # set by compile()
        self._gradient_fn = None  # the forward+backward function, made on first use
        self._arch_gradient_fn = None  # the same without weight gradients (arch_only_passes)
        self.arch_only_passes = True
        self._arch_updates = True  # the trace-time copy of alpha_active (multi-replica only)
        # Metric trackers, created once and exposed through `metrics` so that fit() resets them.
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.alpha_loss_tracker = keras.metrics.Mean(name="alpha_loss")
        if self._example_shape is not None:
            self.build(_with_batch(self._example_shape))

    def _architecture_variable(self, name: str, init: np.ndarray):
        """A trainable architecture variable (an alpha or beta matrix) started at ``init``, at the variable dtype and
        never autocast, also reachable as the attribute ``name``."""
        var = self.add_weight(
            shape=init.shape,
            initializer=lambda shape, dtype: ops.cast(init, dtype),
            dtype=self.dtype_policy.variable_dtype,
            trainable=True,
            autocast=False,
            name=name,
        )
        setattr(self, name, var)
        return var

    # ------------------------------------------------------------------ building and calling
    def build(self, input_shape):
        """Build the backbone for inputs of ``input_shape`` (with the batch axis; a dict of them for a backbone
        of several inputs)."""
        input_shape = example_shape(input_shape)
        if not self.backbone.built:
            self.backbone.build(input_shape)
        # Keras 3 has no public iterator over a layer's nested sub-layers (`Model.layers` is one level).
        if not all(layer.built for layer in self.backbone._flatten_layers()):
            # Some sub-layer creates its state on first call: one eager pass on a zero example builds it
            # (fit() must find every layer built, or it would try to build from the zipped data).
            def zeros(shape):
                return ops.zeros(tuple(1 if d is None else int(d) for d in shape), dtype=self.input_dtype)

            example = ({name: zeros(s) for name, s in input_shape.items()} if isinstance(input_shape, dict)
                       else zeros(input_shape))
            self.backbone(example, self.mixing_weights(), training=False)
        if self._example_shape is None:
            self._example_shape = ({name: s[1:] for name, s in input_shape.items()} if isinstance(input_shape, dict)
                                   else input_shape[1:])
        self.built = True

    def mixing_weights(self) -> dict:
        """The softmaxed alphas, ``{kind: (num_edges, num_ops)}``, as tensors; with keep masks, each edge's softmax
        over its kept candidates (0 for pruned ones); with edge normalisation, each edge's row times its edge weight."""
        # `ensure_shape` restates the static shape that a variable read loses inside the non-inlined
        # gradient functions (grappler's cost model would warn about a Softmax of unknown rank).
        out = {}
        for i, (kind, variable) in enumerate(zip(self.alpha_kinds, self._alphas)):
            alpha = tf.ensure_shape(tf.convert_to_tensor(variable), variable.shape)
            if self._alpha_masks:
                # A pruned candidate's logit is far below any alpha: its softmax weight, and the loss's gradient
                # with respect to its alpha, are 0.
                mask = tf.ensure_shape(tf.convert_to_tensor(self._alpha_masks[i]), variable.shape)
                alpha = tf.where(mask > 0.5, alpha, tf.constant(-1e9, alpha.dtype))
            out[kind] = ops.softmax(alpha, axis=-1)
            if self._betas:
                beta = tf.ensure_shape(tf.convert_to_tensor(self._betas[i]), self._betas[i].shape)
                out[kind] = out[kind] * edge_weights_tensor(beta)[:, None]
        return out

    def call(self, x, training=None):
        return self.backbone(x, self.mixing_weights(), training=training)

    def set_alpha_updates(self, enabled: bool) -> None:
        """Turn the architecture step on (after warm-up) or off (warm-up), from a callback between epochs."""
        enabled = bool(enabled)
        self.alpha_active.assign(1.0 if enabled else 0.0)
        if enabled != self._arch_updates:
            self._arch_updates = enabled
            if self._search_compiled and self.distribute_strategy.num_replicas_in_sync > 1:
                self.make_train_function(force=True)

    @property
    def eager_updates(self) -> bool:
        """The ``"eager_updates"`` execution (see the class docstring)."""
        return self.execution == "eager_updates"

    # ------------------------------------------------------------------ variables
    @property
    def arch_variables(self) -> list:
        """The alphas, then (with ``edge_norm``) the betas, in the order of :attr:`alpha_kinds`."""
        return list(self._alphas) + list(self._betas)

    @property
    def weight_variables(self) -> list:
        """Every trainable variable that is not an architecture variable (alpha or beta; split by identity)."""
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    @property
    def state_variables(self) -> list:
        """Non-trainable backbone variables (batch-norm moving statistics)."""
        return list(self.backbone.non_trainable_variables)

    # ------------------------------------------------------------------ compile
    def compile(
        self,
        w_optimizer,
        a_optimizer,
        loss=None,
        *,
        order: str = "first",
        w_weight_decay: float = 3e-4,
        a_weight_decay: float = 1e-3,
        grad_clip: float | None = 5.0,
        jit_compile: bool = False,
        run_eagerly: bool = False,
        steps_per_execution: int = 1,
        eager_updates: bool = False,
        arch_only_passes: bool = True,
    ):
        """Configure the bilevel step.

        Args:
            w_optimizer: optimizer of the network weights; SGD (with momentum) in DARTS. Its learning
                rate (or schedule) is also the ``xi`` of the second-order step.
            a_optimizer: optimizer of the alphas; Adam(3e-4, 0.5, 0.999) in DARTS.
            loss: ``loss(y_true, logits)``; default sparse categorical cross-entropy from logits.
            order: ``"first"`` or ``"second"`` (unrolled) architecture gradient.
            w_weight_decay: coupled L2 decay added to the (clipped) weight gradients.
            a_weight_decay: L2 decay added to the alpha gradients.
            grad_clip: global-norm clip of the weight gradients (None: no clip).
            jit_compile: XLA-compile what the execution mode traces (slower on CPUs; opt-in): the train step,
                or with ``eager_updates`` the forward+backward function; no effect with ``run_eagerly``.
            run_eagerly: run everything eagerly, the forward+backward passes included (debugging).
            eager_updates: compile only the forward+backward pass (one traced function, called by every
                pass of a step) and run the per-variable arithmetic between the passes (the virtual step,
                the finite differences, clipping, decay, the optimizer updates) eagerly. The step graph is
                then the network's gradient alone: far less graph to trace, optimise and hold (the update
                arithmetic is a few ops per weight variable and pass, tens of thousands of nodes in a
                large supernet), and each temporary copy of the weights is freed as soon as it is used.
                Costs the eager dispatch of those ops (about ``10 * variables`` ops per pass), which only
                pays off in large networks. Ignored, with a log line, under a multi-replica strategy,
                whose all-reduces need the step graph.
            arch_only_passes: the passes that need only the alpha gradients (first order's alpha pass, the
                two finite-difference passes of second order) call a second traced forward+backward function
                that computes no weight gradients (no filter, kernel or recurrent-weight gradients): about a
                third less time per such pass, for the memory of one more traced function. False: every
                pass calls the one function of the weight passes and drops its weight gradients. The same
                values either way. In the ``"graph"`` execution Grappler already prunes the unused weight
                gradients of each call (one specialisation per call pattern), so it changes nothing there.

        The three switches resolve into :attr:`execution` and :attr:`xla` (see the class docstring).
        """
        if order not in ORDERS:
            raise ValueError(f"order: expected one of {ORDERS}, received {order!r}")
        w_weight_decay = check_number(w_weight_decay, "w_weight_decay")
        a_weight_decay = check_number(a_weight_decay, "a_weight_decay")
        grad_clip = check_number(grad_clip, "grad_clip", strict=True, optional=True)
        if isinstance(w_optimizer, str) or isinstance(a_optimizer, str):
            w_optimizer = keras.optimizers.get(w_optimizer)
            a_optimizer = keras.optimizers.get(a_optimizer)
        if w_optimizer is a_optimizer:
            raise ValueError("w_optimizer and a_optimizer: expected two distinct optimizer instances")
        for name, value in (("eager_updates", eager_updates), ("run_eagerly", run_eagerly),
                            ("jit_compile", jit_compile), ("arch_only_passes", arch_only_passes)):
            check_bool(value, name)
        replicas = self.distribute_strategy.num_replicas_in_sync
        execution = resolve_execution(run_eagerly, eager_updates, replicas)
        if eager_updates and execution == "graph":
            log.info("eager_updates: off with %d replicas (the step's all-reduces need the step graph)", replicas)
        if jit_compile and execution == "eager":
            log.info("jit_compile: no effect with run_eagerly (nothing is traced)")
        if self.dtype_policy.name == "mixed_float16":
            LSO = keras.optimizers.LossScaleOptimizer
            if not isinstance(w_optimizer, LSO):
                w_optimizer = LSO(w_optimizer, name="w_loss_scale_optimizer")
            if not isinstance(a_optimizer, LSO):
                a_optimizer = LSO(a_optimizer, name="a_loss_scale_optimizer")
        self.w_optimizer = w_optimizer
        self.a_optimizer = a_optimizer
        if loss is None:
            # The loss's dtype follows the variables (float32 under mixed precision, float64 in the
            # gradient-check tests).
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=self.variable_dtype)
        self.loss_fn = loss
        self.order = order
        self.w_weight_decay = w_weight_decay
        self.a_weight_decay = a_weight_decay
        self.grad_clip = grad_clip
        self.execution = execution
        self.xla = jit_compile and execution != "eager"
        self.arch_only_passes = arch_only_passes
        self._gradient_fn = None
        self._arch_gradient_fn = None
        # `optimizer=w_optimizer` makes it `model.optimizer` (LearningRateScheduler, TensorBoard's lr).
        # Keras traces train_step in the "graph" execution only; otherwise it runs it eagerly.
        super().compile(
            optimizer=w_optimizer,
            loss=None,
            jit_compile=self.xla and execution == "graph",
            run_eagerly=execution != "graph",
            steps_per_execution=steps_per_execution,
            auto_scale_loss=False,
        )
        self._search_compiled = True
        if self.built:
            self.build_optimizers()

    def build_optimizers(self) -> None:
        """Create both optimizers' slots (on their own variables only); needed before ``fit`` or restore."""
        if not self.built:
            raise ValueError("build_optimizers: the model is not built; pass input_shape or call build() first")
        if not self.w_optimizer.built:
            self.w_optimizer.build(self.weight_variables)
        if not self.a_optimizer.built:
            self.a_optimizer.build(self.arch_variables)

    @property
    def metrics(self):
        if not self._search_compiled:
            return []
        return [self.loss_tracker, self.accuracy_tracker, self.alpha_loss_tracker]

    # ------------------------------------------------------------------ the bilevel step
    def _loss(self, x, y, training=True):
        logits = self(x, training=training)
        loss = self.loss_fn(y, ops.cast(logits, "float32") if logits.dtype != self.variable_dtype else logits)
        return loss, logits

    def _loss_only(self, x, y):
        return self._loss(x, y, training=True)[0]

    @staticmethod
    def _scale(optimizer):
        """The loss scale of a LossScaleOptimizer (or a fixed loss_scale_factor), else 1."""
        return optimizer.scale_loss(tf.constant(1.0, tf.float32))

    def current_w_lr(self):
        """The weight learning rate at the current step (the cosine schedule's value)."""
        return inner_optimizer(self.w_optimizer).learning_rate

    def _momentum_slots(self):
        opt = inner_optimizer(self.w_optimizer)
        momentum = float(getattr(opt, "momentum", 0.0) or 0.0)
        slots = getattr(opt, "momentums", None)
        if not momentum or not slots:
            return 0.0, None
        if getattr(opt, "nesterov", False):
            log.debug("second-order virtual step: Nesterov momentum approximated by plain momentum")
        # Keras 3 has no public map from a variable to its optimizer slot; its own SGD uses this index.
        return momentum, [slots[opt._get_variable_index(v)] for v in self.weight_variables]

    def _forward_backward(self, x, y, scale):
        """``(loss, logits, alpha_grads, weight_grads)``: the training-mode loss and the gradients of
        ``loss * scale`` w.r.t. the alphas and the weights."""
        targets = self.arch_variables + self.weight_variables
        with tf.GradientTape() as tape:
            loss, logits = self._loss(x, y)
            scaled = loss * tf.cast(scale, loss.dtype)
        grads = architect.dense_gradients(tape.gradient(scaled, targets), targets)
        n = len(self.arch_variables)
        return loss, logits, grads[:n], grads[n:]

    def _forward_backward_arch(self, x, y, scale):
        """``(loss, alpha_grads)``: :meth:`_forward_backward` without the weight gradients
        (:func:`architect.tape_gradients` with ``wrt="arch"``: the tape watches the alphas only, so the backward
        pass computes the gradients with respect to the activations that lead to them and none with respect to
        the weights)."""
        gradients = architect.tape_gradients(self._loss_only, self.weight_variables, self.arch_variables)
        loss, arch_grads, _ = gradients(x, y, scale, "arch")
        return loss, arch_grads

    def _traced(self, fn):
        return tf.function(
            fn,
            experimental_attributes={"_noinline": True},
            reduce_retracing=True,
            jit_compile=(self.xla and self.execution == "eager_updates") or None,
        )

    @property
    def skips_weight_gradients(self) -> bool:
        """Whether the passes that need only the alpha gradients call the function without weight gradients
        (``arch_only_passes`` outside the ``"graph"`` execution)."""
        return bool(self.arch_only_passes) and self.execution != "graph"

    def _arch_only(self, wrt: str) -> bool:
        return wrt == "arch" and self.skips_weight_gradients

    def _gradient_function(self, wrt: str = "all"):
        """The forward+backward function of a pass: :meth:`_forward_backward` (``wrt="all"``) or, for a pass that
        needs only the alpha gradients with ``arch_only_passes`` on outside the ``"graph"`` execution,
        :meth:`_forward_backward_arch` (``wrt="arch"``). Each is the method itself in the ``"eager"``
        execution, else one ``tf.function`` of it, traced once and not inlined, so that graph optimisation sees
        its body once instead of once per pass (the second-order step makes five passes)."""
        arch = self._arch_only(wrt)
        if self.execution == "eager":
            return self._forward_backward_arch if arch else self._forward_backward
        if arch:
            if self._arch_gradient_fn is None:
                self._arch_gradient_fn = self._traced(self._forward_backward_arch)
            return self._arch_gradient_fn
        if self._gradient_fn is None:
            self._gradient_fn = self._traced(self._forward_backward)
        return self._gradient_fn

    def _gradients(self, x, y, scale, wrt="all"):
        """``(loss, logits, alpha_grads, weight_grads)`` of ``loss * scale``; ``wrt="arch"``: no weight grads
        (and no logits when the arch-only function ran)."""
        if wrt not in ("all", "arch"):
            raise ValueError(f"wrt: expected 'all' or 'arch', received {wrt!r}")
        out = self._gradient_function(wrt)(x, y, tf.cast(scale, tf.float32))
        if self._arch_only(wrt):
            return out[0], None, out[1], []
        loss, logits, arch_grads, weight_grads = out
        return loss, logits, arch_grads, (weight_grads if wrt == "all" else [])

    def _architect_gradients(self, x, y, scale, wrt):
        loss, _, arch_grads, weight_grads = self._gradients(x, y, scale, wrt)
        return loss, arch_grads, (weight_grads if wrt == "all" else None)

    def _arch_gradients(self, x_a, y_a, x_w, y_w, scale):
        if self.order == "first":
            loss, _, grads, _ = self._gradients(x_a, y_a, scale, "arch")
            return all_reduce_sum(list(grads)), loss
        momentum, slots = self._momentum_slots()
        return architect.unrolled_hypergradient(
            self._architect_gradients,
            self.weight_variables,
            self.arch_variables,
            (x_w, y_w),
            (x_a, y_a),
            self.current_w_lr(),
            momentum=momentum,
            momentum_slots=slots,
            weight_decay=self.w_weight_decay,
            extra_state=self.state_variables,
            scale=scale,
        )

    def _arch_step(self, x_a, y_a, x_w, y_w):
        scale = self._scale(self.a_optimizer)
        grads, loss = self._arch_gradients(x_a, y_a, x_w, y_w, scale)
        if self.a_weight_decay:
            grads = [
                g + tf.cast(scale * self.a_weight_decay, g.dtype) * a.value for g, a in zip(grads, self.arch_variables)
            ]
        self.a_optimizer.apply(for_optimizer(grads), self.arch_variables)
        self.alpha_loss_tracker.update_state(unscale_loss(loss))
        return tf.constant(0, tf.int32)

    def _weight_step(self, x_w, y_w):
        weights = self.weight_variables
        scale = self._scale(self.w_optimizer)
        loss, logits, _, grads = self._gradients(x_w, y_w, scale, "all")
        grads = all_reduce_sum(list(grads))
        factor = None
        if self.grad_clip is not None:
            # tf.clip_by_global_norm's factor, NaN for a non-finite norm as there (so that a loss-scale
            # optimizer sees the overflow). Clipping the scaled gradients at clip * scale equals clipping the
            # true ones at clip.
            clip = tf.cast(self.grad_clip * scale, grads[0].dtype)
            norm = tf.linalg.global_norm(grads)
            factor = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)
        decay = tf.cast(scale * self.w_weight_decay, grads[0].dtype) if self.w_weight_decay else None
        # In place, one gradient at a time: run eagerly ("eager_updates"), each old gradient is freed at once.
        for i, w in enumerate(weights):
            g = grads[i] if factor is None else grads[i] * tf.cast(factor, grads[i].dtype)
            grads[i] = g if decay is None else g + tf.cast(decay, g.dtype) * w.value
        self.w_optimizer.apply(for_optimizer(grads), weights)
        self.loss_tracker.update_state(unscale_loss(loss))
        self.accuracy_tracker.update_state(y_w, logits)

    def train_step(self, data):
        try:
            (x_w, y_w), (x_a, y_a) = data
        except (TypeError, ValueError):
            raise ValueError(
                "SearchModel.train_step: expected ((x_weights, y_weights), (x_alphas, y_alphas)), the zip of "
                f"the weights part and the alphas part; received {data!r}"
            ) from None
        # Warm-up: nothing of the alphas' (values, Adam moments, step count) moves while it lasts.
        if in_multi_replica_context():
            # tf.distribute cannot all-reduce inside a tf.cond branch (merge_call), so with several replicas
            # the branch is taken at trace time and set_alpha_updates() re-traces when it changes.
            if self._arch_updates:
                self._arch_step(x_a, y_a, x_w, y_w)
        else:
            # One graph for both phases: a graph-level branch on the alpha_active flag.
            tf.cond(
                self.alpha_active > 0.5,
                lambda: self._arch_step(x_a, y_a, x_w, y_w),
                lambda: tf.constant(0, tf.int32),
            )
        self._weight_step(x_w, y_w)
        logs = {m.name: m.result() for m in self.metrics}
        logs["lr"] = tf.cast(self.current_w_lr(), tf.float32)
        return logs

    def test_step(self, data):
        x, y = data[0], data[1]
        loss, logits = self._loss(x, y, training=False)
        self.loss_tracker.update_state(unscale_loss(loss))
        self.accuracy_tracker.update_state(y, logits)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}

    # ------------------------------------------------------------------ alphas and genotypes
    def alpha_arrays(self) -> dict:
        """The raw alphas (logits), ``{kind: numpy (num_edges, num_ops)}``."""
        return {k: np.asarray(keras.ops.convert_to_numpy(a)) for k, a in zip(self.alpha_kinds, self._alphas)}

    def alpha_masks(self) -> dict:
        """The keep masks, ``{kind: numpy (num_edges, num_ops)}`` of 1 (in the mixture) and 0 (pruned); all ones
        when the model is not ``prunable``."""
        if not self._alpha_masks:
            return {k: np.ones(tuple(a.shape)) for k, a in zip(self.alpha_kinds, self._alphas)}
        return {k: np.asarray(keras.ops.convert_to_numpy(m), dtype=np.float64)
                for k, m in zip(self.alpha_kinds, self._alpha_masks)}

    def alpha_weights(self) -> dict:
        """The op weights as numpy arrays: the softmaxed alphas of the kept candidates, 0 for pruned ones (each row
        sums to 1; with edge normalisation the mixture also scales the row by :meth:`edge_weights`)."""
        return {k: softmax(v) for k, v in masked_alphas(self.alpha_arrays(), self.alpha_masks()).items()}

    def beta_arrays(self) -> dict:
        """The raw betas, ``{kind: numpy (num_edges,)}``; empty without edge normalisation."""
        return {k: np.asarray(keras.ops.convert_to_numpy(b)) for k, b in zip(self.alpha_kinds, self._betas)}

    def edge_weights(self) -> dict:
        """Each edge's weight in its node, ``{kind: numpy (num_edges,)}`` (the softmax of the betas of the edges into
        the node, :func:`~emodarts_tf.search.edge_normalization.edge_weights`); empty without edge normalisation."""
        return {k: edge_weights(b) for k, b in self.beta_arrays().items()}

    def candidate_ops(self) -> dict:
        """``{kind: tuple of op names}``: the candidates of each cell kind's edges, in the alphas' column order (the
        backbone's ``cnn_ops`` for normal and reduction cells, ``seq_ops`` for SeqNN cells)."""
        ops_of = {"normal": self.backbone.cnn_ops, "reduce": self.backbone.cnn_ops, "seq": self.backbone.seq_ops}
        return {kind: tuple(ops_of[kind]) for kind in self.alpha_kinds}

    def prune(self, keep: int, drop_none: bool = False) -> dict:
        """Keep, on every edge, the ``keep`` candidates of the largest mixing weight among those still kept; with
        ``drop_none``, ``none`` goes first (:func:`emodarts_tf.search.pruning.prune_mask`). Returns ``{kind:
        candidates left per edge}``. ValueError (no mask changed) when the model is not ``prunable`` or an edge
        would be left without a candidate."""
        if not self._alpha_masks:
            raise ValueError("prune: this SearchModel was built with prunable=False (no keep masks)")
        keep = check_int(keep, "keep")
        ops_of = self.candidate_ops()
        new = {}
        for kind, alpha, mask in zip(self.alpha_kinds, self._alphas, self._alpha_masks):
            names = ops_of[kind]
            try:
                new[kind] = prune_mask(keras.ops.convert_to_numpy(alpha), keras.ops.convert_to_numpy(mask), keep,
                                       names.index("none") if "none" in names else None, drop_none)
            except ValueError as exc:
                raise ValueError(f"{kind} cell ({len(names)} ops {list(names)}): {exc}") from None
        for kind, mask in zip(self.alpha_kinds, self._alpha_masks):
            mask.assign(new[kind].astype(keras.backend.standardize_dtype(mask.dtype)))
        return {kind: int(m.sum(axis=1).max()) for kind, m in new.items()}

    def initial_alpha_weights(self) -> dict:
        """The softmaxed alphas of the search's start (before any step), as ``alpha_weights()`` returned
        them then: the seeded initial values, recomputed (at the alphas' variable dtype), so that a resumed
        search knows where it started."""
        shapes = {k: tuple(a.shape) for k, a in zip(self.alpha_kinds, self._alphas)}
        initial = initial_alphas(shapes, self.alpha_init_scale, self.seed)
        return {
            k: softmax(initial[k].astype(keras.backend.standardize_dtype(a.dtype)).astype(np.float64))
            for k, a in zip(self.alpha_kinds, self._alphas)
        }

    def initial_edge_weights(self) -> dict:
        """The edge weights of the search's start (:meth:`edge_weights` before any step), recomputed from the seeded
        initial betas at their variable dtype; empty without edge normalisation."""
        if not self._betas:
            return {}
        initial = initial_betas({k: int(b.shape[0]) for k, b in zip(self.alpha_kinds, self._betas)},
                                self.alpha_init_scale, self.seed)
        return {k: edge_weights(initial[k].astype(keras.backend.standardize_dtype(b.dtype)))
                for k, b in zip(self.alpha_kinds, self._betas)}

    def genotype(self, max_skip: int | None = None, meta: dict | None = None) -> Genotype:
        """The DARTS genotype of the current alphas (top-2 edges per node, best non-none op each), derived by
        the backbone (``SearchBackbone.derive_genotype``: its ops and node counts); with edge normalisation a node's
        edges are ranked by their edge weight times their best op's weight."""
        alphas = masked_alphas(self.alpha_arrays(), self.alpha_masks())
        if self._betas:
            return self.backbone.derive_genotype(alphas, max_skip=max_skip, meta=meta, edges=self.edge_weights())
        return self.backbone.derive_genotype(alphas, max_skip=max_skip, meta=meta)

    # ------------------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "input_shape": _shape_config(self._example_shape),
                "alpha_init_scale": self.alpha_init_scale,
                "seed": self.seed,
                "prunable": self.prunable,
                "edge_norm": self.edge_norm,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
