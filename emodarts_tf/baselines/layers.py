"""Layers of the hand-designed baselines that Keras does not ship: attention pooling over time.

(Pooling over frequency is the shared :class:`emodarts_tf.search_space.network.FrequencyPooling`.)
"""
from __future__ import annotations

import keras
from keras import ops

@keras.saving.register_keras_serializable(package="emodarts_tf")
class AttentionPooling(keras.layers.Layer):
    """Additive attention pooling over time: ``a_t = softmax_t(v . tanh(W h_t + b))``, output ``sum_t a_t h_t``.

    Args:
        units: size of the attention's hidden projection ``W``.

    Call arguments:
        inputs: a 3-D tensor (batch, time, features).

    Example:
        >>> pooled = AttentionPooling(64)(keras.ops.ones((2, 10, 32)))  # (2, 32)
    """

    def __init__(self, units: int = 64, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"AttentionPooling: units expected a positive int, received {units!r}")
        self.units = units

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"AttentionPooling: expected a (batch, time, features) input, received {input_shape}")
        features = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(features, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.score = self.add_weight(name="score", shape=(self.units, 1), initializer="glorot_uniform")

    def call(self, inputs):
        hidden = ops.tanh(ops.matmul(inputs, self.kernel) + self.bias)
        weights = ops.softmax(ops.matmul(hidden, self.score), axis=1)  # (batch, time, 1)
        return ops.sum(inputs * weights, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}
