"""The bilevel DARTS search: the search model and its alternating train_step, the search run.

- ``model``: ``SearchModel`` (alphas as its own variables, two optimisers, alternating ``train_step``,
  genotype derivation).
- ``architect``: the second-order (unrolled) alpha gradient with the finite-difference Hessian term.
- ``replicas``: gradient aggregation and assignment that also hold under ``tf.distribute``.
- ``callbacks``: warm-up, validation UA, alpha history, genotypes, checkpoints, logs.
- ``checkpoint``: ``SearchState``, the resumable state of a search (``tf.train.CheckpointManager``).
- ``plots``: cell diagrams (matplotlib).
- ``runner``: ``run_search`` / ``run_search_folds``, one search per fold with all its outputs.
"""
