"""Corpora, speaker-independent protocols, MFCC features, the feature cache and tf.data pipelines.

Modules (each one idea):

- ``corpora``: the corpus registry and loaders (iemocap, msp-improv, msp-podcast, emodb, csv, demo).
- ``demo``: the built-in SYNTHETIC demo corpus.
- ``protocols``: speaker-independent folds (loso, loso-session, emodarts, emodb5, official) and
  validation speakers.
- ``features``: audio loading and librosa MFCCs (the paper preset gives 128 x 128).
- ``cache``: the sharded feature cache with its manifest (parallel, resumable extraction).
- ``prepare``: ``prepare(config, out_dir)`` -> ``PreparedCorpus`` (records.csv, folds.json, prepared.json);
  import the function from the module (``from emodarts_tf.data.prepare import prepare``).
- ``pipeline``: ``make_fold_data(prepared, k, config)`` -> ``FoldData`` with ``tf.data`` views.
- ``perturbation``: speed-perturbed copies of training utterances (``recipe.speed_perturb``), cached.

The names below are importable from here; TensorFlow is only imported when the pipeline is used.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "PreparedCorpus": "emodarts_tf.data.prepare",
    "make_fold_data": "emodarts_tf.data.pipeline",
    "FoldData": "emodarts_tf.data.pipeline",
    "make_folds": "emodarts_tf.data.protocols",
    "validation_speakers": "emodarts_tf.data.protocols",
    "feature_shape": "emodarts_tf.data.features",
    "extract_mfcc": "emodarts_tf.data.features",
    "load_audio": "emodarts_tf.data.features",
    "mfcc_from_waveform": "emodarts_tf.data.features",
    "logmel_from_waveform": "emodarts_tf.data.features",
    "AudioError": "emodarts_tf.data.features",
    "load_corpus": "emodarts_tf.data.corpora",
    "Record": "emodarts_tf.data.records",
    "Fold": "emodarts_tf.data.records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
