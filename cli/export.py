"""Export a trained model as a TF Serving SavedModel (see emodarts_tf/commands/export.py)."""
from emodarts_tf.commands.export import main

raise SystemExit(main())
