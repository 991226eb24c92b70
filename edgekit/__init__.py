"""edgekit: take a trained model to a real edge device and prove how it runs there."""

__version__ = "0.1.0"
