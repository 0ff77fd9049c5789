"""SER metrics from one confusion matrix over a whole test set (never averaged per batch).

- UA (unweighted accuracy): mean per-class recall over the classes present in the test set.
- WA (weighted accuracy): plain accuracy.
- Macro F1: mean per-class F1 over the classes present in the test set or in the predictions.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred: shapes differ, {y_true.shape} vs {y_pred.shape}")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name}: class ids must lie in 0..{num_classes - 1}, received {arr.min()}..{arr.max()}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def unweighted_accuracy(cm: np.ndarray) -> float:
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        raise ValueError("confusion matrix is empty: no test samples")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def weighted_accuracy(cm: np.ndarray) -> float:
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    if total == 0:
        raise ValueError("confusion matrix is empty: no test samples")
    return float(np.trace(cm) / total)


def macro_f1(cm: np.ndarray) -> float:
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    used = (support > 0) | (predicted > 0)
    if not used.any():
        raise ValueError("confusion matrix is empty: no test samples")
    denom = support + predicted  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(np.mean(f1[used]))


def classification_metrics(y_true, y_pred, num_classes: int) -> dict:
    """UA, WA, macro F1 and the confusion matrix (as nested lists) of one test set."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return {
        "ua": unweighted_accuracy(cm),
        "wa": weighted_accuracy(cm),
        "f1": macro_f1(cm),
        "n": int(cm.sum()),
        "confusion_matrix": cm.tolist(),
    }
