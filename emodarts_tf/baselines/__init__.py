"""Keras Tuner baselines: hand-designed CNN / LSTM / CNN-LSTM (+attention) models tuned per fold.

- :mod:`~emodarts_tf.baselines.hypermodels`: the HyperModels and their search spaces (``configs/baselines.yaml``).
- :mod:`~emodarts_tf.baselines.objective`: ``val_ua``, UA over the whole validation set, the tuning objective.
- :mod:`~emodarts_tf.baselines.runner`: tuning on validation speakers, retraining, test once, ``summary.json``.
- :mod:`~emodarts_tf.baselines.compare`: side-by-side table and chart of emoDARTS and baseline runs.
- :mod:`~emodarts_tf.baselines.layers`: attention pooling over time.
- :mod:`~emodarts_tf.baselines.names`: the family and tuner names (imports nothing heavy, for the command line).
"""
