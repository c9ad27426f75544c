"""Sparse autoencoders: architectures, the training loop, and SAELens/sparsify I/O."""

from .io import load_sae, save_saelens
from .topk import TopKSAE
from .train import TrainConfig, train_topk

__all__ = ["TopKSAE", "TrainConfig", "train_topk", "save_saelens", "load_sae"]
