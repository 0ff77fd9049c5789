"""Tune, retrain and test a hand-designed baseline on each fold of a corpus (see emodarts_tf/commands/baseline.py)."""
from emodarts_tf.commands.baseline import main

raise SystemExit(main())
