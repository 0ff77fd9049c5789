"""Report figures: a confusion matrix and the learning curves of one fold, as PNG files (matplotlib, Agg)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from emodarts_tf.utils.io import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_confusion_matrix(cm, classes: list, path: str | Path, title: str | None = None) -> Path:
    """Counts and row-normalised recall (in brackets) per cell; rows are true classes."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ValueError(f"confusion matrix: expected shape ({len(classes)}, {len(classes)}), received {cm.shape}")
    plt = _pyplot()
    support = cm.sum(axis=1, keepdims=True)
    recall = np.divide(cm, support, out=np.zeros(cm.shape, dtype=np.float64), where=support > 0)
    size = 1.2 + 0.9 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="recall")
    ax.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            colour = "white" if recall[i, j] > 0.6 else "black"
            ax.text(j, i, f"{cm[i, j]}\n({recall[i, j]:.2f})", ha="center", va="center", color=colour, fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_learning_curves(history: list[dict], path: str | Path, title: str | None = None, best_epoch: int | None = None) -> Path:
    """Training/validation loss and validation UA/WA per epoch from ``history`` rows (one dict per epoch), and
    the weight average's validation UA where the rows have it (``recipe.swa``)."""
    if not history:
        raise ValueError("history: no epochs to plot")
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]

    def series(key):
        return [row.get(key, np.nan) if row.get(key) is not None else np.nan for row in history]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, series("loss"), label="train loss")
    ax_loss.plot(epochs, series("val_loss"), label="validation loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_acc.plot(epochs, series("accuracy"), label="train accuracy")
    ax_acc.plot(epochs, series("val_ua"), label="validation UA")
    ax_acc.plot(epochs, series("val_wa"), label="validation WA", linestyle="--")
    if any(row.get("swa_val_ua") is not None for row in history):
        ax_acc.plot(epochs, series("swa_val_ua"), label="validation UA, weight average")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylim(0.0, 1.0)
    ax_acc.legend()
    if best_epoch is not None:
        for ax in (ax_loss, ax_acc):
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
