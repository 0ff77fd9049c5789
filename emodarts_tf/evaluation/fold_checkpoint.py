"""The checkpoint of one fold's training: what ``fit_fold`` writes after every epoch and resumes from.

``<fold>/checkpoint/state.json`` (epoch, history, best epoch, early-stopping counter, the run's
fingerprint) points at ``epoch-<e>.npz`` (model and optimizer variables after epoch e) and
``best-<e>.npz`` (model variables of the best epoch). A checkpoint whose fingerprint or variables do not
fit the model being trained is refused with :class:`CheckpointMismatchError`, naming what differs.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from emodarts_tf.utils.io import atomic_write_bytes, read_json, write_json

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"


class CheckpointMismatchError(ValueError):
    """A checkpoint that was written by a different model or configuration."""


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# Settings added after runs were saved whose default is not "off" but reproduces those runs
# (dotted keys as in a config dict or a training fingerprint).
ADDED_DEFAULTS = {
    "space.pooling": "mean", "space.fusion": "supplement", "space.supplement_init": "random",
    "space.reduce_time": True, "space.frequency_pooling": "avg", "search.method": "emodarts",
    "features.kind": "mfcc", "features.window_ms": 25.0, "features.hop_ms": 11.0, "features.freq_bins": 128,
}
# Sections added after runs were saved that such runs did not use (the frame-level stream of EmotionNAS:
# a one-stream run has no frames).
ADDED_SECTIONS = ("frames",)
# ADDED_DEFAULTS of the features section, by field name (what data.features.comparable_features fills in)
_ADDED_FEATURE_DEFAULTS = {k.split(".", 1)[1]: v for k, v in ADDED_DEFAULTS.items() if k.startswith("features.")}


def diff_keys(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like trees, ``old`` (as saved) and ``new``.

    A key that only ``new`` has is not a difference when its value is off (``False``, ``0``, ``None`` or
    empty) or the default listed in ``ADDED_DEFAULTS``: settings are added at a value that reproduces
    earlier runs, and a run saved before one existed ran as that value does. A section of
    ``ADDED_SECTIONS`` that only ``new`` has is not a difference either. A top-level ``features`` section
    is compared on the fields its kind of map reads, or on its ``kind`` alone when that differs
    (``data.features.comparable_features``, a field it lacks taking its ``ADDED_DEFAULTS`` value): a log-mel
    run's ``window_ms`` or a spectrogram's ``n_mels`` change nothing it computes.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        if not prefix and isinstance(old.get("features"), dict) and isinstance(new.get("features"), dict):
            from emodarts_tf.data.features import comparable_features

            features = comparable_features(old["features"], new["features"], _ADDED_FEATURE_DEFAULTS)
            old, new = {**old, "features": features[0]}, {**new, "features": features[1]}
        out = []
        for key in sorted(set(old) | set(new), key=str):
            if key not in old and key in new and not isinstance(new[key], dict) and (
                    not new[key] or ADDED_DEFAULTS.get(f"{prefix}{key}", object()) == new[key]):
                continue
            if key not in old and f"{prefix}{key}" in ADDED_SECTIONS:
                continue
            if key not in old or key not in new:
                out.append(f"{prefix}{key}")
            else:
                out.extend(diff_keys(old[key], new[key], f"{prefix}{key}."))
        return out
    return [] if old == new else [prefix.rstrip(".") or "(value)"]


def normalise_json(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def variables_arrays(variables) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in variables]


def _describe(v) -> str:
    return getattr(v, "path", None) or getattr(v, "name", "?")


def _assign_checked(variables, arrays: list, what: str, source: Path) -> None:
    """Assign saved arrays to variables, in order, after checking their number and shapes."""
    variables = list(variables)
    if len(variables) != len(arrays):
        raise CheckpointMismatchError(
            f"{source}: the checkpoint holds {len(arrays)} {what} variables, the model built from the current "
            f"config and genotype has {len(variables)}; they describe different networks. Rerun with the "
            "config and genotype that wrote the checkpoint, or train into a new --out directory."
        )
    for var, arr in zip(variables, arrays):
        if tuple(var.shape) != tuple(arr.shape):
            raise CheckpointMismatchError(
                f"{source}: {what} variable {_describe(var)!r} has shape {tuple(arr.shape)} in the checkpoint "
                f"but {tuple(var.shape)} in the model built from the current config and genotype; rerun with "
                "the config that wrote the checkpoint, or train into a new --out directory."
            )
    for var, arr in zip(variables, arrays):
        var.assign(arr)


class FoldCheckpoint:
    """``fold_dir/checkpoint/``: ``state.json`` pointing at ``epoch-<e>.npz`` (model and optimizer
    variables after epoch e) and ``best.npz`` (model variables of the best epoch). Each file is written
    atomically and ``state.json`` last, so a kill at any point leaves a consistent checkpoint."""

    def __init__(self, fold_dir: Path):
        self.dir = fold_dir / CHECKPOINT_DIR
        self.state_path = self.dir / STATE_FILE

    def exists(self) -> bool:
        return self.state_path.is_file()

    def read_state(self) -> dict:
        return read_json(self.state_path)

    def save(self, state: dict, model, optimizer, best_arrays: list | None) -> None:
        """Write epoch ``state['epoch']``; ``best_arrays`` (the model weights to keep as the best epoch's,
        in ``model.weights`` order) when the epoch improved on validation, else None."""
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays = {f"m{i}": a for i, a in enumerate(variables_arrays(model.weights))}
        arrays.update({f"o{i}": a for i, a in enumerate(variables_arrays(optimizer.variables))})
        name = f"epoch-{state['epoch']:04d}.npz"
        atomic_write_bytes(self.dir / name, _npz_bytes(arrays))
        if best_arrays is not None:
            best_name = f"best-{state['epoch']:04d}.npz"
            best = {f"m{i}": a for i, a in enumerate(best_arrays)}
            atomic_write_bytes(self.dir / best_name, _npz_bytes(best))
            state["best_file"] = best_name
        state["file"] = name
        write_json(self.state_path, state)
        keep = {name, state.get("best_file")}
        for old in self.dir.glob("*.npz"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def _load_npz(self, name: str) -> dict:
        path = self.dir / name
        if not path.is_file():
            raise ValueError(f"{self.dir}: checkpoint file {name} is missing; delete {self.dir} to restart this fold")
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}

    def restore(self, state: dict, model, optimizer) -> None:
        arrays = self._load_npz(state["file"])
        m = [arrays[f"m{i}"] for i in range(sum(1 for k in arrays if k.startswith("m")))]
        o = [arrays[f"o{i}"] for i in range(sum(1 for k in arrays if k.startswith("o")))]
        _assign_checked(model.weights, m, "model", self.dir / state["file"])
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        _assign_checked(optimizer.variables, o, "optimizer", self.dir / state["file"])

    def best_arrays(self, state: dict) -> list[np.ndarray]:
        """The kept model weights (``best_arrays`` of the last improving ``save``), in ``model.weights`` order."""
        arrays = self._load_npz(state["best_file"])
        return [arrays[f"m{i}"] for i in range(len(arrays))]

    def restore_best(self, state: dict, model) -> None:
        _assign_checked(model.weights, self.best_arrays(state), "model", self.dir / state["best_file"])
