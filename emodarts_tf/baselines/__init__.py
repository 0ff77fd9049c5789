"""Keras Tuner baselines: hand-designed CNN / LSTM / CNN-LSTM (+attention) models."""
