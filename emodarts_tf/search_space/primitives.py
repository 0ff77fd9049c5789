"""Names of the candidate operations of the emoDARTS search space, and the SeqNN search scopes.

The ops themselves are built by the registry (:mod:`~emodarts_tf.search_space.op_registry`). No TensorFlow
import here.
"""
from __future__ import annotations

CNN_PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

SEQ_PRIMITIVES = (
    "none",
    "skip_connect",
    "lstm_1",
    "lstm_2",
    "lstm_3",
    "lstm_4",
    "rnn_1",
    "rnn_2",
    "rnn_3",
    "rnn_4",
    "lstm_att_1",
    "lstm_att_2",
    "rnn_att_1",
    "rnn_att_2",
)

# The two kinds of candidate ops: CNN ops (the normal and reduction cells) and SeqNN ops (the SeqNN cells).
KINDS = ("cnn", "seq")
PRIMITIVES = {"cnn": CNN_PRIMITIVES, "seq": SEQ_PRIMITIVES}

# Restricted SeqNN search scopes (the paper's scope experiment). skip_connect and none stay in every
# scope so that DARTS can still choose depth.
SEQ_SCOPES = {
    "all": SEQ_PRIMITIVES,
    "lstm": ("none", "skip_connect", "lstm_1", "lstm_2", "lstm_3", "lstm_4"),
    "rnn": ("none", "skip_connect", "rnn_1", "rnn_2", "rnn_3", "rnn_4"),
    "lstm_att": ("none", "skip_connect", "lstm_att_1", "lstm_att_2"),
    "rnn_att": ("none", "skip_connect", "rnn_att_1", "rnn_att_2"),
}


def resolve_ops(spec, kind: str) -> tuple:
    """Turn a config entry (``"all"``, a scope name, or a list of op names) into a tuple of op names."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected 'cnn' or 'seq', received {kind!r}")
    universe = PRIMITIVES[kind]
    if isinstance(spec, str):
        if spec == "all":
            return tuple(universe)
        if kind == "seq" and spec in SEQ_SCOPES:
            return tuple(SEQ_SCOPES[spec])
        scopes = ["all"] + (sorted(SEQ_SCOPES) if kind == "seq" else [])
        raise ValueError(f"{kind}_ops: unknown scope {spec!r}; expected one of {scopes} or a list of op names")
    ops = tuple(spec)
    unknown = [op for op in ops if op not in universe]
    if unknown:
        raise ValueError(f"{kind}_ops: unknown op(s) {unknown}; expected names from {list(universe)}")
    if len(set(ops)) != len(ops):
        raise ValueError(f"{kind}_ops: duplicate op names in {list(ops)}")
    if not ops:
        raise ValueError(f"{kind}_ops: empty op list")
    # Keep the canonical order so that alpha columns mean the same op in every run.
    return tuple(op for op in universe if op in ops)


def num_edges(nodes: int) -> int:
    """Edges of a cell with 2 inputs and `nodes` intermediate nodes (node i has i + 2 inputs)."""
    return sum(i + 2 for i in range(nodes))


def nodes_of_edges(edges: int, what: str = "edges") -> int:
    """The intermediate nodes of a cell of ``edges`` edges (the inverse of :func:`num_edges`: 2, 5, 9, 14, ... edges
    for 1, 2, 3, 4, ... nodes). ValueError naming ``what`` when no node count has that many edges."""
    edges = int(edges)
    nodes = 0
    while num_edges(nodes) < edges:
        nodes += 1
    if nodes == 0 or num_edges(nodes) != edges:
        raise ValueError(f"{what}: {edges} edges are no cell's (1 node has 2, 2 nodes 5, 3 nodes 9, ...: node i has "
                         f"i + 2 inputs)")
    return nodes


def reduction_indices(cnn_cells: int) -> tuple:
    """Positions of the reduction cells among `cnn_cells` CNN cells (at 1/3 and 2/3, as in DARTS).

    ``cnn_cells // 3`` and ``2 * cnn_cells // 3``, one position when they coincide: 2 cells are both
    reduction cells, 3 cells have reductions at 1 and 2, 8 cells at 2 and 5. A single CNN cell is a normal
    cell, not a reduction cell (which the formula would make it), so that a one-cell network searches and
    retrains the cell kind that makes up most of every larger network. Its CNN part keeps the stem's
    resolution and channel count, and nothing reads the ``reduce`` alphas: the ``reduce`` cell of a
    genotype derived from such a search is not searched
    (:meth:`~emodarts_tf.search_space.network.SearchBackbone.derive_genotype`).
    """
    if cnn_cells < 1:
        raise ValueError(f"cnn_cells: expected >= 1, received {cnn_cells}")
    return tuple(sorted({cnn_cells // 3, 2 * cnn_cells // 3})) if cnn_cells >= 2 else ()
