"""Did a search learn, and do searches agree? Figures computed from alphas and genotypes (pure numpy).

- ``alpha_entropy``: per cell kind, the mean over its edges of the Shannon entropy (nats) of each edge's
  softmaxed alphas, and the same divided by ``log(number of ops)`` (of the candidates left, in a pruned
  search): 1.0 is the uniform mix of the random start (alphas ~ 1e-3 N(0, 1)), 0.0 an edge that picked one op. A search whose normalised entropy stays at
  0.99.. has not chosen anything yet, whatever genotype it writes (the genotype is then the argmax of
  noise).
- ``alpha_movement``: per cell kind, the largest absolute change of any softmaxed weight since the start.
- ``genotype_agreement``: mean pairwise agreement of genotypes (e.g. one per seed), per cell kind: the
  share of ``(node, input)`` edges two genotypes have in common, and of ``(node, input, op)``.
- ``NonFiniteError``: what the search raises when its loss, alphas or weights stop being finite.

No TensorFlow import: the benchmark scripts read genotypes and alpha histories from JSON.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np

from emodarts_tf.search_space.genotype import CELL_KINDS, Genotype
from emodarts_tf.utils.numeric import softmax

# Rows of softmaxed alphas must sum to 1 within this (alpha_history.json rounds them to 6 decimals).
_ROW_SUM_TOLERANCE = 1e-4


class NonFiniteError(RuntimeError):
    """A search's loss, alpha loss, alphas, weights or optimizer state became NaN or infinite."""


def _kinds(mapping: dict) -> list:
    """The keys of ``mapping``, the cell kinds first in their usual order."""
    return [k for k in CELL_KINDS if k in mapping] + [k for k in mapping if k not in CELL_KINDS]


def _edge_weights(kind, value, from_logits: bool) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{kind}: expected a (num_edges, num_ops) array, received shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{kind}: the alphas hold non-finite values")
    if from_logits:
        return softmax(a)
    sums = a.sum(axis=-1)
    if (a < 0).any() or np.abs(sums - 1.0).max() > _ROW_SUM_TOLERANCE:
        raise ValueError(
            f"{kind}: expected softmaxed alphas (each edge's row >= 0, summing to 1; row sums "
            f"{np.round(sums, 6).tolist()}); pass from_logits=True for raw alphas"
        )
    return a


def edge_entropies(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``p`` (``0 log 0 = 0``)."""
    p = np.asarray(p, dtype=np.float64)
    safe = np.where(p > 0, p, 1.0)
    return -(p * np.log(safe)).sum(axis=-1)


def alpha_entropy(weights: dict, from_logits: bool = False, kept: dict | None = None) -> dict:
    """Entropy of the softmaxed alphas per cell kind.

    Args:
        weights: ``{kind: (num_edges, num_ops)}`` softmaxed alphas (each row a distribution over the ops
            of one edge), as ``SearchModel.alpha_weights()`` returns and ``alpha_history.json`` stores.
        from_logits: ``weights`` are raw alphas (softmaxed here, row by row).
        kept: ``{kind: (num_edges, num_ops)}`` keep masks of a pruned search (1: the candidate is in its edge's
            mixture, ``SearchModel.alpha_masks()``); each edge's entropy is then normalised by the log of its
            kept candidates, so that 1.0 still means "uniform over what is left to choose from". None: every
            candidate is kept.

    Returns:
        ``{kind: {"mean": nats, "normalized": ...}}``: ``mean`` is the mean over the kind's edges of each edge's
        entropy; ``normalized`` the mean over its edges of each edge's entropy divided by ``log(candidates)``
        (without ``kept``: ``mean / log(num_ops)``), 1.0 for uniform edges (the random start) and 0.0 for one-hot
        edges. An edge with a single candidate has nothing to choose: entropy 0, normalised 1.0 (its only
        distribution is the uniform one).

    Raises:
        ValueError: a non-2-D or non-finite array, a mask of another shape, or (without ``from_logits``) rows that
            are not distributions.
    """
    out = {}
    for kind in _kinds(weights):
        p = _edge_weights(kind, weights[kind], from_logits)
        entropies = edge_entropies(p)
        if kept is not None and kind in kept:
            mask = np.asarray(kept[kind])
            if mask.shape != p.shape:
                raise ValueError(f"kept[{kind!r}]: expected shape {p.shape} (the weights'), received {mask.shape}")
            candidates = (mask > 0.5).sum(axis=1)
        else:
            candidates = np.full(p.shape[0], p.shape[1])
        logs = np.log(np.maximum(candidates, 2))
        normalized = np.where(candidates > 1, entropies / logs, 1.0)
        out[kind] = {"mean": float(entropies.mean()), "normalized": float(normalized.mean())}
    return out


def alpha_movement(weights: dict, start: dict, from_logits: bool = False) -> dict:
    """``{kind: max |weights - start|}``: how far any softmaxed weight of each kind moved since ``start``.

    Both are ``{kind: (num_edges, num_ops)}`` softmaxed alphas (raw alphas with ``from_logits``); the kinds
    and shapes must match.
    """
    if set(weights) != set(start):
        raise ValueError(f"alpha_movement: cell kinds differ: {sorted(weights)} vs start {sorted(start)}")
    out = {}
    for kind in _kinds(weights):
        a = _edge_weights(kind, weights[kind], from_logits)
        b = _edge_weights(f"start {kind}", start[kind], from_logits)
        if a.shape != b.shape:
            raise ValueError(f"alpha_movement: {kind} has shape {a.shape}, its start {b.shape}")
        out[kind] = float(np.abs(a - b).max())
    return out


def format_alpha_diagnostics(entropy: dict | None, moved: dict | None = None, edges_moved: dict | None = None) -> str:
    """``alpha H normal 0.9981 reduce 0.9975 seq 0.9950 | moved normal 0.0012 ...`` (normalised entropy), and
    ``| edges moved normal 0.0300 ...`` with edge normalisation."""
    parts = []
    if entropy:
        parts.append("alpha H " + " ".join(f"{k} {v['normalized']:.4f}" for k, v in entropy.items()))
    if moved:
        parts.append("moved " + " ".join(f"{k} {v:.4f}" for k, v in moved.items()))
    if edges_moved:
        parts.append("edges moved " + " ".join(f"{k} {v:.4f}" for k, v in edges_moved.items()))
    return " | ".join(parts)


# ---------------------------------------------------------------------------------------- genotypes
def _edges(cell: list, with_op: bool) -> Counter:
    """The multiset of ``(node, input)`` (or ``(node, input, op)``) edges of a cell genotype."""
    return Counter((n, int(i), op) if with_op else (n, int(i)) for n, node in enumerate(cell) for op, i in node)


def edge_overlap(a: list, b: list, with_op: bool = False) -> float:
    """Share of the edges of two cell genotypes in common: ``2 |A & B| / (|A| + |B|)``.

    With the derived genotypes' fixed edge count (2 per node) this is ``|A & B| / edges``: the number of
    ``(node, input)`` edges (``with_op``: ``(node, input, op)``) that both cells have, over the edges of one.
    """
    ea, eb = _edges(a, with_op), _edges(b, with_op)
    total = sum(ea.values()) + sum(eb.values())
    return 2.0 * sum((ea & eb).values()) / total if total else 1.0


def genotype_agreement(genotypes: list) -> dict:
    """Mean pairwise agreement of genotypes of one search space (e.g. the searches of several seeds).

    Args:
        genotypes: at least two ``Genotype`` (or genotype dicts), with the same node count per cell kind.

    Returns:
        ``{"genotypes": n, "pairs": n (n - 1) / 2, kind: {"edge": e, "edge_op": o} for each cell kind,
        "mean": {"edge": ..., "edge_op": ...}}`` where, for each kind, ``edge`` is the mean over all pairs
        of the share of ``(node, input)`` edges the two have in common (``edge_overlap``) and ``edge_op`` of
        ``(node, input, op)`` edges; ``mean`` averages the kinds.
    """
    items = []
    for g in genotypes:
        if isinstance(g, dict):
            g = Genotype.from_dict(g)
        if not isinstance(g, Genotype):
            raise ValueError(f"genotype_agreement: expected Genotype objects, received {type(g).__name__}")
        items.append(g)
    if len(items) < 2:
        raise ValueError(f"genotype_agreement: expected at least 2 genotypes, received {len(items)}")
    for kind in CELL_KINDS:
        nodes = sorted({len(g.cell(kind)) for g in items})
        if len(nodes) > 1:
            raise ValueError(
                f"genotype_agreement: the {kind} cells have different node counts {nodes}; "
                "genotypes of different search spaces cannot be compared"
            )
    pairs = list(itertools.combinations(items, 2))
    out = {"genotypes": len(items), "pairs": len(pairs)}
    for kind in CELL_KINDS:
        out[kind] = {
            "edge": float(np.mean([edge_overlap(a.cell(kind), b.cell(kind)) for a, b in pairs])),
            "edge_op": float(np.mean([edge_overlap(a.cell(kind), b.cell(kind), with_op=True) for a, b in pairs])),
        }
    out["mean"] = {key: float(np.mean([out[k][key] for k in CELL_KINDS])) for key in ("edge", "edge_op")}
    return out
