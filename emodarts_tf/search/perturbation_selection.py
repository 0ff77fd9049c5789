"""Perturbation-based architecture selection (DARTS-PT; Wang et al., "Rethinking Architecture Selection in
Differentiable NAS", ICLR 2021): the genotype chosen by what each candidate contributes to the trained supernet,
not by the size of its alpha.

DARTS keeps, on every edge, the op with the largest alpha. Wang et al. show that the alpha of an op need not
say how much the supernet relies on it (skip connections grow large alphas while contributing little), and
select instead by measuring the supernet with the candidate taken out. This module does that on a searched
:class:`~emodarts_tf.search.model.SearchModel`:

1. **Operation selection, one edge at a time** (edges in a seeded random order, all cell kinds together). For
   each non-``none`` op of the edge, the op's mixing weight is set to 0 (the others keep theirs: the supernet
   with that op removed) and the supernet's loss on the alphas part is measured. The op whose removal raises
   the loss most is kept, and the edge is *projected*: its mixing weights become one-hot on that op.
2. **Topology selection, one node at a time** (nodes in a seeded random order). For each (projected) incoming
   edge of the node, the edge is removed (its mixing weights set to 0) and the loss measured; the two
   edges whose removal raises it most are kept, the others are pruned (weights 0).
3. After every projection or pruning the supernet's weights are tuned for ``tune_steps`` steps of the
   search's own weight step (its optimizer, decay and clipping; alphas frozen), on the search's weights part,
   so that the next decision is measured on a supernet that has adapted to the previous ones (the paper tunes
   between projections). The tuning sees a pruned edge as ``none`` (the cell's ``none`` op, all-zero output).

The measure is the mean cross-entropy over the whole alphas part, with the supernet in inference mode (moving
batch-norm statistics, no dropout): the split the search trains the alphas on, never the validation or test
speakers. Wang et al. measure accuracy; with the few hundred utterances of a small corpus's alphas part, taking
one of eight weighted ops out of a mixture rarely flips a prediction, so accuracy ties on most candidates while
the loss still orders them.

``search.max_skip`` caps the ``skip_connect`` edges of the kept topology of normal and SeqNN cells as the
alpha rule does: while a cell keeps more, the weakest kept skip edge (smallest loss rise on removal) takes its
next op by removal score. The model leaves :func:`select_by_perturbation` as it entered it (alphas, weights,
optimizer state restored).
"""
from __future__ import annotations

import logging
import time

import numpy as np
import tensorflow as tf

from emodarts_tf.evaluation.split import logits_of
from emodarts_tf.search.reuse import state_variables
from emodarts_tf.search_space.genotype import Genotype
from emodarts_tf.search_space.primitives import nodes_of_edges
from emodarts_tf.utils.numeric import softmax

log = logging.getLogger(__name__)

FORMAT = "emodarts-tf/perturbation-selection/v1"
# The logit given to the ops an edge no longer has: exp(-1e9 - 0) is exactly 0 in float32 and float64.
_OFF = -1e9
KEEP = 2  # edges kept per node: DARTS cells, and the genotype format, read two inputs per node


def edge_rows(nodes: int) -> list:
    """``[(node, input, row)]`` of a cell of ``nodes`` nodes (node ``i`` reads ``i + 2`` states), in the row
    order of its alpha matrix."""
    out, row = [], 0
    for node in range(nodes):
        for j in range(node + 2):
            out.append((node, j, row))
            row += 1
    return out


def removal_weights(weights: np.ndarray, row: int, col: int | None = None) -> np.ndarray:
    """``weights`` (edges, ops) with op ``col`` of edge ``row`` taken out (its mixing weight 0, the others
    unchanged), or the whole edge when ``col`` is None."""
    out = np.array(weights, dtype=np.float64, copy=True)
    if col is None:
        out[row, :] = 0.0
    else:
        out[row, col] = 0.0
    return out


def cap_skips(kept: list, ops: tuple, op_scores: dict, edge_scores: dict, max_skip: int | None) -> list:
    """``kept`` ([(node, input, row, op index)]) with at most ``max_skip`` ``skip_connect`` edges: while there
    are more, the kept skip edge with the smallest removal score (``edge_scores[row]``) takes its best other op
    by ``op_scores[row]`` (never ``none``)."""
    if max_skip is None or "skip_connect" not in ops:
        return list(kept)
    skip = ops.index("skip_connect")
    banned = {i for i, name in enumerate(ops) if name == "none"}
    kept = list(kept)
    forbidden = {}
    while sum(1 for *_, c in kept if c == skip) > max_skip:
        i = min((i for i, (*_, c) in enumerate(kept) if c == skip), key=lambda i: edge_scores[kept[i][2]])
        node, j, row, _ = kept[i]
        forbidden.setdefault(row, set()).add(skip)
        scores = np.array(op_scores[row], dtype=np.float64)
        for c in banned | forbidden[row]:
            scores[c] = -np.inf
        kept[i] = (node, j, row, int(np.argmax(scores)))
    return kept


class _LossMeter:
    """Mean cross-entropy of the backbone over fixed arrays for given mixing weights (one trace per batch
    shape, inference mode)."""

    def __init__(self, model, x, y, batch_size: int):
        self.backbone = model.backbone
        self.kinds = tuple(model.alpha_kinds)
        n = len(y)
        self.batches = []
        for start in range(0, n, batch_size):
            xb = tf.nest.map_structure(lambda a: tf.convert_to_tensor(a[start:start + batch_size]), x)
            self.batches.append((xb, tf.convert_to_tensor(np.asarray(y[start:start + batch_size], dtype=np.int32))))
        self.n = n
        self.evaluations = 0
        self._dtypes = {k: a.dtype for k, a in zip(self.kinds, model.arch_variables)}

        @tf.function(reduce_retracing=True)
        def batch_loss(xb, yb, weights):
            logits = tf.cast(logits_of(self.backbone(xb, weights, training=False)), tf.float32)
            return tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True))

        self._batch_loss = batch_loss

    def __call__(self, weights: dict) -> float:
        w = {k: tf.constant(np.asarray(weights[k]), dtype=self._dtypes[k]) for k in self.kinds}
        total = 0.0
        for xb, yb in self.batches:
            total += float(self._batch_loss(xb, yb, w))
        self.evaluations += 1
        return total / self.n


def _logits_from_state(weights: np.ndarray, projected: dict, pruned: set, none_col: int | None) -> np.ndarray:
    """Alpha logits whose softmax is the selection's current mixing weights: the searched weights on edges not
    yet projected, one-hot on projected ones, one-hot on ``none`` on pruned ones (when the cell has ``none``)."""
    logits = np.log(np.maximum(np.asarray(weights, dtype=np.float64), 1e-300))
    for row, col in projected.items():
        target = none_col if (row in pruned and none_col is not None) else col
        logits[row, :] = _OFF
        logits[row, target] = 0.0
    return logits


def select_by_perturbation(
    model,
    alphas_part: tuple,
    tune_data=None,
    tune_steps: int = 0,
    max_skip: int | None = None,
    meta: dict | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple:
    """The DARTS-PT genotype of a searched ``model`` (see the module docstring) and a record of its decisions.

    Args:
        model: a searched :class:`~emodarts_tf.search.model.SearchModel` (compiled, with its optimizers).
        alphas_part: ``(x, y)`` arrays the removals are measured on (the search's alphas part).
        tune_data: the search's zipped ``(weights, alphas)`` dataset (infinite) for the tuning steps.
        tune_steps: weight steps after every projection and pruning (0: no tuning).
        max_skip: the cap on ``skip_connect`` edges of normal and SeqNN cells (None: no cap).
        meta: the genotype's meta (``selected: perturbation`` is added).
        seed: the order in which edges and nodes are decided.
        batch_size: examples per forward pass of the measurement.

    Returns:
        ``(genotype, record)``: the :class:`Genotype` and a JSON-ready dict of the per-edge removal losses, the
        order of the decisions, the supernet's loss after each, and times.
    """
    if isinstance(tune_steps, bool) or not isinstance(tune_steps, int) or tune_steps < 0:
        raise ValueError(f"tune_steps: expected an integer >= 0, received {tune_steps!r}")
    if tune_steps and tune_data is None:
        raise ValueError("tune_steps > 0 needs tune_data (the search's zipped weights and alphas datasets)")
    if getattr(model, "edge_norm", False):
        raise ValueError("select_by_perturbation: expected a supernet without edge weights (search.edge_norm false: "
                         "the removals score edges by the loss, the edge weights would scale what they remove), "
                         "received one with edge_norm=True")
    if getattr(getattr(model, "backbone", None), "partial_channels", 1) > 1:
        raise ValueError(f"select_by_perturbation: expected a supernet without partial channel connections "
                         f"(search.partial_channels 1: removing an op would also rescale the channels that bypass the "
                         f"mixture), received partial_channels={model.backbone.partial_channels}")
    pruned = [k for k, m in model.alpha_masks().items() if (m < 0.5).any()]
    if pruned:
        raise ValueError(
            f"select_by_perturbation: the supernet's {pruned} candidates were pruned (search.prune); the projections "
            "would rank candidates that are no longer in the mixture"
        )
    started = time.perf_counter()
    backbone = model.backbone
    kinds = tuple(model.alpha_kinds)
    searched_alphas = model.alpha_arrays()
    saved = [v.numpy() for v in state_variables(model)]
    alpha_updates = bool(float(model.alpha_active.numpy()) > 0.5)
    searched = {k_: softmax(a.astype(np.float64)) for k_, a in searched_alphas.items()}
    ops = {k_: _cell_ops(backbone, k_) for k_ in kinds}
    nodes = {k_: nodes_of_edges(searched[k_].shape[0], f"alphas of the {k_} cell") for k_ in kinds}
    for k_ in kinds:
        if searched[k_].shape[1] != len(ops[k_]):
            raise ValueError(f"alphas of the {k_} cell: {searched[k_].shape[1]} columns for the {len(ops[k_])} "
                             f"candidate ops {ops[k_]}")
    none_col = {k_: (ops[k_].index("none") if "none" in ops[k_] else None) for k_ in kinds}
    # A cell kind the network has no cell of (its alphas reached by no loss) is not measured: its cell comes
    # from its alphas by the DARTS rule, as arbitrary as there (SearchBackbone.derive_genotype).
    measured = tuple(k_ for k_ in kinds if k_ in tuple(getattr(backbone, "cell_kinds", kinds)))
    meter = _LossMeter(model, alphas_part[0], alphas_part[1], batch_size)
    rng = np.random.default_rng(seed)
    projected = {k_: {} for k_ in kinds}
    pruned = {k_: set() for k_ in kinds}
    tuned_steps = 0

    def current() -> dict:
        out = {}
        for k_ in kinds:
            w = np.array(searched[k_], copy=True)
            for row, col in projected[k_].items():
                w[row, :] = 0.0
                w[row, col] = 1.0
            for row in pruned[k_]:
                w[row, :] = 0.0
            out[k_] = w
        return out

    def tune(decision: int) -> None:
        nonlocal tuned_steps
        if not tune_steps:
            return
        for var, k_ in zip(model.arch_variables, kinds):
            logits = _logits_from_state(searched[k_], projected[k_], pruned[k_], none_col[k_])
            var.assign(logits)
        model.set_alpha_updates(False)
        data = tune_data.skip(decision * tune_steps) if decision else tune_data
        model.fit(data, epochs=1, steps_per_epoch=tune_steps, verbose=0, shuffle=False)
        tuned_steps += tune_steps

    try:
        base = meter(current())
        record = {"format": FORMAT, "criterion": "alphas-part cross-entropy (inference mode)", "seed": int(seed),
                  "tune_steps": int(tune_steps), "examples": int(meter.n), "searched_loss": base,
                  "operations": [], "topology": []}
        # 1. operations, edge by edge
        edges = [(k_, node, j, row) for k_ in measured for node, j, row in edge_rows(nodes[k_])]
        op_scores = {k_: {} for k_ in kinds}
        for decision, i in enumerate(rng.permutation(len(edges))):
            kind, node, j, row = edges[int(i)]
            weights = current()
            before = meter(weights)
            scores = np.full(len(ops[kind]), -np.inf)
            for col, name in enumerate(ops[kind]):
                if name == "none":
                    continue
                trial = dict(weights)
                trial[kind] = removal_weights(weights[kind], row, col)
                scores[col] = meter(trial) - before
            op_scores[kind][row] = scores
            choice = int(np.argmax(scores))
            projected[kind][row] = choice
            tune(decision)
            record["operations"].append({
                "cell": kind, "node": node, "input": j, "op": ops[kind][choice], "loss_before": before,
                "removal_loss_rise": {ops[kind][c]: float(s) for c, s in enumerate(scores) if np.isfinite(s)},
            })
            log.info("perturbation selection: %s node %d input %d -> %s (loss rise %.4f on removal; %d/%d edges)",
                     kind, node, j, ops[kind][choice], scores[choice], decision + 1, len(edges))
        # 2. topology, node by node
        all_nodes = [(k_, node) for k_ in measured for node in range(nodes[k_])]
        edge_scores = {k_: {} for k_ in kinds}
        kept = {k_: [] for k_ in kinds}
        for step, i in enumerate(rng.permutation(len(all_nodes))):
            kind, node = all_nodes[int(i)]
            rows = [(j, row) for n_, j, row in edge_rows(nodes[kind]) if n_ == node]
            weights = current()
            before = meter(weights)
            rises = {}
            for j, row in rows:
                trial = dict(weights)
                trial[kind] = removal_weights(weights[kind], row)
                rises[row] = meter(trial) - before
            edge_scores[kind].update(rises)
            order = sorted(rows, key=lambda jr: (-rises[jr[1]], jr[0]))
            keep = sorted(order[:KEEP])
            for j, row in order[KEEP:]:
                pruned[kind].add(row)
            kept[kind].extend((node, j, row, projected[kind][row]) for j, row in keep)
            if len(rows) > KEEP:
                tune(len(edges) + step)
            record["topology"].append({
                "cell": kind, "node": node, "kept_inputs": [j for j, _ in keep], "loss_before": before,
                "removal_loss_rise": {str(j): float(rises[row]) for j, row in rows},
            })
        # 3. the skip cap, then the genotype
        cells = {}
        caps = {"normal": max_skip, "reduce": None, "seq": max_skip}
        for kind in measured:
            chosen = cap_skips(sorted(kept[kind]), ops[kind], op_scores[kind], edge_scores[kind], caps.get(kind))
            cells[kind] = chosen
        final_loss = meter(current())
        unmeasured = {k_: searched_alphas[k_] for k_ in kinds if k_ not in measured}
        genotype = _genotype(backbone, cells, ops, nodes, unmeasured, max_skip,
                             {**(meta or {}), "selected": "perturbation"})
        genotype.validate("the perturbation-selected genotype")
        record.update({
            "selected_loss": final_loss, "tuning_steps": tuned_steps, "evaluations": meter.evaluations,
            "seconds": round(time.perf_counter() - started, 2),
            "cells": {k_: [[ops[k_][c], j] for _, j, _, c in cells[k_]] for k_ in measured},
        })
        log.info("perturbation selection: %d measurements, %d tuning steps, %.0f s; supernet loss on the alphas part "
                 "%.4f searched, %.4f selected", meter.evaluations, tuned_steps, record["seconds"], base, final_loss)
        return genotype, record
    finally:
        for var, value in zip(state_variables(model), saved):
            var.assign(value)
        model.set_alpha_updates(alpha_updates)


def _cell_ops(backbone, kind: str) -> tuple:
    return tuple(backbone.seq_ops if kind == "seq" else backbone.cnn_ops)


def _genotype(backbone, cells: dict, ops: dict, nodes: dict, unmeasured: dict, max_skip, meta: dict) -> Genotype:
    """The genotype of the chosen ``(node, input, row, op)`` edges through the backbone's own alpha rule, from
    logits that leave it no choice: one-hot on the kept edges' ops; pruned edges one-hot on ``none`` (or all
    equal when the cell has no ``none``, which ranks them below every one-hot edge). The cells of
    ``unmeasured`` kinds come from their alphas (the skip cap applies to them; the measured ones are capped
    already, and one-hot rows leave the cap nothing to change)."""
    alphas = dict(unmeasured)
    for kind, chosen in cells.items():
        rows = len(edge_rows(nodes[kind]))
        logits = np.full((rows, len(ops[kind])), 0.0)
        if "none" in ops[kind]:
            logits[:, :] = _OFF
            logits[:, ops[kind].index("none")] = 0.0
        for _, _, row, col in chosen:
            logits[row, :] = _OFF
            logits[row, col] = 0.0
        alphas[kind] = logits
    return backbone.derive_genotype(alphas, max_skip=max_skip if unmeasured else None, meta=meta)
