"""Release what a finished model (a tuning trial, a searched or retrained fold) leaves behind, so memory stays
flat over any number of them.

``keras.backend.clear_session()`` plus ``gc.collect()`` frees a model, but not its traced training
step: with TensorFlow 2.16 and Keras 3, the optimizer's gradient all-reduce goes through
``tf.custom_gradient`` (``distribute_lib.all_reduce``), which in graph mode registers a new
``CustomGradient-<n>`` function in TensorFlow's global gradient registry at every trace. The registry
entry closes over the traced ``FuncGraph``, so every ``fit()`` leaves its training graphs alive
(measured: about 160 graphs and 20 MB per trial for the CNN-LSTM-attention baseline at 16 x 16 inputs; about
500 MB per fold for a search under ``configs/cpu.yaml``; growing without bound). Removing the entries a
finished model's run added frees them; nothing else can call those gradient functions once the model is gone.
"""
from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

_PREFIX = "CustomGradient-"


def _registry() -> dict | None:
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):  # another TensorFlow layout: nothing to release
        return None
    return registry if isinstance(registry, dict) else None


def custom_gradient_names() -> frozenset:
    """The ``CustomGradient-*`` names registered now (a snapshot to pass to ``release_trial``)."""
    registry = _registry()
    if registry is None:
        return frozenset()
    return frozenset(k for k in registry if isinstance(k, str) and k.startswith(_PREFIX))


def release_trial(before: frozenset | None = None) -> int:
    """Clear the Keras session, drop the custom gradients registered since ``before``, collect garbage.

    Call it only when the models built since ``before`` are no longer used. Returns the number of
    registry entries removed.
    """
    import keras

    keras.backend.clear_session()
    removed = 0
    registry = _registry()
    if registry is not None and before is not None:
        for name in [k for k in registry if isinstance(k, str) and k.startswith(_PREFIX) and k not in before]:
            del registry[name]
            removed += 1
    gc.collect()
    log.debug("released %d traced custom-gradient graphs", removed)
    return removed
