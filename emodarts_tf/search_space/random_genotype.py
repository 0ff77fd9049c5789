"""Uniform random genotypes of the search space: the random-architecture baseline of NAS evaluation.

Li & Talwalkar (2019) and Yang et al. (ICLR 2020) show that architectures drawn at random from a
DARTS space, retrained with the same recipe, are a strong baseline for the searched one. This module
draws them from exactly the set of genotypes the DARTS derivation (``genotype.derive_genotype``) can
produce for a config's space:

- every cell kind (``normal``, ``reduce``, ``seq``) with the space's node count (``space.cnn_nodes``
  for the CNN cells, ``space.seq_nodes`` for the SeqNN cell);
- per node, 2 distinct incoming edges, chosen uniformly among the node's ``i + 2`` possible inputs (the
  two cell inputs, then the earlier nodes), listed in input order as the derivation lists them;
- per edge, an op drawn uniformly from the cell kind's candidate ops (``space.cnn_ops`` /
  ``space.seq_ops``, resolved by ``primitives.resolve_ops`` as the search space resolves them), never
  ``none`` (the derivation never picks it);
- ``*_concat`` = every intermediate node;
- the skip cap ``max_skip`` (``search.max_skip``) on the ``normal`` and ``seq`` cells, as the derivation
  applies it (reduction cells are uncapped: there ``skip_connect`` is a factorised reduce).

The draw is uniform over the cells the cap allows: it equals drawing every edge's op uniformly and
rejecting the cells with more than ``max_skip`` skips, but is done directly (no rejection loop): the
number of skips ``s`` is drawn with probability proportional to ``C(E, s) (m - 1)^(E - s)`` (``E``
edges, ``m`` candidate ops; the number of such cells), ``s <= max_skip``, the skip edges uniformly among
the ``E``, the other edges' ops uniformly among the ``m - 1`` non-skip ops.

Genotype ``i`` (1-based) of seed ``S`` comes from its own generator (``SeedSequence(S, spawn_key=(i,))``),
so ``sample_genotypes(space, 5, S)`` starts with ``sample_genotypes(space, 3, S)``: a larger ``N`` extends
a smaller one. No TensorFlow import.
"""
from __future__ import annotations

from math import comb

import numpy as np

from emodarts_tf.search_space.genotype import Genotype
from emodarts_tf.search_space.primitives import resolve_ops
from emodarts_tf.search_space.validation import check_int

SOURCE = "random"
EDGES_PER_NODE = 2  # as the derivation keeps (top-2 incoming edges per node)
MAX_ATTEMPTS = 100  # draws of one genotype before giving up (only an invalid draw is redrawn)


def _space_value(space, key: str):
    if isinstance(space, dict):
        if key not in space:
            raise ValueError(f"space: missing {key!r}")
        return space[key]
    return getattr(space, key)


def space_of(space) -> dict:
    """The part of ``space`` (a ``SearchSpaceConfig`` or its dict) that defines the genotypes, resolved:
    ``{"cnn_nodes", "seq_nodes", "cnn_ops", "seq_ops"}`` (op lists in canonical order, ``none`` included
    when the space has it)."""
    return {
        "cnn_nodes": check_int(_space_value(space, "cnn_nodes"), "space.cnn_nodes"),
        "seq_nodes": check_int(_space_value(space, "seq_nodes"), "space.seq_nodes"),
        "cnn_ops": list(resolve_ops(_space_value(space, "cnn_ops"), "cnn")),
        "seq_ops": list(resolve_ops(_space_value(space, "seq_ops"), "seq")),
    }


def candidate_ops(ops) -> tuple:
    """The ops a derived edge can carry: the resolved candidates without ``none``."""
    return tuple(op for op in ops if op != "none")


def skip_count_weights(edges: int, ops: tuple, max_skip: int | None) -> np.ndarray:
    """Probability of each number of ``skip_connect`` edges (0..edges) in a uniformly drawn cell whose
    skips are capped at ``max_skip`` (uncapped: None); all zero where the cap allows no cell."""
    m = len(ops)
    has_skip = "skip_connect" in ops
    counts = np.zeros(edges + 1, dtype=np.float64)
    for s in range(edges + 1):
        if (s > 0 and not has_skip) or (max_skip is not None and s > max_skip):
            continue
        others = m - 1 if has_skip else m
        counts[s] = comb(edges, s) * float(others) ** (edges - s)
    total = counts.sum()
    return counts / total if total > 0 else counts


def sample_cell(nodes: int, ops, rng: np.random.Generator, max_skip: int | None = None,
                kind: str = "cell") -> list:
    """One cell: ``nodes`` entries of 2 ``(op, input)`` edges, distinct inputs in increasing order.

    ``ops`` are the resolved candidates of the cell kind (``none`` is dropped here); ``max_skip`` caps the
    cell's ``skip_connect`` edges (None: no cap). Raises ValueError when no cell satisfies the cap.
    """
    nodes = check_int(nodes, f"{kind} nodes")
    max_skip = check_int(max_skip, "max_skip", 0, optional=True)
    ops = candidate_ops(ops)
    if not ops:
        raise ValueError(f"{kind}: no candidate op besides 'none'; a derived cell needs at least one other op")
    edges = EDGES_PER_NODE * nodes
    weights = skip_count_weights(edges, ops, max_skip)
    if weights.sum() <= 0:
        raise ValueError(
            f"{kind}: max_skip={max_skip} allows no cell of {nodes} node(s): its only candidate op is "
            f"skip_connect ({edges} edges); raise search.max_skip or add ops to the space"
        )
    inputs = []
    for node in range(nodes):
        # An ordered pair of distinct inputs, uniformly (first of n + 2, second of the other n + 1): sorted,
        # every unordered pair has probability 2 / ((n + 2)(n + 1)).
        first = int(rng.integers(node + 2))
        second = int(rng.integers(node + 1))
        second += second >= first
        inputs.append(sorted((first, second)))
    if "skip_connect" in ops:
        skips = min(int(np.searchsorted(np.cumsum(weights), rng.random(), side="right")), edges)
        skip_edges = set(int(e) for e in rng.permutation(edges)[:skips])
        others = tuple(op for op in ops if op != "skip_connect")
        picks = rng.integers(max(len(others), 1), size=edges)
        edge_ops = ["skip_connect" if e in skip_edges else others[int(picks[e])] for e in range(edges)]
    else:
        edge_ops = [ops[int(i)] for i in rng.integers(len(ops), size=edges)]
    cell = []
    for node in range(nodes):
        pairs = [(edge_ops[EDGES_PER_NODE * node + j], inputs[node][j]) for j in range(EDGES_PER_NODE)]
        cell.append(pairs)
    return cell


def sample_genotype(space, rng: np.random.Generator, max_skip: int | None = 2, meta: dict | None = None) -> Genotype:
    """One genotype drawn uniformly from the genotypes the DARTS derivation can produce for ``space``.

    Args:
        space: a ``SearchSpaceConfig`` (or its dict): ``cnn_nodes``, ``seq_nodes``, ``cnn_ops``, ``seq_ops``.
        rng: the numpy generator to draw from.
        max_skip: the cap on ``skip_connect`` per normal and SeqNN cell (``search.max_skip``); None: none.
        meta: the genotype's ``meta``.

    Raises:
        ValueError: an unknown op or scope, node counts below 1, or a cap that no cell can meet; or no valid
            genotype in ``MAX_ATTEMPTS`` draws.
    """
    resolved = space_of(space)
    max_skip = check_int(max_skip, "max_skip", 0, optional=True)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, received {type(rng).__name__}")
    last_error = None
    for _ in range(MAX_ATTEMPTS):
        cnn_nodes, seq_nodes = resolved["cnn_nodes"], resolved["seq_nodes"]
        genotype = Genotype(
            normal=sample_cell(cnn_nodes, resolved["cnn_ops"], rng, max_skip, "normal"),
            normal_concat=list(range(2, 2 + cnn_nodes)),
            reduce=sample_cell(cnn_nodes, resolved["cnn_ops"], rng, None, "reduce"),
            reduce_concat=list(range(2, 2 + cnn_nodes)),
            seq=sample_cell(seq_nodes, resolved["seq_ops"], rng, max_skip, "seq"),
            seq_concat=list(range(2, 2 + seq_nodes)),
            meta=dict(meta or {}),
        )
        try:
            genotype.validate("random genotype")
        except ValueError as exc:  # cannot happen with the rules above; redraw rather than train it
            last_error = exc
            continue
        return genotype
    raise ValueError(f"random genotype: no valid genotype in {MAX_ATTEMPTS} draws (last error: {last_error})")


def genotype_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of genotype ``index`` (1-based) of ``seed``: independent of how many are drawn."""
    seed, index = check_int(seed, "seed", 0), check_int(index, "index")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def sample_genotypes(space, n: int, seed: int, max_skip: int | None = 2) -> list:
    """``n`` random genotypes of ``space`` for ``seed`` (deterministic), each with ``meta`` =
    ``{"source": "random", "seed", "index" (1..n), "space": the resolved space and max_skip}``."""
    n = check_int(n, "n")
    resolved = space_of(space)
    max_skip = check_int(max_skip, "max_skip", 0, optional=True)
    out = []
    for index in range(1, n + 1):
        rng = genotype_rng(seed, index)  # checks the seed
        own = {k: list(v) if isinstance(v, list) else v for k, v in resolved.items()}  # no list shared by metas
        meta = {"source": SOURCE, "seed": int(seed), "index": index, "space": {**own, "max_skip": max_skip}}
        out.append(sample_genotype(space, rng, max_skip, meta=meta))
    return out


def parse_random_spec(text) -> int | None:
    """``"random:N"`` -> N (an integer >= 1); anything not starting with ``random:`` -> None.

    Raises ValueError naming the bad value for ``random:0``, ``random:x``, ``random:``, ...
    """
    if not isinstance(text, str) or not text.strip().lower().startswith("random:"):
        return None
    raw = text.strip()[len("random:"):].strip()
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(
            f"--genotype {text!r}: random:N needs an integer N >= 1 (the number of random genotypes), received {raw!r}"
        ) from None
    if n < 1:
        raise ValueError(
            f"--genotype {text!r}: random:N needs an integer N >= 1 (the number of random genotypes), received {n}"
        )
    return n



def genotypes_from_spec(spec: str, space, seed: int, max_skip: int | None = 2) -> list:
    """The genotypes a ``--genotype`` value names: ``random:N`` draws N with :func:`sample_genotypes`,
    anything else is a genotype JSON file (one genotype)."""
    from emodarts_tf.search_space.genotype import Genotype

    n = parse_random_spec(spec)
    if n is not None:
        return sample_genotypes(space, n, seed, max_skip)
    return [Genotype.load(spec)]
