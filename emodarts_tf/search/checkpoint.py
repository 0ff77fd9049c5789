"""The resumable state of a search: one ``tf.train.Checkpoint`` per epoch.

It holds the search model (network weights, alphas, the warm-up flag, batch-norm statistics, a pruned search's
keep masks), both optimisers (momentum, Adam moments, step counts, hence the position on the cosine schedule), the
number of finished epochs and the best validation UA so far with its epoch.

The variables are checkpointed as flat dicts keyed by position (and name: ``model.weights``,
``optimizer.variables``), not through the Keras object graph: ``tf.train.Checkpoint(model=model)`` does not
follow sub-layers held in Python lists (the backbone's cells), and would silently skip the batch-norm
statistics of every cell. A checkpoint of another architecture then fails to match by name and shape. ``tf.train.CheckpointManager``
writes each checkpoint under a temporary name and publishes it by renaming the ``checkpoint`` index last,
so a kill mid-save leaves the previous checkpoint as the latest.

Only finite states are checkpointed: ``save`` raises ``NonFiniteError`` (naming the variables) rather than
write a state with a NaN or an infinity, so that the latest checkpoint, the one ``--resume`` restores, is
always the last finite one; ``restore`` skips (with a warning) a non-finite checkpoint that an older
version wrote, for the newest finite one.
"""
from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf

from emodarts_tf.search.diagnostics import NonFiniteError
from emodarts_tf.search_space.mixed_op import MixedOp

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


def _variable_name(v) -> str:
    return str(getattr(v, "path", None) or getattr(v, "name", "?"))


def nonfinite_variables(variables) -> list:
    """Names (paths) of the floating-point variables of ``variables`` holding a NaN or an infinity.

    One ``reduce_all(is_finite)`` per variable, on its device; one transfer of the flags.
    """
    checked, flags = [], []
    for v in variables:
        value = tf.convert_to_tensor(getattr(v, "value", v))
        if not value.dtype.is_floating:
            continue
        checked.append(v)
        flags.append(tf.reduce_all(tf.math.is_finite(value)))
    if not flags:
        return []
    finite = tf.stack(flags).numpy()
    return [_variable_name(v) for v, ok in zip(checked, finite) if not ok]


def nonfinite_state(model) -> dict:
    """``{part: [variable names]}`` of the non-finite variables of a compiled ``SearchModel``, by part:
    ``alphas`` (and the betas of edge normalisation), ``weights`` (network weights), ``statistics`` (batch-norm moving statistics and other
    non-trainable state), ``weight optimizer``, ``alpha optimizer``; parts without any are left out."""
    arch = {id(v) for v in model.arch_variables}
    trainable = {id(v) for v in model.trainable_variables}
    parts = {
        "alphas": list(model.arch_variables),
        "weights": list(model.weight_variables),
        "statistics": [v for v in model.weights if id(v) not in trainable and id(v) not in arch],
    }
    for name, attr in (("weight optimizer", "w_optimizer"), ("alpha optimizer", "a_optimizer")):
        optimizer = getattr(model, attr, None)
        if optimizer is not None and optimizer.built:
            parts[name] = list(optimizer.variables)
    out = {}
    for part, variables in parts.items():
        bad = nonfinite_variables(variables)
        if bad:
            out[part] = bad
    return out


def describe_nonfinite(report: dict, limit: int = 3) -> str:
    """``weights (2 variables: a/kernel, b/bias), alpha optimizer (1 variable: ...)`` for a report of
    ``nonfinite_state``."""
    parts = []
    for part, names in report.items():
        shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
        parts.append(f"{part} ({len(names)} variable{'s' if len(names) != 1 else ''}: {shown})")
    return ", ".join(parts)


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
        # The drop-path masks' generator states are variables but not weights; kept under their own key, present
        # only with drop-path (checkpoints of searches without it are unchanged), so that a resumed search draws the
        # masks an uninterrupted one would.
        generators = [layer.seed_generator.state for layer in model._flatten_layers(include_self=True, recursive=True)
                      if isinstance(layer, MixedOp) and layer.seed_generator is not None]
        self.checkpoint = tf.train.Checkpoint(
            model=_variable_dict(model.weights),
            w_optimizer=_variable_dict(model.w_optimizer.variables, named=False),
            a_optimizer=_variable_dict(model.a_optimizer.variables, named=False),
            epoch=self.epoch,
            best_val_ua=self.best_ua,
            best_epoch=self.best_epoch,
            **({"random_generators": _variable_dict(generators)} if generators else {}),
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=max_to_keep)
        # The checkpoint this state last saved or restored (None before either): a finite one.
        self.last_finite: str | None = None

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def nonfinite(self) -> dict:
        """``nonfinite_state`` of the model: what a checkpoint now would hold that is not finite."""
        return nonfinite_state(self.model)

    def save(self, epoch: int) -> str:
        """Checkpoint after ``epoch`` finished epochs.

        Raises:
            NonFiniteError: some variable of the model or of an optimizer is NaN or infinite; nothing is
                written, so that the latest checkpoint stays the last finite state.
        """
        bad = self.nonfinite()
        if bad:
            raise NonFiniteError(
                f"not checkpointing epoch {int(epoch)}: non-finite values in {describe_nonfinite(bad)}; the latest "
                f"checkpoint stays {self.latest or 'none'}"
            )
        self.epoch.assign(int(epoch))
        path = self.manager.save(checkpoint_number=int(epoch))
        self.last_finite = path
        log.debug("checkpoint %s", path)
        return path

    def restore(self, path: str | None = None) -> int:
        """Restore the latest (or the given) checkpoint; returns the finished epochs (0 when none).

        Without ``path``, a latest checkpoint holding non-finite values (written by a version that
        checkpointed a diverged search) is skipped, with a warning, for the newest finite one; ValueError
        when no checkpoint is finite, or when the given ``path`` is not.
        """
        if path is not None:
            try:
                return self._restore_finite(path)
            except NonFiniteError as exc:
                raise ValueError(str(exc)) from None
        candidates = list(reversed(self.manager.checkpoints))
        for i, candidate in enumerate(candidates):
            try:
                return self._restore_finite(candidate)
            except NonFiniteError as exc:
                older = candidates[i + 1] if i + 1 < len(candidates) else None
                if older is None:
                    raise ValueError(
                        f"{self.directory}: no checkpoint holds a finite state ({exc}); the search diverged before "
                        "its first finite checkpoint: start it again (another --out)"
                    ) from None
                log.warning("%s; resuming from the previous checkpoint %s instead", exc, older)
        return 0

    def _restore_finite(self, path: str) -> int:
        epoch = self._restore(path)
        bad = self.nonfinite()
        if bad:
            raise NonFiniteError(
                f"checkpoint {path} (epoch {epoch}) holds non-finite values in {describe_nonfinite(bad)}"
            )
        self.last_finite = path
        log.info("restored %s (epoch %d)", path, epoch)
        return epoch

    def _restore(self, path: str) -> int:
        try:
            status = self.checkpoint.restore(path)
            status.assert_existing_objects_matched()
            status.assert_consumed()  # nothing in the checkpoint left over either
        except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as exc:
            text = str(exc).split("[<")[0].strip()  # not the unmatched variables' values
            raise ValueError(
                f"checkpoint {path}: does not match this search model (another search space or config?): {text[:400]}"
            ) from None
        return int(self.epoch.numpy())
