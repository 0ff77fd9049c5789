"""The resumable state of a search: one ``tf.train.Checkpoint`` per epoch.

It holds the search model (network weights, alphas, the warm-up flag, batch-norm statistics), both
optimisers (momentum, Adam moments, step counts, hence the position on the cosine schedule), the number
of finished epochs and the best validation UA so far with its epoch.

The variables are checkpointed as flat dicts keyed by position (and name: ``model.weights``,
``optimizer.variables``), not through the Keras object graph: ``tf.train.Checkpoint(model=model)`` does not
follow sub-layers held in Python lists (the backbone's cells), and would silently skip the batch-norm
statistics of every cell. A checkpoint of another architecture then fails to match by name and shape. ``tf.train.CheckpointManager``
writes each checkpoint under a temporary name and publishes it by renaming the ``checkpoint`` index last,
so a kill mid-save leaves the previous checkpoint as the latest.
"""
from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)


def _variable_dict(variables, named: bool = True) -> dict:
    """``{"00042:kernel": variable}``: position and the variable's own name (``kernel``, ``moving_mean``;
    not its path, which holds layer names that Keras numbers per process), so that a checkpoint of a
    different architecture fails to match (count, names or shapes) instead of loading into the wrong
    variables. ``named=False`` (optimizer slots): the position alone, checked by shape on restore."""
    out = {}
    for i, v in enumerate(variables):
        key = f"{i:05d}"
        if named:
            name = (getattr(v, "path", None) or getattr(v, "name", "")).split("/")[-1].split(":")[0]
            key = f"{key}:{name}"
        out[key] = v if isinstance(v, tf.Variable) else getattr(v, "value", v)
    return out


class SearchState:
    """Checkpointed state of one search.

    Args:
        model: a compiled ``SearchModel`` (its optimisers must be built: ``model.build_optimizers()``).
        directory: where the checkpoints go.
        max_to_keep: checkpoints kept (the latest ones).
    """

    def __init__(self, model, directory: str | Path, max_to_keep: int = 2):
        if not getattr(model, "w_optimizer", None) or not getattr(model, "a_optimizer", None):
            raise ValueError("model: expected a SearchModel compiled with both optimizers before checkpointing")
        model.build_optimizers()
        self.model = model
        self.directory = Path(directory)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.best_ua = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_val_ua")
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
        self.checkpoint = tf.train.Checkpoint(
            model=_variable_dict(model.weights),
            w_optimizer=_variable_dict(model.w_optimizer.variables, named=False),
            a_optimizer=_variable_dict(model.a_optimizer.variables, named=False),
            epoch=self.epoch,
            best_val_ua=self.best_ua,
            best_epoch=self.best_epoch,
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=max_to_keep)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def save(self, epoch: int) -> str:
        """Checkpoint after ``epoch`` finished epochs."""
        self.epoch.assign(int(epoch))
        path = self.manager.save(checkpoint_number=int(epoch))
        log.debug("checkpoint %s", path)
        return path

    def restore(self, path: str | None = None) -> int:
        """Restore the latest (or the given) checkpoint; returns the finished epochs (0 when none)."""
        path = path or self.latest
        if path is None:
            return 0
        try:
            status = self.checkpoint.restore(path)
            status.assert_existing_objects_matched()
            status.assert_consumed()  # nothing in the checkpoint left over either
        except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as exc:
            text = str(exc).split("[<")[0].strip()  # not the unmatched variables' values
            raise ValueError(
                f"checkpoint {path}: does not match this search model (another search space or config?): {text[:400]}"
            ) from None
        log.info("restored %s (epoch %d)", path, int(self.epoch.numpy()))
        return int(self.epoch.numpy())
