"""Compare emoDARTS and baseline runs side by side (see emodarts_tf/commands/compare.py)."""
from emodarts_tf.commands.compare import main

raise SystemExit(main())
