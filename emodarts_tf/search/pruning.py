"""Progressive pruning of weak candidates during the search (P-DARTS's search-space approximation).

``search.prune: [k1, k2, ...]`` splits the alpha epochs (the epochs after the warm-up) into ``len(prune) + 1``
stages of (about) equal length. At the end of stage ``i`` every edge keeps the ``k_i`` candidates of the largest
mixing weight among those it still has; the others get mixing weight 0 for the rest of the search (the supernet's
softmax runs over the kept candidates only, :meth:`SearchModel.alpha_masks`; a pruned alpha's loss gradient is 0,
and only the alpha decay still moves it). At the last pruning ``none`` is dropped first, as P-DARTS does before its
final stage, since the genotype never chooses it; then the ``k`` strongest of the other candidates stay. The weights and alphas of the kept candidates go on training from where they are
(P-DARTS rebuilds a deeper supernet per stage and trains it anew; on a CPU budget the stages share one).

Pruning shrinks the gap between the supernet, where every candidate contributes, and the discrete genotype, where
one does: in the last stage the supernet trains and ranks only the few candidates the genotype chooses from
(Chen et al., "Progressive Differentiable Architecture Search", ICCV 2019). The pruned candidates are still
computed (with weight 0), so pruning saves no time here.
"""
from __future__ import annotations

import numpy as np

from emodarts_tf.search_space.validation import check_int
from emodarts_tf.utils.numeric import softmax


def check_prune(keep, alpha_epochs: int | None = None, name: str = "search.prune") -> tuple:
    """``keep`` as a tuple of ints, each >= 2 and strictly decreasing (None and ``[]``: ``()``, off); with
    ``alpha_epochs`` each stage must also get at least one alpha epoch (``len(keep) + 1 <= alpha_epochs``).
    ValueError naming the bad value."""
    if keep is None:
        return ()
    if isinstance(keep, (str, bytes)) or not hasattr(keep, "__iter__"):
        raise ValueError(f"{name}: expected a list of candidate counts per edge (e.g. [5, 3]), received {keep!r}")
    keep = list(keep)
    # >= 2: the genotype needs a choice left on an edge beside a capped skip_connect.
    counts = tuple(check_int(k, f"{name}[{i}] (candidates kept per edge)", minimum=2) for i, k in enumerate(keep))
    if any(b >= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"{name}: expected strictly decreasing candidate counts, received {keep!r}")
    if alpha_epochs is not None and counts and len(counts) + 1 > alpha_epochs:
        raise ValueError(
            f"{name}: {len(counts)} prunings need at least {len(counts) + 1} alpha epochs (search.epochs minus "
            f"search.warmup_epochs), there are {max(int(alpha_epochs), 0)}; received {keep!r} (search without pruning: "
            f"--set \"{name}=[]\")"
        )
    return counts


def prune_schedule(keep, epochs: int, warmup_epochs: int) -> dict:
    """``{epoch: candidates kept}``: after which finished epoch (from 1) each pruning happens. The alpha epochs
    ``warmup_epochs + 1 .. epochs`` are split into ``len(keep) + 1`` stages; pruning ``i`` (from 1) ends stage
    ``i``, after epoch ``warmup_epochs + i * alpha_epochs / stages`` rounded to the nearest integer, halves up."""
    alpha_epochs = int(epochs) - int(warmup_epochs)
    keep = check_prune(keep, alpha_epochs)
    stages = len(keep) + 1
    return {int(warmup_epochs) + (2 * i * alpha_epochs + stages) // (2 * stages): k
            for i, k in enumerate(keep, start=1)}


def prune_mask(alpha: np.ndarray, mask: np.ndarray, keep: int, none_index: int | None = None,
               drop_none: bool = False) -> np.ndarray:
    """The new keep mask of one cell kind's ``(edges, ops)`` alphas: on each edge the ``keep`` kept candidates
    (``mask`` 1) of the largest mixing weight stay 1, the others become 0. With ``drop_none``, ``none`` (column
    ``none_index``) is dropped first. Ties go to the lower op index; an edge with at most ``keep`` candidates
    left keeps them all. ValueError when an edge would be left without a candidate (nothing to mix)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    mask = np.asarray(mask, dtype=np.float64)
    if alpha.shape != mask.shape or alpha.ndim != 2:
        raise ValueError(f"alpha and mask: expected two (edges, ops) arrays of one shape, received {alpha.shape} "
                         f"and {mask.shape}")
    keep = check_int(keep, "keep", minimum=1)
    kept = mask > 0.5
    if drop_none and none_index is not None:
        kept[:, none_index] = False
    empty = np.flatnonzero(~kept.any(axis=1))
    if empty.size:
        raise ValueError(
            f"prune: edge(s) {empty.tolist()} would keep no candidate (none dropped: {bool(drop_none)}); an edge "
            "needs at least one candidate other than none"
        )
    weights = softmax(np.where(kept, alpha, -np.inf))
    out = np.zeros_like(mask)
    for edge in range(alpha.shape[0]):
        candidates = np.flatnonzero(kept[edge])
        # Largest weight first; a stable sort keeps the lower index first among equal weights.
        ranked = candidates[np.argsort(-weights[edge, candidates], kind="stable")]
        out[edge, ranked[:keep]] = 1.0
    return out


def masked_alphas(alphas: dict, masks: dict) -> dict:
    """The alphas with every pruned candidate at ``-inf`` (mixing weight 0 after the softmax), as numpy."""
    return {k: np.where(np.asarray(masks[k]) > 0.5, np.asarray(a, dtype=np.float64), -np.inf) if k in masks
            else np.asarray(a) for k, a in alphas.items()}
