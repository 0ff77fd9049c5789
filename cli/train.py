"""Retrain a genotype on each fold of a corpus (see emodarts_tf/commands/train.py)."""
from emodarts_tf.commands.train import main

raise SystemExit(main())
