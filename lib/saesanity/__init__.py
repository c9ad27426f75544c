"""saesanity: reproducibility checks for what sparse autoencoders find in language models."""

__version__ = "0.1.0"
