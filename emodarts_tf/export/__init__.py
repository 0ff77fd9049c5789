"""SavedModel export for TF Serving, with an MFCC and a raw-waveform signature.

- ``saved_model``: ``export_model(model_dir, serving_dir, version)`` -> ``<serving_dir>/<version>/``.
- ``waveform_mfcc``: ``WaveformMFCC``, librosa's MFCCs recomputed in the graph with tf.signal.
- ``client``: calling an export in process (``ServedModel``) or through TF Serving's REST API (``RestClient``).
"""
