"""emodarts-tf: emoDARTS (differentiable architecture search for speech emotion recognition) in Keras 3."""

__version__ = "0.1.0"
