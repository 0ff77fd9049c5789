"""Corpora, speaker-independent protocols, MFCC features, the feature cache and tf.data pipelines."""
