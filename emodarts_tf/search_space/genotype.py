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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emodarts_tf.search_space.primitives import CNN_PRIMITIVES, SEQ_PRIMITIVES
from emodarts_tf.utils.io import read_json, write_json
from emodarts_tf.utils.numeric import softmax

FORMAT = "emodarts-tf/genotype/v1"
CELL_KINDS = ("normal", "reduce", "seq")


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
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, received {type(d).__name__}")
        fmt = d.get("format", FORMAT)
        if fmt != FORMAT:
            raise ValueError(f"{source}: unknown genotype format {fmt!r}; expected {FORMAT!r}")
        values = {}
        for kind in CELL_KINDS:
            if kind not in d:
                raise ValueError(f"{source}: missing cell {kind!r}")
            nodes = d[kind]
            if not isinstance(nodes, list):
                raise ValueError(f"{source}: {kind} must be a list of nodes, received {nodes!r}")
            parsed = []
            for n, node in enumerate(nodes):
                if not isinstance(node, list):
                    raise ValueError(f"{source}: {kind} node {n} must be a list of [op, input] pairs, received {node!r}")
                pairs = []
                for edge in node:
                    if not (isinstance(edge, (list, tuple)) and len(edge) == 2):
                        raise ValueError(f"{source}: {kind} node {n}: edge {edge!r} is not an [op, input] pair")
                    op, idx = edge
                    if not isinstance(op, str) or isinstance(idx, bool) or not isinstance(idx, int):
                        raise ValueError(f"{source}: {kind} node {n}: edge {edge!r} must be [str, int]")
                    pairs.append((op, idx))
                parsed.append(pairs)
            values[kind] = parsed
            concat = d.get(f"{kind}_concat", list(range(2, 2 + len(parsed))))
            values[f"{kind}_concat"] = [int(i) for i in concat]
        genotype = cls(**values, meta=dict(d.get("meta") or {}))
        genotype.validate(source)
        return genotype

    def validate(self, source: str = "genotype") -> None:
        """Raise ValueError naming the cell, node and edge of any unknown op or impossible input index, and
        naming the cell and its nodes when the cell's output cannot depend on its inputs (see
        :meth:`_check_reads_input`)."""
        for kind in CELL_KINDS:
            universe = SEQ_PRIMITIVES if kind == "seq" else CNN_PRIMITIVES
            nodes = self.cell(kind)
            if not nodes:
                raise ValueError(f"{source}: cell {kind!r} has no nodes")
            for n, node in enumerate(nodes):
                if not node:
                    raise ValueError(f"{source}: {kind} node {n} has no incoming edge")
                for op, idx in node:
                    if op not in universe:
                        raise ValueError(
                            f"{source}: {kind} node {n}: unknown op {op!r}; expected one of {list(universe)}"
                        )
                    if not 0 <= idx < n + 2:
                        raise ValueError(
                            f"{source}: {kind} node {n}: input index {idx} out of range; "
                            f"node {n} can read inputs 0..{n + 1} (2 cell inputs, then earlier nodes)"
                        )
            for idx in self.concat(kind):
                if not 0 <= idx < len(nodes) + 2:
                    raise ValueError(f"{source}: {kind}_concat index {idx} out of range 0..{len(nodes) + 1}")
                if kind == "reduce" and idx < 2:
                    # FixedCNNCell refuses it too: the cell inputs have not been reduced to the nodes' size.
                    raise ValueError(
                        f"{source}: reduce_concat index {idx} is a cell input; a reduction cell can only "
                        f"concatenate its nodes (indices 2..{len(nodes) + 1})"
                    )
            if not self.concat(kind):
                raise ValueError(f"{source}: {kind}_concat is empty")
            self._check_reads_input(kind, source)

    def _check_reads_input(self, kind: str, source: str) -> None:
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
        nodes = self.cell(kind)
        depends = [True, True]
        for node in nodes:
            depends.append(any(op != "none" and depends[idx] for op, idx in node))
        concat = self.concat(kind)
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
    factorised reduce, not an identity, and is left uncapped.
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
