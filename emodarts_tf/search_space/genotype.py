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

A genotype of several input streams (EmotionNAS, ``search_space/two_stream.py``) says which cells each stream
uses and how the streams meet; it is written as format v2, with the cells its streams use only::

    {"format": "emodarts-tf/genotype/v2",
     "normal": ..., "normal_concat": ..., "reduce": ..., "reduce_concat": ..., "seq": ..., "seq_concat": ...,
     "streams": {"method": "emotionnas", "fusion": "supplement",
                 "streams": {"spectrogram": ["normal", "reduce"], "frames": ["seq"]}},
     "meta": {...}}

A genotype without streams is written in format v1; files of both formats load.
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
FORMAT_V2 = "emodarts-tf/genotype/v2"  # with a streams description (two-stream genotypes)
FORMATS = (FORMAT, FORMAT_V2)
CELL_KINDS = ("normal", "reduce", "seq")

# Streams of a two-stream genotype (v2). The image stream is named after its input ("spectrogram" or
# "mfcc") and holds the CNN cells; the "frames" stream (a frame-level embedding sequence) the SeqNN cells.
STREAM_METHODS = ("emotionnas",)
STREAM_KINDS = {"spectrogram": ("normal", "reduce"), "mfcc": ("normal", "reduce"), "frames": ("seq",)}
CNN_STREAMS = ("spectrogram", "mfcc")
FRAMES_STREAM = "frames"
# How the streams meet (``SearchSpaceConfig.fusion``): both streams with the information supplement module or
# concatenated, or one stream alone ("spectrogram": the image stream, whatever its input is named). "late" exists
# in retraining only (``TrainConfig.fusion``): a classifier per stream, their class probabilities averaged.
SEARCH_FUSIONS = ("supplement", "concat", "spectrogram", "frames")
FUSIONS = (*SEARCH_FUSIONS, "late")
_STREAM_KEYS = ("method", "fusion", "streams")


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


def fusion_roles(fusion: str) -> tuple:
    """The streams a fusion needs: ``("cnn", "frames")`` for ``"supplement"``, ``"concat"`` and ``"late"``, ``("cnn",)``
    for ``"spectrogram"`` (the image stream alone, its input named ``"spectrogram"`` or ``"mfcc"``),
    ``("frames",)`` for ``"frames"``."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion: expected one of {FUSIONS}, received {fusion!r}")
    return {"spectrogram": ("cnn",), "frames": ("frames",)}.get(fusion, ("cnn", "frames"))


def check_streams(streams, kinds: tuple | None, source: str = "genotype") -> dict:
    """The validator of a genotype's streams description (format v2, see the module docstring).

    Args:
        streams: ``{"method": "emotionnas", "fusion": one of FUSIONS, "streams": {name: [cell kinds]}}``;
            names from ``STREAM_KINDS`` (``"spectrogram"`` or ``"mfcc"`` holding CNN cells, ``"frames"`` the
            SeqNN cell), the ones the fusion needs (:func:`fusion_roles`).
        kinds: the cell kinds the genotype has; None: the description alone is checked (before deriving).
        source: what the messages name first.

    Returns:
        A normalised copy (lists of kinds, the streams in the order given).

    Raises:
        ValueError naming ``source`` and the key at fault: an unknown method, fusion or stream name, a cell
        kind a stream cannot hold or that the genotype lacks, a genotype cell no stream uses, streams that
        do not match the fusion.
    """
    where = f"{source}: streams"
    if not isinstance(streams, dict):
        raise ValueError(f"{where}: expected a JSON object with keys {list(_STREAM_KEYS)}, "
                         f"received {type(streams).__name__}")
    unknown = sorted(set(streams) - set(_STREAM_KEYS))
    missing = [k for k in _STREAM_KEYS if k not in streams]
    if unknown or missing:
        raise ValueError(f"{where}: expected keys {list(_STREAM_KEYS)}, received {sorted(streams)}")
    if streams["method"] not in STREAM_METHODS:
        raise ValueError(f"{where}.method: expected one of {STREAM_METHODS}, received {streams['method']!r}")
    fusion = streams["fusion"]
    if fusion not in FUSIONS:
        raise ValueError(f"{where}.fusion: expected one of {FUSIONS}, received {fusion!r}")
    inputs = streams["streams"]
    if not isinstance(inputs, dict) or not inputs:
        raise ValueError(f"{where}.streams: expected a non-empty object {{stream name: [cell kinds]}}, "
                         f"received {inputs!r}")
    normalised, listed = {}, []
    for name, stream_kinds in inputs.items():
        if name not in STREAM_KINDS:
            raise ValueError(f"{where}.streams: unknown stream name {name!r}; expected names from "
                             f"{list(STREAM_KINDS)}")
        allowed = STREAM_KINDS[name]
        if (not isinstance(stream_kinds, (list, tuple)) or not stream_kinds
                or any(not isinstance(k, str) for k in stream_kinds)):
            raise ValueError(f"{where}.streams.{name}: expected a non-empty list of cell kinds from {list(allowed)}, "
                             f"received {stream_kinds!r}")
        for kind in stream_kinds:
            if kind not in allowed:
                raise ValueError(f"{where}.streams.{name}: stream {name!r} can hold cells {list(allowed)}, "
                                 f"received {kind!r}")
            if kind in listed:
                raise ValueError(f"{where}.streams.{name}: cell {kind!r} is listed twice")
            if kinds is not None and kind not in kinds:
                raise ValueError(f"{where}.streams.{name}: lists cell {kind!r}, which the genotype lacks "
                                 f"(it has {list(kinds)})")
            listed.append(kind)
        normalised[name] = list(stream_kinds)
    cnn = [name for name in normalised if name in CNN_STREAMS]
    if len(cnn) > 1:
        raise ValueError(f"{where}.streams: expected one image stream ('spectrogram' or 'mfcc'), received {cnn}")
    roles = (("cnn",) if cnn else ()) + (("frames",) if FRAMES_STREAM in normalised else ())
    if roles != fusion_roles(fusion):
        expected = ["'spectrogram' or 'mfcc'" if role == "cnn" else repr(FRAMES_STREAM)
                    for role in fusion_roles(fusion)]
        raise ValueError(f"{where}: fusion {fusion!r} expected the streams {' and '.join(expected)}, "
                         f"received {list(normalised)}")
    unused = [kind for kind in kinds or () if kind not in listed]
    if unused:
        raise ValueError(f"{where}: the genotype has cell(s) {unused} that no stream lists")
    return {"method": streams["method"], "fusion": fusion, "streams": normalised}


@dataclass
class Genotype:
    """A discrete architecture: the normal, reduction and SeqNN cells, where it came from (``meta``) and, for a
    two-stream genotype, its ``streams`` description (:func:`check_streams`; then the cells no stream uses
    are None). See the module docstring for the JSON layout."""

    normal: list | None
    normal_concat: list | None
    reduce: list | None
    reduce_concat: list | None
    seq: list | None
    seq_concat: list | None
    meta: dict = field(default_factory=dict)
    streams: dict | None = None

    def cell(self, kind: str) -> list | None:
        if kind not in CELL_KINDS:
            raise ValueError(f"cell kind: expected one of {CELL_KINDS}, received {kind!r}")
        return getattr(self, kind)

    def concat(self, kind: str) -> list | None:
        return getattr(self, f"{kind}_concat")

    @property
    def cell_kinds(self) -> tuple:
        """The cell kinds this genotype has, in ``CELL_KINDS`` order (all three for a v1 genotype)."""
        return tuple(kind for kind in CELL_KINDS if self.cell(kind) is not None)

    @property
    def fusion(self) -> str | None:
        """The fusion of a two-stream genotype (one of ``FUSIONS``), None for a single-stream one."""
        return None if self.streams is None else self.streams["fusion"]

    @property
    def stream_cells(self) -> dict | None:
        """``{stream name: [cell kinds]}`` of a two-stream genotype, None for a single-stream one."""
        return None if self.streams is None else {k: list(v) for k, v in self.streams["streams"].items()}

    def with_fusion(self, fusion: str) -> "Genotype":
        """This two-stream genotype's cells under another fusion (the fusion and stream ablations): ``concat``,
        ``supplement`` and ``late`` keep both streams; ``spectrogram`` keeps the image stream's cells only,
        ``frames`` the frame stream's. Raises ValueError for a single-stream genotype or a fusion it lacks the cells
        of."""
        if self.streams is None:
            raise ValueError("genotype: a single-stream (emoDARTS) genotype has no fusion to change")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: expected one of {FUSIONS}, received {fusion!r}")
        roles = fusion_roles(fusion)
        keep = {name: kinds for name, kinds in self.stream_cells.items()
                if ("frames" if name == FRAMES_STREAM else "cnn") in roles}
        kinds = [kind for kinds in keep.values() for kind in kinds]
        values = {}
        for kind in CELL_KINDS:
            values[kind] = self.cell(kind) if kind in kinds else None
            values[f"{kind}_concat"] = self.concat(kind) if kind in kinds else None
        streams = check_streams({"method": self.streams["method"], "fusion": fusion, "streams": keep},
                                tuple(kinds), "genotype")
        return Genotype(**values, meta={**self.meta, "fusion_of_search": self.fusion}, streams=streams)

    def to_dict(self) -> dict:
        """The JSON dict: format v1 without streams (all three cells), v2 with them (the cells present)."""
        d = {"format": FORMAT if self.streams is None else FORMAT_V2}
        for kind in CELL_KINDS if self.streams is None else self.cell_kinds:
            d[kind] = [[[op, int(idx)] for op, idx in node] for node in self.cell(kind)]
            d[f"{kind}_concat"] = [int(i) for i in self.concat(kind)]
        if self.streams is not None:
            d["streams"] = {"method": self.streams["method"], "fusion": self.streams["fusion"],
                            "streams": {k: list(v) for k, v in self.streams["streams"].items()}}
        d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "genotype") -> "Genotype":
        """The genotype of its JSON dict (see the module docstring), validated by :func:`check_cell` (and
        :func:`check_streams` for v2); a missing ``*_concat`` means every node, a missing format v1. A v1
        genotype has all three cells; a v2 one the cells its streams list."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, received {type(d).__name__}")
        fmt = d.get("format", FORMAT)
        if fmt not in FORMATS:
            raise ValueError(f"{source}: unknown genotype format {fmt!r}; expected one of {list(FORMATS)}")
        if fmt == FORMAT and "streams" in d:
            raise ValueError(f"{source}: streams: a genotype with streams has format {FORMAT_V2!r}, received {fmt!r}")
        if fmt == FORMAT_V2 and "streams" not in d:
            raise ValueError(f"{source}: missing 'streams' (format {FORMAT_V2!r} describes its input streams)")
        values = {}
        for kind in CELL_KINDS:
            if kind not in d:
                if fmt == FORMAT:
                    raise ValueError(f"{source}: missing cell {kind!r}")
                values[kind] = values[f"{kind}_concat"] = None
                continue
            values[kind], values[f"{kind}_concat"] = check_cell(d[kind], d.get(f"{kind}_concat"), kind, source)
        streams = None
        if fmt == FORMAT_V2:
            streams = check_streams(d["streams"], tuple(k for k in CELL_KINDS if values[k] is not None), source)
        return cls(**values, meta=dict(d.get("meta") or {}), streams=streams)

    def validate(self, source: str = "genotype") -> None:
        """Raise ValueError naming the cell, node and edge of any unknown op or impossible input index, and
        naming the cell and its nodes when the cell's output cannot depend on its inputs (:func:`check_cell`);
        for a two-stream genotype also any fault of its streams (:func:`check_streams`)."""
        kinds = CELL_KINDS if self.streams is None else self.cell_kinds
        for kind in kinds:
            if self.cell(kind) is None:
                raise ValueError(f"{source}: missing cell {kind!r}")
            check_cell(self.cell(kind), self.concat(kind), kind, source)
        if self.streams is not None:
            check_streams(self.streams, kinds, source)

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Genotype":
        return cls.from_dict(read_json(path), source=str(path))


def is_two_stream(genotype) -> bool:
    """Whether ``genotype`` (a :class:`Genotype` or its JSON dict) is a two-stream genotype: one with a streams
    description (format v2), to be built with ``two_stream.build_fixed_two_stream``."""
    if isinstance(genotype, Genotype):
        return genotype.streams is not None
    if isinstance(genotype, dict):
        return genotype.get("format") == FORMAT_V2 or "streams" in genotype
    raise ValueError(f"genotype: expected a Genotype or its JSON dict, received {type(genotype).__name__}")


def derive_cell(
    alpha: np.ndarray,
    ops: tuple,
    nodes: int,
    max_skip: int | None = None,
    k: int = 2,
    edge_weights=None,
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
    ``none`` is strong ranks low) but ``none`` is never chosen, nor is an op whose alpha is ``-inf`` (pruned in
    the search: mixing weight 0, ``emodarts_tf.search.pruning``).

    ``edge_weights`` (one per row, a search with edge normalisation, ``emodarts_tf.search.edge_normalization``)
    multiplies each edge's op weights before the edges are ranked, as PC-DARTS derives its cells: a node keeps the
    edges of the largest ``edge weight * best op weight``. The op chosen on an edge, and the skip the cap forbids
    (the chosen skip of the smallest op weight), do not depend on it: edge weights are a softmax over a node's
    inputs, smaller for nodes of more inputs, and so not comparable across the nodes of a cell.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    expected_rows = sum(i + 2 for i in range(nodes))
    if alpha.shape != (expected_rows, len(ops)):
        raise ValueError(
            f"alpha: expected shape ({expected_rows}, {len(ops)}) for {nodes} nodes and {len(ops)} ops, "
            f"received {alpha.shape}"
        )
    weights = op_weights = softmax(alpha)
    if edge_weights is not None:
        edge_weights = np.asarray(edge_weights, dtype=np.float64)
        if edge_weights.shape != (expected_rows,):
            raise ValueError(f"edge_weights: expected shape ({expected_rows},), one per edge of {nodes} nodes, "
                             f"received {edge_weights.shape}")
        weights = weights * edge_weights[:, None]
    banned = np.zeros_like(weights, dtype=bool)
    banned |= np.isneginf(alpha)
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
                    candidates.append((row[best], j, best, offset + j, op_weights[offset + j, best]))
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
        weakest = min(skips, key=lambda c: c[4])
        banned[weakest[3], skip_col] = True


def derive_genotype(
    alphas: dict,
    cnn_ops: tuple,
    seq_ops: tuple,
    cnn_nodes: int,
    seq_nodes: int,
    max_skip: int | None = None,
    meta: dict | None = None,
    streams: dict | None = None,
    edges: dict | None = None,
) -> Genotype:
    """Genotype from the alpha arrays ``{"normal": ..., "reduce": ..., "seq": ...}``.

    The skip cap applies to the normal and SeqNN cells; in reduction cells ``skip_connect`` is a
    factorised reduce, not an identity, and is left uncapped. Without ``streams`` every cell kind is derived,
    also one the searched network has no cell of (``SearchBackbone.derive_genotype`` says what that cell is).
    With a ``streams`` description (:func:`check_streams`) the genotype is a two-stream one (format v2) with
    the cells its streams list, from the alphas of those kinds only. ``edges`` (``{kind: (num_edges,)}``, a search
    with edge normalisation) are the edge weights :func:`derive_cell` ranks the edges of those kinds with.
    """
    if streams is None:
        kinds = CELL_KINDS
    else:
        streams = check_streams(streams, None, "derive_genotype")
        kinds = tuple(k for k in CELL_KINDS if any(k in listed for listed in streams["streams"].values()))
    missing = [k for k in kinds if k not in alphas]
    if missing:
        raise ValueError(f"alphas: missing cell kind(s) {missing}")
    ops = {"normal": cnn_ops, "reduce": cnn_ops, "seq": seq_ops}
    nodes = {"normal": cnn_nodes, "reduce": cnn_nodes, "seq": seq_nodes}
    caps = {"normal": max_skip, "reduce": None, "seq": max_skip}
    values = {}
    for kind in CELL_KINDS:
        derived = kind in kinds
        values[kind] = (derive_cell(alphas[kind], ops[kind], nodes[kind], caps[kind],
                                    edge_weights=(edges or {}).get(kind)) if derived else None)
        values[f"{kind}_concat"] = list(range(2, 2 + nodes[kind])) if derived else None
    return Genotype(**values, meta=dict(meta or {}), streams=streams)
