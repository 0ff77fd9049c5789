"""The emoDARTS search space: candidate ops (one registry, ``op_registry.OPS``), mixed ops, searchable CNN
and SeqNN cells, genotypes. Argument validators live in ``validation``, the genotype validator is
``genotype.check_cell``.

The Keras layers are exported lazily (``from emodarts_tf.search_space import SearchBackbone``) so that
reading genotypes does not import TensorFlow. Importing :mod:`emodarts_tf.search_space.network`
registers every layer of the single-stream networks with Keras, :mod:`emodarts_tf.search_space.two_stream`
also those of the two-stream (EmotionNAS) networks; do it before ``keras.saving.load_model``.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "SearchBackbone": "network",
    "build_fixed_network": "network",
    "set_drop_path_rate": "network",
    "set_search_drop_path_rate": "network",
    "apply_train_overrides": "network",
    "TwoStreamSearchBackbone": "two_stream",
    "build_fixed_two_stream": "two_stream",
    "InformationSupplement": "two_stream",
    "SearchCNNCell": "cnn_cell",
    "FixedCNNCell": "cnn_cell",
    "SearchSeqCell": "seq_cell",
    "FixedSeqCell": "seq_cell",
    "MixedOp": "mixed_op",
    "MixedSeqOp": "mixed_op",
    "GroupedSeqEdges": "seq_bank",
    "OPS": "op_registry",
    "make_op": "op_registry",
    "make_cnn_op": "op_registry",
    "make_seq_op": "op_registry",
    "Genotype": "genotype",
    "check_cell": "genotype",
    "derive_genotype": "genotype",
    "is_two_stream": "genotype",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
