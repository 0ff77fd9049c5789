"""The one evaluation path (evaluation.split) and the package's numpy softmax, against independent computations."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from emodarts_tf.evaluation.split import evaluate_split, inference_fn, predict_split, split_metrics
from emodarts_tf.utils.numeric import cross_entropy, log_softmax, softmax


def test_softmax_and_cross_entropy_by_hand():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 0.0]])
    e = [math.exp(1), math.exp(2), math.exp(3)]
    np.testing.assert_allclose(softmax(logits)[0], [v / sum(e) for v in e], rtol=1e-12)
    np.testing.assert_allclose(softmax(logits)[1], [0.5, 0.5, 0.0], atol=1e-12)  # no overflow
    np.testing.assert_allclose(log_softmax(logits)[0], np.log(softmax(logits)[0]), rtol=1e-12)
    assert log_softmax(logits)[1, 2] == pytest.approx(-1000.0 - math.log(2.0))  # finite where softmax underflows
    expected = -(math.log(e[2] / sum(e)) + math.log(0.5)) / 2
    assert cross_entropy(logits, [2, 1]) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="expected shape"):
        cross_entropy(logits, [0, 1, 2])


def test_split_metrics_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    labels = np.array([0, 0, 1, 1])  # predicted 0, 1, 0, 1: one right per class
    m = split_metrics(logits, labels, 2)
    assert m["ua"] == 0.5 and m["wa"] == 0.5 and m["n"] == 4 and m["confusion_matrix"] == [[1, 1], [1, 1]]
    p = softmax(logits)
    assert m["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(4), labels])), rel=1e-12)
    with pytest.raises(ValueError, match="expected 3 classes"):
        split_metrics(logits, labels, 3)


def test_evaluate_split_runs_inference_mode_and_unpacks_dict_outputs():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    h = keras.layers.Dropout(0.9)(inputs)  # active only in training mode
    logits = keras.layers.Dense(3)(h)
    model = keras.Model(inputs, {"logits": logits, "aux_logits": logits})
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    ds = tf.data.Dataset.from_tensor_slices((x, {"logits": y, "aux_logits": y})).batch(3)  # 3+3+3+1
    out, labels = predict_split(inference_fn(model), ds)
    reference = model.get_layer(index=-1)(x).numpy()  # Dense on the input, as dropout is off at inference
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, y)
    m = evaluate_split(model, ds, 3)
    assert m["n"] == 10 and m["loss"] == pytest.approx(cross_entropy(reference, y), rel=1e-5)
    with pytest.raises(ValueError, match="no batches"):
        predict_split(inference_fn(model), ds.take(0))
