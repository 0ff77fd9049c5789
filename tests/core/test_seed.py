"""seed_everything: the same draws after seeding, with or without keeping TensorFlow's compiled functions."""
from __future__ import annotations

import random

import numpy as np
import tensorflow as tf

from emodarts_tf.utils.seed import seed_everything


def _draws():
    return random.random(), float(np.random.rand()), tf.random.uniform([3]).numpy(), tf.random.normal([2]).numpy()


def _same(a, b):
    assert a[0] == b[0] and a[1] == b[1]
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[3], b[3])


def test_keep_compiled_restarts_python_numpy_and_the_op_seed_sequence():
    from tensorflow.python.eager import context

    seed_everything(11)
    first = _draws()
    expected_op_seed = random.Random(11).randint(0, 2**31 - 1)  # what the context hands the next unseeded op
    seed_everything(11, keep_compiled=True)  # TensorFlow's seed already 11: its op-seed sequence restarts
    again = _draws()
    assert first[:2] == again[:2]
    assert context.context()._rng.getstate() != random.Random(11).getstate()  # advanced by the draws above
    seed_everything(11, keep_compiled=True)
    assert context.context()._rng.randint(0, 2**31 - 1) == expected_op_seed
    seed_everything(11)
    _same(first, _draws())


def test_keep_compiled_with_another_seed_seeds_everything():
    seed_everything(11)
    seed_everything(12, keep_compiled=True)  # another seed: set as usual
    draws = _draws()
    seed_everything(12)
    _same(draws, _draws())
    assert not np.array_equal(draws[2], (seed_everything(11), _draws())[1][2])


def test_keep_compiled_keeps_an_instantiated_function():
    calls = []

    @tf.function
    def f(x):
        calls.append(1)  # runs at tracing only
        return x * 2.0

    seed_everything(5)
    f(tf.constant(1.0))
    seed_everything(5, keep_compiled=True)
    assert float(f(tf.constant(2.0))) == 4.0 and len(calls) == 1
