"""Progressive pruning of weak candidates during the search (P-DARTS's search-space approximation).

``search.prune: [k1, k2, ...]`` splits the alpha epochs (the epochs after the warm-up) into ``len(prune) + 1``
stages of (about) equal length. At the end of stage ``i`` every edge keeps the ``k_i`` candidates of the largest
mixing weight among those it still has; the others get mixing weight 0 for the rest of the search (the supernet's
softmax runs over the kept candidates only: :meth:`SearchModel.alpha_masks`). At the last pruning ``none`` is
dropped first, as P-DARTS does before its final stage, since the genotype never chooses it; then the ``k`` strongest
of the other candidates stay. The weights and alphas of the kept candidates go on training from where they are
(P-DARTS rebuilds a deeper supernet per stage and trains it anew; on a CPU budget the stages share one).

Pruning shrinks the gap between the supernet, where every candidate contributes, and the discrete genotype, where
one does: in the last stage the supernet trains and ranks only the few candidates the genotype chooses from
(Chen et al., "Progressive Differentiable Architecture Search", ICCV 2019). The pruned candidates are still
computed (with weight 0), so pruning saves no time here.
"""
from __future__ import annotations

import numpy as np

from emodarts_tf.utils.numeric import softmax


def check_prune(keep, alpha_epochs: int | None = None, name: str = "search.prune") -> tuple:
    """``keep`` as a tuple of ints, each >= 2 and strictly decreasing; with ``alpha_epochs`` each stage must
    also get at least one alpha epoch (``len(keep) + 1 <= alpha_epochs``). ValueError naming the bad value."""
    if keep is None:
        return ()
    if isinstance(keep, (str, bytes)) or not hasattr(keep, "__iter__"):
        raise ValueError(f"{name}: expected a list of candidate counts per edge (e.g. [5, 3]), received {keep!r}")
    keep = list(keep)
    for k in keep:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(
                f"{name}: expected integers >= 2 (candidates kept per edge; the genotype needs a choice left beside "
                f"a capped skip_connect), received {keep!r}"
            )
    if any(b >= a for a, b in zip(keep, keep[1:])):
        raise ValueError(f"{name}: expected strictly decreasing candidate counts, received {keep!r}")
    if alpha_epochs is not None and keep and len(keep) + 1 > alpha_epochs:
        raise ValueError(
            f"{name}: {len(keep)} prunings need at least {len(keep) + 1} alpha epochs (search.epochs minus "
            f"search.warmup_epochs), there are {alpha_epochs}; received {keep!r}"
        )
    return tuple(int(k) for k in keep)


def prune_schedule(keep, epochs: int, warmup_epochs: int) -> dict:
    """``{epoch: candidates kept}``: after which finished epoch (from 1) each pruning happens. The alpha epochs
    ``warmup_epochs + 1 .. epochs`` are split into ``len(keep) + 1`` stages; pruning ``i`` (from 1) ends stage
    ``i``, after epoch ``warmup_epochs + round(i * alpha_epochs / stages)``."""
    alpha_epochs = int(epochs) - int(warmup_epochs)
    keep = check_prune(keep, alpha_epochs)
    stages = len(keep) + 1
    return {int(warmup_epochs) + int(round(i * alpha_epochs / stages)): k for i, k in enumerate(keep, start=1)}


def prune_mask(alpha: np.ndarray, mask: np.ndarray, keep: int, none_index: int | None = None,
               drop_none: bool = False) -> np.ndarray:
    """The new keep mask of one cell kind's ``(edges, ops)`` alphas: on each edge the ``keep`` kept candidates
    (``mask`` 1) of the largest mixing weight stay 1, the others become 0. With ``drop_none``, ``none`` (column
    ``none_index``) is dropped first. Ties go to the lower op index; an edge with at most ``keep`` candidates
    left keeps them all."""
    alpha = np.asarray(alpha, dtype=np.float64)
    mask = np.asarray(mask, dtype=np.float64)
    if alpha.shape != mask.shape or alpha.ndim != 2:
        raise ValueError(f"alpha and mask: expected two (edges, ops) arrays of one shape, received {alpha.shape} "
                         f"and {mask.shape}")
    keep = int(keep)
    kept = mask > 0.5
    if drop_none and none_index is not None:
        kept[:, none_index] = False
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
