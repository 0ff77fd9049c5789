"""The second-order (unrolled) alpha gradient against independent computations, in float64.

Reference: f(a) = L_val(w', a) with w' = w + mu * m - xi * (grad_w L_train(w, a) + wd * w), the validation
loss after one virtual weight step. Its gradient is computed (1) by central differences of f over every
alpha entry and (2) exactly, with nested GradientTapes through a functional (stateless) call of the model
at w'. The implementation under test replaces the exact Hessian-vector product by central finite
differences with eps = 0.01 / ||v||; it must match both, and so must the alpha update of a second-order
train_step.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from search_helpers import TinyBackbone, xor_data

from emodarts_tf.search.architect import tape_gradients, unrolled_hypergradient
from emodarts_tf.search.model import SearchModel

XI = 0.1


def _model(w_optimizer=None, a_optimizer=None, weight_decay=0.0):
    model = SearchModel(
        TinyBackbone(dtype="float64"), input_shape=(4, 4, 1), alpha_init_scale=0.5, seed=3, dtype="float64"
    )
    model.compile(
        w_optimizer or keras.optimizers.SGD(XI),
        a_optimizer or keras.optimizers.SGD(1.0),
        order="second",
        w_weight_decay=weight_decay,
        a_weight_decay=0.0,
        grad_clip=None,
    )
    return model


def _batches():
    xt, yt = xor_data(16, seed=1, dtype="float64")
    xv, yv = xor_data(16, seed=2, dtype="float64")
    return (tf.constant(xt), tf.constant(yt)), (tf.constant(xv), tf.constant(yv))


def _unrolled_weights(model, train, xi, momentum_term, weight_decay):
    """w' as tensors (differentiable w.r.t. the alphas when recorded by an outer tape)."""
    weights = model.weight_variables
    with tf.GradientTape() as inner:
        loss = model._loss_only(*train)
    grads = inner.gradient(loss, weights)
    return {
        id(v): v.value - xi * (g + weight_decay * v.value) + momentum_term.get(id(v), 0.0)
        for v, g in zip(weights, grads)
    }


def _val_loss_at(model, val, w_prime):
    trainable = [w_prime.get(id(v), v.value) for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    logits, _ = model.stateless_call(trainable, non_trainable, val[0], training=True)
    return model.loss_fn(val[1], logits)


def exact_unrolled_gradient(model, train, val, xi, momentum_term=None, weight_decay=0.0):
    """d f / d a with nested tapes: the exact second-order term, no finite differences."""
    with tf.GradientTape() as outer:
        w_prime = _unrolled_weights(model, train, xi, momentum_term or {}, weight_decay)
        loss = _val_loss_at(model, val, w_prime)
    return [g.numpy() for g in outer.gradient(loss, model.arch_variables)]


def central_difference_gradient(model, train, val, xi, momentum_term=None, weight_decay=0.0, h=1e-5):
    """d f / d a by central differences of the unrolled validation loss, entry by entry."""

    def f():
        return float(_val_loss_at(model, val, _unrolled_weights(model, train, xi, momentum_term or {}, weight_decay)))

    out = []
    for alpha in model.arch_variables:
        a0 = alpha.numpy().copy()
        grad = np.zeros_like(a0)
        for idx in np.ndindex(a0.shape):
            plus, minus = a0.copy(), a0.copy()
            plus[idx] += h
            minus[idx] -= h
            alpha.assign(plus)
            f_plus = f()
            alpha.assign(minus)
            f_minus = f()
            grad[idx] = (f_plus - f_minus) / (2 * h)
        alpha.assign(a0)
        out.append(grad)
    return out


def plain_hypergradient_check(model):
    """Compiles a float64 model at second order with SGD(XI), no decay and no clip (the references' step), and returns
    the unrolled hypergradient of every architecture variable and the exact nested-tape one, each a list of arrays,
    after checking the exact one against central differences and the implementation against the exact one."""
    model.compile(keras.optimizers.SGD(XI), keras.optimizers.SGD(1.0), order="second", w_weight_decay=0.0,
                  a_weight_decay=0.0, grad_clip=None)
    train = tuple(tf.constant(a) for a in xor_data(16, seed=1, dtype="float64"))
    val = tuple(tf.constant(a) for a in xor_data(16, seed=2, dtype="float64"))
    exact = exact_unrolled_gradient(model, train, val, XI)
    numeric = central_difference_gradient(model, train, val, XI)
    grads = tape_gradients(model._loss_only, model.weight_variables, model.arch_variables)
    hyper, _ = unrolled_hypergradient(grads, model.weight_variables, model.arch_variables, train, val, XI)
    hyper = [h.numpy() for h in hyper]
    for h, e, n in zip(hyper, exact, numeric):
        np.testing.assert_allclose(e, n, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(h, e, rtol=1e-3, atol=1e-6)
    return hyper, exact


def first_order_gradient(model, val):
    with tf.GradientTape() as tape:
        loss = model._loss_only(*val)
    return [g.numpy() for g in tape.gradient(loss, model.arch_variables)]


def _max_abs(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_exact_reference_matches_central_differences():
    model = _model()
    train, val = _batches()
    exact = exact_unrolled_gradient(model, train, val, XI)
    numeric = central_difference_gradient(model, train, val, XI)
    assert _max_abs(exact, numeric) < 1e-8


@pytest.mark.parametrize("with_momentum", [False, True], ids=["plain", "momentum+decay"])
def test_finite_difference_hypergradient_matches_exact_and_numeric(with_momentum):
    weight_decay = 3e-4 if with_momentum else 0.0
    model = _model(keras.optimizers.SGD(XI, momentum=0.9 if with_momentum else 0.0), weight_decay=weight_decay)
    model.build_optimizers()
    train, val = _batches()
    momentum, slots, momentum_term = 0.0, None, {}
    if with_momentum:
        rng = np.random.default_rng(0)
        momentum, slots = model._momentum_slots()
        for v, m in zip(model.weight_variables, slots):
            m.assign(0.05 * rng.standard_normal(m.shape))
            momentum_term[id(v)] = 0.9 * m.value

    grads = tape_gradients(model._loss_only, model.weight_variables, model.arch_variables)
    before = [v.numpy().copy() for v in model.weight_variables]
    hyper, _ = unrolled_hypergradient(
        grads, model.weight_variables, model.arch_variables, train, val, XI,
        momentum=momentum, momentum_slots=slots, weight_decay=weight_decay,
    )  # fmt: skip
    hyper = [h.numpy() for h in hyper]
    # The virtual steps leave the weights as they were.
    for v, w in zip(model.weight_variables, before):
        np.testing.assert_array_equal(v.numpy(), w)

    exact = exact_unrolled_gradient(model, train, val, XI, momentum_term, weight_decay)
    numeric = central_difference_gradient(model, train, val, XI, momentum_term, weight_decay)
    first = first_order_gradient(model, val)
    correction = _max_abs(exact, first)  # the size of the second-order term
    assert correction > 1e-4, "the test needs a visible second-order term"
    assert _max_abs(hyper, exact) < 1e-3 * correction
    assert _max_abs(hyper, numeric) < 1e-3 * correction
    # A Hessian term off by any factor (the PyTorch original's `(p - n) / 2 * eps` is off by 4 eps^2) would
    # leave an error of the size of `correction` itself, a thousand times the tolerance.


def test_second_order_train_step_moves_alphas_along_the_hypergradient():
    """With SGD(lr=1) on the alphas and no decay, one train_step changes the alphas by -d f / d a."""
    model = _model()
    train, val = _batches()
    expected = central_difference_gradient(model, train, val, XI)
    before = [a.numpy().copy() for a in model.arch_variables]
    model.train_step((train, val))
    delta = [a.numpy() - b for a, b in zip(model.arch_variables, before)]
    assert _max_abs(delta, [-e for e in expected]) < 1e-6
    assert model.a_optimizer.iterations.numpy() == 1 and model.w_optimizer.iterations.numpy() == 1


def test_first_order_train_step_uses_the_plain_validation_gradient():
    model = _model()
    model.order = "first"
    train, val = _batches()
    expected = first_order_gradient(model, val)
    before = [a.numpy().copy() for a in model.arch_variables]
    model.train_step((train, val))
    delta = [a.numpy() - b for a, b in zip(model.arch_variables, before)]
    assert _max_abs(delta, [-e for e in expected]) < 1e-12


def test_hypergradient_of_a_two_stream_supernet_with_dict_inputs(float64_policy):
    """The second-order step on the real two-stream supernet (dict inputs): the finite-difference hypergradient
    against central differences of the unrolled validation loss along one random direction per alpha kind, and
    the alpha update of a second-order train_step.

    The CNN stream has ReLUs, whose kinks the default displacement (eps = 0.01 / ||v||) crosses; the comparison
    with the derivative uses eps = 1e-5 / ||v||, where the difference quotient is the derivative. The nested-tape
    reference of this module does not apply here: batch normalisation with batch statistics computes its
    variance with ``tf.nn.moments``, which stops the gradient of the mean inside the variance (exact for first
    derivatives, not for second ones).
    """
    from emodarts_tf.config import SearchSpaceConfig
    from emodarts_tf.search_space.two_stream import TwoStreamSearchBackbone

    shapes = {"spectrogram": (4, 6, 1), "frames": (5, 3)}
    space = SearchSpaceConfig(init_channels=2, cnn_cells=3, cnn_nodes=1, stem_multiplier=1, seq_cells=1, seq_nodes=1,
                              seq_hidden=4, cnn_ops=["none", "skip_connect", "sep_conv_3x3"],
                              seq_ops=["none", "skip_connect", "rnn_1"], fusion="supplement")
    model = SearchModel(TwoStreamSearchBackbone(space, shapes, num_classes=2), input_shape=shapes,
                        alpha_init_scale=0.5, seed=3, dtype="float64")
    model.compile(keras.optimizers.SGD(XI), keras.optimizers.SGD(1.0), order="second", w_weight_decay=0.0,
                  a_weight_decay=0.0, grad_clip=None, run_eagerly=True)

    def batch(seed):
        rng = np.random.default_rng(seed)
        x = {name: tf.constant(rng.normal(size=(8, *shape))) for name, shape in shapes.items()}
        return x, tf.constant((rng.random(8) > 0.5).astype("int32"))

    train, val = batch(1), batch(2)
    grads = tape_gradients(model._loss_only, model.weight_variables, model.arch_variables)
    hyper, _ = unrolled_hypergradient(grads, model.weight_variables, model.arch_variables, train, val, XI,
                                      eps_scale=1e-5)
    first = first_order_gradient(model, val)

    def f():
        return float(_val_loss_at(model, val, _unrolled_weights(model, train, XI, {}, 0.0)))

    rng = np.random.default_rng(0)
    for i, alpha in enumerate(model.arch_variables):
        a0 = alpha.numpy().copy()
        u = rng.standard_normal(a0.shape)
        u /= np.linalg.norm(u)
        h = 1e-5
        alpha.assign(a0 + h * u)
        f_plus = f()
        alpha.assign(a0 - h * u)
        f_minus = f()
        alpha.assign(a0)
        numeric = (f_plus - f_minus) / (2 * h)
        correction = abs(numeric - float(np.sum(first[i] * u)))  # the second-order term along u
        assert correction > 1e-4, model.alpha_kinds[i]
        assert abs(float(np.sum(hyper[i].numpy() * u)) - numeric) < 2e-3 * correction, model.alpha_kinds[i]

    # a second-order step moves the alphas by minus the hypergradient (SGD(1) on the alphas, no decay)
    expected, _ = unrolled_hypergradient(grads, model.weight_variables, model.arch_variables, train, val, XI)
    before = [a.numpy().copy() for a in model.arch_variables]
    model.train_step((train, val))
    delta = [a.numpy() - b for a, b in zip(model.arch_variables, before)]
    assert _max_abs(delta, [-e.numpy() for e in expected]) < 1e-8
    assert all(np.abs(d).max() > 1e-3 for d in delta)
