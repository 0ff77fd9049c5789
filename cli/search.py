"""Search CNN + SeqNN cells with DARTS on the training part of each fold (see emodarts_tf/commands/search.py)."""
from emodarts_tf.commands.search import main

raise SystemExit(main())
