"""The second-order (unrolled) DARTS architecture gradient.

DARTS (Liu et al., 2019, eq. 7-8) approximates the architecture gradient of the bilevel problem by one
virtual weight step::

    w'  = w - xi * grad_w L_train(w, a)
    g_a = grad_a L_val(w', a) - xi * grad2_{a,w} L_train(w, a) . grad_w' L_val(w', a)

and the Hessian-vector product by central finite differences::

    grad2_{a,w} L_train(w, a) . v  ~=  (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps)
    w+- = w +- eps * v,   v = grad_w' L_val(w', a),   eps = 0.01 / ||v||

(divided by ``2 eps``; the PyTorch emoDARTS code multiplies by ``eps / 2`` instead, a bug not copied).

As in DARTS and pt.darts, the virtual step is the weight optimizer's next step without gradient
clipping: SGD with coupled weight decay and momentum, ``w' = w - xi * (g + wd * w) + momentum * m``
(``m`` the Keras SGD momentum slot, which stores ``momentum * m_prev - lr * g``, so ``w + momentum * m -
lr * g`` is exactly the step Keras would take). Momentum and decay do not depend on ``a``, so they move
``w'`` but leave the form of the hypergradient unchanged.

Memory: instead of a copy of the network (pt.darts' ``v_net``), the weights are overwritten in place by
``w'``, then ``w+`` and ``w-``, and restored at the end, so the step needs one extra copy of the weights
(not of the activations) on top of one forward and backward pass at a time. The non-trainable state given
in ``extra_state`` (batch-norm moving statistics) is restored as well, so the four passes of this step
(one at ``w``, three at displaced weights) leave no trace on them, as with DARTS's throw-away copy. The
first-order alpha step (``model.py``) keeps the moving-statistics update of its one pass at the current
weights, as pt.darts' first-order step does.
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from emodarts_tf.search.replicas import all_reduce_sum, assign_each, assign_variables


def dense_gradients(grads: Sequence, variables: Sequence) -> list:
    """Gradients with ``None`` (a variable the loss does not reach) replaced by zeros."""
    out = []
    for g, v in zip(grads, variables):
        if g is None:
            g = tf.zeros(v.shape, dtype=v.dtype)
        elif isinstance(g, tf.IndexedSlices):
            g = tf.convert_to_tensor(g)
        out.append(g)
    return out


def _read(v) -> tf.Tensor:
    return tf.identity(getattr(v, "value", v))


def _watched(variables: Sequence) -> list:
    return [getattr(v, "value", v) for v in variables]


def tape_gradients(loss_fn: Callable, weight_variables: Sequence, arch_variables: Sequence) -> Callable:
    """A ``gradients(x, y, scale, wrt)`` function (see :func:`unrolled_hypergradient`) from a plain
    ``loss_fn(x, y)``, with one ``tf.GradientTape`` per call."""
    weight_variables = list(weight_variables)
    arch_variables = list(arch_variables)

    def gradients(x, y, scale=1.0, wrt="all"):
        with tf.GradientTape(watch_accessed_variables=(wrt == "all")) as tape:
            if wrt != "all":
                tape.watch(_watched(arch_variables))
            loss = loss_fn(x, y)
            scaled = loss * tf.cast(scale, loss.dtype)
        targets = arch_variables + (weight_variables if wrt == "all" else [])
        grads = dense_gradients(tape.gradient(scaled, targets), targets)
        n = len(arch_variables)
        return loss, grads[:n], (grads[n:] if wrt == "all" else None)

    return gradients


def unrolled_hypergradient(
    gradients: Callable,
    weight_variables: Sequence,
    arch_variables: Sequence,
    train_batch: tuple,
    val_batch: tuple,
    xi,
    *,
    momentum: float = 0.0,
    momentum_slots: Sequence | None = None,
    weight_decay: float = 0.0,
    extra_state: Sequence = (),
    scale=1.0,
    eps_scale: float = 0.01,
):
    """Second-order DARTS gradient of the validation loss w.r.t. the architecture variables.

    Args:
        gradients: ``gradients(x, y, scale, wrt)`` -> ``(loss, arch_grads, weight_grads)``: the loss of
            the network at the current variable values (training mode) and the gradients of
            ``loss * scale``, w.r.t. the architecture variables and, with ``wrt="all"``, the weights
            (``wrt="arch"`` may return None for them). Under ``tf.distribute`` the per-replica loss
            divided by the replica count (what Keras losses return). ``SearchModel`` passes its traced
            functions (the full pass, reused by every ``wrt="all"`` pass, and with ``arch_only_passes`` one
            without weight gradients for the two ``wrt="arch"`` passes); :func:`tape_gradients` makes one from a
            plain loss function.
        weight_variables: the network weights ``w``.
        arch_variables: the architecture variables ``a``.
        train_batch: ``(x, y)`` of the weights part (the virtual step and the Hessian term).
        val_batch: ``(x, y)`` of the alphas part.
        xi: the virtual step's learning rate (DARTS: the current weight learning rate).
        momentum, momentum_slots: the weight optimizer's momentum and its Keras SGD momentum variables
            (one per weight, same order); ``None`` or ``momentum == 0`` leaves momentum out.
        weight_decay: coupled (L2) weight decay of the weight optimizer.
        extra_state: variables to restore after the virtual passes (batch-norm moving statistics).
        scale: loss scale (mixed float16); every returned gradient is multiplied by it, internal weight
            displacements are unscaled.
        eps_scale: the 0.01 of ``eps = 0.01 / ||grad_w' L_val||``.

    Returns:
        ``(grads, val_loss)``: a list with one hypergradient per architecture variable (times ``scale``)
        and the validation loss at ``w'`` (as ``gradients`` returned it).
    """
    weight_variables = list(weight_variables)
    arch_variables = list(arch_variables)
    x_t, y_t = train_batch
    x_v, y_v = val_batch

    w0 = [_read(v) for v in weight_variables]
    s0 = [_read(v) for v in extra_state]
    unit_scale = tf.get_static_value(scale) == 1  # no loss scaling: no unscaling copies

    def unscaled(g, w):
        g = tf.cast(g, w.dtype)
        return g if unit_scale else g / tf.cast(scale, w.dtype)

    # Each list of weight-sized tensors is dropped as soon as it is used: run eagerly (the search model's
    # eager_updates), that frees its memory at once; in a graph it changes nothing.
    # 1. The virtual step w' = w - xi * (grad_w L_train + wd * w) + momentum * m.
    _, _, g_train = gradients(x_t, y_t, scale, "all")
    g_train = all_reduce_sum(list(g_train))

    def virtual(i):
        w = w0[i]
        dt = w.dtype
        step = unscaled(g_train[i], w)
        if weight_decay:
            step = step + tf.cast(weight_decay, dt) * w
        new = w - tf.cast(xi, dt) * step
        if momentum and momentum_slots is not None:
            new = new + tf.cast(momentum, dt) * tf.cast(_read(momentum_slots[i]), dt)
        return new

    assign_each(weight_variables, virtual)
    del g_train

    # 2. grad_a L_val(w', a) and v = grad_w' L_val(w', a).
    loss_v, d_alpha, d_w = gradients(x_v, y_v, scale, "all")
    d_alpha = all_reduce_sum(list(d_alpha))
    v = [unscaled(g, w) for g, w in zip(all_reduce_sum(list(d_w)), w0)]
    del d_w

    # 3. eps = 0.01 / ||v||; the finite-difference Hessian-vector product at w +- eps v.
    # The norm in the widest dtype of the weights (float64 in the gradient-check test).
    norm_dtype = tf.float64 if any(t.dtype == tf.float64 for t in v) else tf.float32
    norm = tf.linalg.global_norm([tf.cast(t, norm_dtype) for t in v]) if v else tf.constant(0.0, norm_dtype)
    eps = tf.cast(eps_scale, norm_dtype) / tf.maximum(norm, tf.constant(1e-12, norm_dtype))

    def arch_grads_at(sign: float) -> list:
        assign_each(weight_variables, lambda i: w0[i] + tf.cast(sign * eps, w0[i].dtype) * v[i])
        _, d_a, _ = gradients(x_t, y_t, scale, "arch")
        return all_reduce_sum(list(d_a))

    d_pos = arch_grads_at(1.0)
    d_neg = arch_grads_at(-1.0)
    del v

    # 4. Restore w (and the moving statistics the virtual passes updated).
    assign_variables(weight_variables, w0)
    del w0
    if extra_state:
        assign_variables(list(extra_state), s0)

    hyper = []
    for da, p, n, a in zip(d_alpha, d_pos, d_neg, arch_variables):
        dt = a.dtype
        hessian = (tf.cast(p, dt) - tf.cast(n, dt)) / (2.0 * tf.cast(eps, dt))
        hyper.append(tf.cast(da, dt) - tf.cast(xi, dt) * hessian)
    return hyper, loss_v
