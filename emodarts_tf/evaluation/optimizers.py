"""SGD with coupled L2 weight decay, as PyTorch's ``torch.optim.SGD(weight_decay=...)`` and DARTS use it.

Keras' ``weight_decay`` is decoupled (``w -= lr * wd * w`` beside the gradient step, untouched by
momentum). PyTorch adds ``wd * w`` to the gradient before the momentum buffer, so the decay is amplified
by ``1 / (1 - momentum)`` (10x at 0.9). The search's weight step (``SearchModel``) already uses the coupled
form; retraining uses this optimiser so that both stages regularise alike.
"""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="emodarts_tf")
class CoupledSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` whose gradient gains ``l2 * w`` (after clipping, before momentum).

    Args:
        l2: the coupled weight-decay coefficient (>= 0).
        **kwargs: ``keras.optimizers.SGD`` arguments (learning rate, momentum, clipping, ...), except
            ``weight_decay``.

    One step from a zero momentum buffer: ``w <- w - lr * (g + l2 * w)``.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2: float = 0.0, name="coupled_sgd", **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("CoupledSGD: weight_decay (decoupled) must not be set; use l2 (coupled)")
        if isinstance(l2, bool) or not isinstance(l2, (int, float)) or l2 < 0:
            raise ValueError(f"CoupledSGD: l2 expected a number >= 0, received {l2!r}")
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, name=name, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = keras.ops.add(gradient, keras.ops.multiply(keras.ops.cast(self.l2, variable.dtype), variable))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["l2"] = self.l2
        return config
