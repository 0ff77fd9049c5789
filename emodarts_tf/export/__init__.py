"""SavedModel export for TF Serving, with an MFCC and a raw-waveform signature."""
