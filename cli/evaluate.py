"""Score a trained model on a corpus split (see emodarts_tf/commands/evaluate.py)."""
from emodarts_tf.commands.evaluate import main

raise SystemExit(main())
