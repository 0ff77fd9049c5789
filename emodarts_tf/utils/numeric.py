"""The numpy softmax of the package: alphas to mixing weights, logits to probabilities and losses.

Both work row by row over the last axis, shifted by the row's maximum so that large logits do not
overflow; integer or float32 input is computed in float64 and returned in float64.
"""
from __future__ import annotations

import numpy as np


def log_softmax(x) -> np.ndarray:
    """``log(softmax(x))`` over the last axis, computed without forming ``softmax(x)``."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(x) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` over the last axis."""
    z = np.asarray(x, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy(logits, labels) -> float:
    """Mean cross-entropy of integer ``labels`` ``(n,)`` under ``logits`` ``(n, classes)``."""
    logits = np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits: expected shape ({labels.shape[0]}, classes), received {logits.shape}")
    if labels.size == 0:
        raise ValueError("cross_entropy: no examples")
    return float(-log_softmax(logits)[np.arange(labels.shape[0]), labels].mean())
