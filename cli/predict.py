"""Predict the emotion of audio files with a trained or exported model (see emodarts_tf/commands/predict.py)."""
from emodarts_tf.commands.predict import main

raise SystemExit(main())
