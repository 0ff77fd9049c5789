"""Edge normalisation (PC-DARTS, Xu et al., ICLR 2020): a weight per edge, softmaxed over the edges into each node.

Node ``i`` of a cell sums its ``i + 2`` incoming edges (rows ``i (i + 3) / 2 ..`` of the cell's alphas: node 0's 2
edges first, then node 1's 3, ...). With edge normalisation every edge also has a logit ``beta_e``, and the node
weights its edges by the softmax of its own betas, so that edge ``e`` contributes
``softmax_node(beta)_e * sum_o softmax(alpha_e)_o * op_o(x)``. The backbone needs no change: the mixing weights it
receives are the op weights scaled row by row (:func:`edge_weights_tensor`).

The genotype ranks the edges into a node by ``softmax_node(beta)_e * (weight of the edge's best op)``, PC-DARTS's
rule, instead of the best op's weight alone. The edge choice then has a parameter of its own, which keeps its
meaning when the op weights of every edge are near uniform, as they are after progressive pruning has left three
candidates and no ``none`` on each edge.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from emodarts_tf.search_space.primitives import nodes_of_edges


def node_sizes(edges: int) -> list:
    """The incoming edges of each node of a cell of ``edges`` edges: ``[2, 3, ...]``."""
    return [node + 2 for node in range(nodes_of_edges(edges, "beta"))]


def edge_weights(beta) -> np.ndarray:
    """``(num_edges,)`` betas -> each edge's weight: the softmax over the betas of the edges into its node (float64)."""
    beta = np.asarray(beta, dtype=np.float64)
    if beta.ndim != 1:
        raise ValueError(f"beta: expected a vector of one logit per edge, received shape {beta.shape}")
    out, start = np.empty_like(beta), 0
    for size in node_sizes(beta.shape[0]):
        z = np.exp(beta[start:start + size] - beta[start:start + size].max())
        out[start:start + size] = z / z.sum()
        start += size
    return out


def edge_weights_tensor(beta):
    """:func:`edge_weights` in TensorFlow (differentiable): the softmax of each node's slice of ``beta``."""
    sizes = node_sizes(int(beta.shape[0]))
    return tf.concat([tf.nn.softmax(part) for part in tf.split(beta, sizes)], axis=0)


def initial_betas(edges: dict, scale: float, seed: int) -> dict:
    """The betas a search starts from: ``{kind: scale * N(0, 1)}`` of ``edges[kind]`` entries (float64), from a
    generator of their own (seeded with ``(seed, 1)``), so that the alphas and weights of a seed are the same with
    and without edge normalisation."""
    rng = np.random.default_rng((int(seed), 1))
    return {kind: (float(scale) * rng.standard_normal(int(n))).astype("float64") for kind, n in edges.items()}
