"""The names of the baseline families and tuners, in a module that imports nothing heavy: the command line
offers them as choices before TensorFlow is imported (the commands silence its start-up lines first)."""
from __future__ import annotations

FAMILIES = ("cnn", "lstm", "cnn_lstm", "cnn_lstm_att")
TUNERS = ("hyperband", "bayesian", "random")
