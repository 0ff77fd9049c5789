"""Parameter and FLOP counts against hand-computed figures (2 FLOPs per multiply-add, 1 per add)."""
from __future__ import annotations

import keras
import pytest

from emodarts_tf.evaluation.complexity import count_params, model_complexity, model_flops


def _functional(input_shape, *layers):
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def lstm_step(d, u):
    # 4 gates: x @ W (2*d*4u) + h @ U (2*u*4u) + bias (4u) + their sum (4u); f*c, i*g, sum, o*tanh(c) (4u)
    return 2 * d * 4 * u + 2 * u * 4 * u + 4 * u + 4 * u + 4 * u


def test_dense_counts():
    model = _functional((10,), keras.layers.Dense(5, activation="relu"))
    assert model_complexity(model) == {"params": 10 * 5 + 5, "flops": 2 * 10 * 5 + 5}


def test_conv2d_counts():
    model = _functional((8, 8, 3), keras.layers.Conv2D(4, 3, padding="same"))
    # every output pixel: 3x3x3 multiply-adds per output channel, plus the bias
    assert model_complexity(model) == {"params": 3 * 3 * 3 * 4 + 4, "flops": 2 * 8 * 8 * 4 * 3 * 3 * 3 + 8 * 8 * 4}


def test_lstm_counts_every_time_step():
    t, d, u = 7, 6, 5
    model = _functional((t, d), keras.layers.LSTM(u), keras.layers.Dense(3))
    expected_flops = t * lstm_step(d, u) + (2 * u * 3 + 3)
    assert model_complexity(model) == {"params": 4 * u * (d + u + 1) + u * 3 + 3, "flops": expected_flops}


def test_analytic_lstm_matches_profiler_on_unrolled_graph():
    # With unroll=True the graph holds every step, so the profiler alone counts the whole recurrence:
    # an independent check of the analytic per-step count used for the (default) looped layer.
    t, d, u = 5, 4, 3
    looped = _functional((t, d), keras.layers.LSTM(u, return_sequences=True))
    unrolled = _functional((t, d), keras.layers.LSTM(u, return_sequences=True, unroll=True))
    assert model_flops(unrolled) == t * lstm_step(d, u)
    assert model_flops(looped) == model_flops(unrolled)


@pytest.mark.parametrize(
    "make",
    [
        lambda unroll: keras.layers.GRU(3, unroll=unroll),
        lambda unroll: keras.layers.GRU(3, reset_after=False, unroll=unroll),
        lambda unroll: keras.layers.SimpleRNN(3, unroll=unroll),
        lambda unroll: keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True, unroll=unroll)),
        lambda unroll: keras.layers.Bidirectional(keras.layers.GRU(3, unroll=unroll), merge_mode="sum"),
    ],
    ids=["gru", "gru_reset_before", "simple_rnn", "bilstm_concat", "bigru_sum"],
)
def test_other_recurrent_layers_match_unrolled(make):
    looped = _functional((6, 4), make(False))
    unrolled = _functional((6, 4), make(True))
    assert model_flops(looped) == model_flops(unrolled) > 0


def test_nested_and_shape_argument():
    inner = keras.Sequential([keras.Input((7, 6)), keras.layers.LSTM(5)])
    model = _functional((7, 6), inner, keras.layers.Dense(2))
    assert model_flops(model) == 7 * lstm_step(6, 5) + 2 * 5 * 2 + 2
    assert count_params(model) == 4 * 5 * (6 + 5 + 1) + 5 * 2 + 2
    with pytest.raises(ValueError, match="input_shape"):
        model_flops(model, input_shape=(0, 6))
