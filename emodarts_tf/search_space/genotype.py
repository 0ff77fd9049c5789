"""Genotypes: the discrete architecture a search derives, as data (JSON), never as code.

A cell has two inputs (indices 0 and 1: the outputs of the two previous cells) and ``N`` intermediate
nodes (indices 2 .. N+1). A cell genotype is a list with one entry per node; each entry is a list of
``[op_name, input_index]`` pairs (two per node for derived genotypes; hand-written ones may differ).
The cell output concatenates the nodes listed in ``*_concat`` (by default every intermediate node).

JSON layout::

    {"format": "emodarts-tf/genotype/v1",
     "normal": [[["sep_conv_3x3", 0], ["skip_connect", 1]], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [...],
     "seq": [[["lstm_2", 0], ["skip_connect", 1]], ...], "seq_concat": [...],
     "meta": {...}}   # where it came from: corpus, fold, speakers seen, epoch, validation UA, ...
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emodarts_tf.search_space.primitives import CNN_PRIMITIVES, SEQ_PRIMITIVES
from emodarts_tf.utils.io import read_json, write_json
from emodarts_tf.utils.numeric import softmax

FORMAT = "emodarts-tf/genotype/v1"
CELL_KINDS = ("normal", "reduce", "seq")


# The candidate ops of each cell kind.
CELL_OPS = {"normal": CNN_PRIMITIVES, "reduce": CNN_PRIMITIVES, "seq": SEQ_PRIMITIVES}


def check_cell(nodes, concat, kind: str, source: str = "genotype", require_input: bool = True) -> tuple:
    """The validator of a genotype cell, for genotypes (:meth:`Genotype.validate`, :meth:`Genotype.from_dict`)
    and for the fixed cells built from one (``FixedCNNCell``, ``FixedSeqCell``).

    Args:
        nodes: one entry per node, each a non-empty list of ``[op, input_index]`` pairs; node ``n`` may
            read inputs ``0 .. n + 1`` (the 2 cell inputs, then the earlier nodes).
        concat: the states concatenated into the cell output; None: every node.
        kind: ``"normal"``, ``"reduce"`` (CNN ops; a reduction cell cannot concatenate its unreduced inputs
            0 and 1) or ``"seq"`` (SeqNN ops).
        source: what the messages name first (a file, ``"genotype"``, a layer argument).
        require_input: also refuse a cell whose output cannot depend on its inputs
            (:func:`_check_reads_input`). Genotypes require it; the fixed cell layers compute any cell.

    Returns:
        ``(nodes, concat)``: a list of lists of ``(op, input_index)`` tuples and a list of ints.

    Raises:
        ValueError naming ``source``, the cell kind, and the node and edge or concat entry at fault.
    """
    if kind not in CELL_OPS:
        raise ValueError(f"cell kind: expected one of {CELL_KINDS}, received {kind!r}")
    universe = CELL_OPS[kind]
    if not isinstance(nodes, (list, tuple)):
        raise ValueError(f"{source}: {kind} must be a list of nodes, received {nodes!r}")
    if not nodes:
        raise ValueError(f"{source}: cell {kind!r} has no nodes")
    parsed = []
    for n, node in enumerate(nodes):
        if not isinstance(node, (list, tuple)):
            raise ValueError(f"{source}: {kind} node {n} must be a list of [op, input] pairs, received {node!r}")
        if not node:
            raise ValueError(f"{source}: {kind} node {n} has no incoming edge")
        pairs = []
        for edge in node:
            if not (isinstance(edge, (list, tuple)) and len(edge) == 2):
                raise ValueError(f"{source}: {kind} node {n}: edge {edge!r} is not an [op, input] pair")
            op, idx = edge
            if not isinstance(op, str) or isinstance(idx, bool) or not isinstance(idx, numbers.Integral):
                raise ValueError(f"{source}: {kind} node {n}: edge {edge!r} must be [str, int]")
            if op not in universe:
                raise ValueError(f"{source}: {kind} node {n}: unknown op {op!r}; expected one of {list(universe)}")
            if not 0 <= idx < n + 2:
                raise ValueError(
                    f"{source}: {kind} node {n}: input index {idx} out of range; "
                    f"node {n} can read inputs 0..{n + 1} (2 cell inputs, then earlier nodes)"
                )
            pairs.append((op, int(idx)))
        parsed.append(pairs)
    if concat is None:
        concat = list(range(2, 2 + len(parsed)))
    if not isinstance(concat, (list, tuple)):
        raise ValueError(f"{source}: {kind}_concat: expected a list of state indices, received {concat!r}")
    if not concat:
        raise ValueError(f"{source}: {kind}_concat is empty")
    for idx in concat:
        if isinstance(idx, bool) or not isinstance(idx, numbers.Integral):
            raise ValueError(f"{source}: {kind}_concat: expected integer state indices, received {idx!r}")
        if not 0 <= idx < len(parsed) + 2:
            raise ValueError(f"{source}: {kind}_concat index {idx} out of range 0..{len(parsed) + 1}")
        if kind == "reduce" and idx < 2:
            # The cell inputs have not been reduced to the nodes' size.
            raise ValueError(
                f"{source}: reduce_concat index {idx} is a cell input; a reduction cell can only "
                f"concatenate its nodes (indices 2..{len(parsed) + 1})"
            )
    concat = [int(i) for i in concat]
    if require_input:
        _check_reads_input(parsed, concat, kind, source)
    return parsed, concat


def _check_reads_input(nodes: list, concat: list, kind: str, source: str) -> None:
    """Raise ValueError when the output of a ``kind`` cell cannot depend on the cell's inputs.

    States 0 and 1 (the two cell inputs) depend on them; node ``n`` (state ``n + 2``) does when one of
    its edges whose op is not ``none`` reads a state that does (a ``none`` edge outputs zeros, and a
    node whose every edge is ``none`` is all zeros). The cell output is the concatenation of the
    ``*_concat`` states, so at least one of them must depend on the inputs. This rule per cell is
    enough for the network (``network.build_fixed_network``): the stem output is both inputs of the
    first CNN cell, each later cell reads the outputs of the two cells before it, and the first SeqNN
    cell reads the projected CNN output twice, so by induction every cell's output, and the logits,
    depend on the MFCCs.
    """
    depends = [True, True]
    for node in nodes:
        depends.append(any(op != "none" and depends[idx] for op, idx in node))
    if any(depends[idx] for idx in concat):
        return
    reasons = []
    for idx in concat:
        n = idx - 2
        read = sorted({i for op, i in nodes[n] if op != "none"})
        if not read:
            reasons.append(f"node {n} (state {idx}) has only `none` edges")
        else:
            reasons.append(f"node {n} (state {idx}) reads only states {read}, which do not depend on the inputs")
    raise ValueError(
        f"{source}: cell {kind!r}: its output does not depend on the cell inputs: no state of "
        f"{kind}_concat {list(concat)} is reached from inputs 0 or 1 through a non-`none` edge "
        f"({'; '.join(reasons)}); a network of this genotype would predict the same class for every input"
    )


@dataclass
class Genotype:
    normal: list
    normal_concat: list
    reduce: list
    reduce_concat: list
    seq: list
    seq_concat: list
    meta: dict = field(default_factory=dict)

    def cell(self, kind: str) -> list:
        if kind not in CELL_KINDS:
            raise ValueError(f"cell kind: expected one of {CELL_KINDS}, received {kind!r}")
        return getattr(self, kind)

    def concat(self, kind: str) -> list:
        return getattr(self, f"{kind}_concat")

    def to_dict(self) -> dict:
        d = {"format": FORMAT}
        for kind in CELL_KINDS:
            d[kind] = [[[op, int(idx)] for op, idx in node] for node in self.cell(kind)]
            d[f"{kind}_concat"] = [int(i) for i in self.concat(kind)]
        d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "genotype") -> "Genotype":
        """The genotype of its JSON dict (see the module docstring), validated by :func:`check_cell`; a
        missing ``*_concat`` means every node."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, received {type(d).__name__}")
        fmt = d.get("format", FORMAT)
        if fmt != FORMAT:
            raise ValueError(f"{source}: unknown genotype format {fmt!r}; expected {FORMAT!r}")
        values = {}
        for kind in CELL_KINDS:
            if kind not in d:
                raise ValueError(f"{source}: missing cell {kind!r}")
            values[kind], values[f"{kind}_concat"] = check_cell(d[kind], d.get(f"{kind}_concat"), kind, source)
        return cls(**values, meta=dict(d.get("meta") or {}))

    def validate(self, source: str = "genotype") -> None:
        """Raise ValueError naming the cell, node and edge of any unknown op or impossible input index, and
        naming the cell and its nodes when the cell's output cannot depend on its inputs (:func:`check_cell`)."""
        for kind in CELL_KINDS:
            check_cell(self.cell(kind), self.concat(kind), kind, source)

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Genotype":
        return cls.from_dict(read_json(path), source=str(path))


def derive_cell(
    alpha: np.ndarray,
    ops: tuple,
    nodes: int,
    max_skip: int | None = None,
    k: int = 2,
) -> list:
    """DARTS rule: per node, each incoming edge's best non-``none`` op; keep the ``k`` strongest edges.

    ``alpha`` has one row per edge (node 0's 2 edges, then node 1's 3, ...) and one column per op of
    ``ops``; rows are softmaxed here. With ``max_skip``, while the cell holds more ``skip_connect``
    edges than allowed, the weakest chosen skip is forbidden on its edge and the cell is derived again
    (the P-DARTS guard against skip collapse).

    Edges are ranked by the softmax weight of their best op, as the original DARTS code does (its
    ``genotype()`` parses ``softmax(alphas)``); pt.darts ranks the raw alphas instead. Within an edge both
    pick the same op (the softmax is monotonic), but across the edges of a node they can keep different
    edges. The softmax weight is what the mixed op multiplies the op's output by in the supernet, and it
    is invariant to a constant added to one edge's row, which changes nothing in the supernet but moves
    that edge's raw alphas against the other edges'; raw alphas of different edges are therefore not
    comparable, softmax weights are. The weight of ``none`` takes part in the softmax (an edge whose
    ``none`` is strong ranks low) but ``none`` is never chosen.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    expected_rows = sum(i + 2 for i in range(nodes))
    if alpha.shape != (expected_rows, len(ops)):
        raise ValueError(
            f"alpha: expected shape ({expected_rows}, {len(ops)}) for {nodes} nodes and {len(ops)} ops, "
            f"received {alpha.shape}"
        )
    weights = softmax(alpha)
    banned = np.zeros_like(weights, dtype=bool)
    if "none" in ops:
        banned[:, ops.index("none")] = True
    skip_col = ops.index("skip_connect") if "skip_connect" in ops else None

    while True:
        cell, chosen = [], []
        offset = 0
        for node in range(nodes):
            n_in = node + 2
            candidates = []
            for j in range(n_in):
                row = np.where(banned[offset + j], -np.inf, weights[offset + j])
                best = int(np.argmax(row))
                if np.isfinite(row[best]):
                    candidates.append((row[best], j, best, offset + j))
            candidates.sort(key=lambda c: (-c[0], c[1]))
            top = sorted(candidates[:k], key=lambda c: c[1])
            cell.append([(ops[c[2]], c[1]) for c in top])
            chosen.extend(top)
            offset += n_in
        if max_skip is None or skip_col is None:
            return cell
        skips = [c for c in chosen if c[2] == skip_col]
        if len(skips) <= max_skip:
            return cell
        weakest = min(skips, key=lambda c: c[0])
        banned[weakest[3], skip_col] = True


def derive_genotype(
    alphas: dict,
    cnn_ops: tuple,
    seq_ops: tuple,
    cnn_nodes: int,
    seq_nodes: int,
    max_skip: int | None = None,
    meta: dict | None = None,
) -> Genotype:
    """Genotype from the alpha arrays ``{"normal": ..., "reduce": ..., "seq": ...}``.

    The skip cap applies to the normal and SeqNN cells; in reduction cells ``skip_connect`` is a
    factorised reduce, not an identity, and is left uncapped. Every cell kind is derived, also one the
    searched network has no cell of (``SearchBackbone.derive_genotype`` says what that cell is).
    """
    missing = [k for k in CELL_KINDS if k not in alphas]
    if missing:
        raise ValueError(f"alphas: missing cell kind(s) {missing}")
    return Genotype(
        normal=derive_cell(alphas["normal"], cnn_ops, cnn_nodes, max_skip),
        normal_concat=list(range(2, 2 + cnn_nodes)),
        reduce=derive_cell(alphas["reduce"], cnn_ops, cnn_nodes, None),
        reduce_concat=list(range(2, 2 + cnn_nodes)),
        seq=derive_cell(alphas["seq"], seq_ops, seq_nodes, max_skip),
        seq_concat=list(range(2, 2 + seq_nodes)),
        meta=dict(meta or {}),
    )
