"""Prepare a corpus: records.csv, folds.json and the cached MFCCs (see emodarts_tf/commands/prepare.py)."""
from emodarts_tf.commands.prepare import main

raise SystemExit(main())
