"""Sparse autoencoders: architectures, the training loop, and SAELens/sparsify I/O."""

from .arch import ARCHITECTURES, BatchTopKSAE, GatedSAE, JumpReLUSAE, ReLUSAE
from .base import SAEBase
from .io import load_release, load_sae, save_saelens
from .topk import TopKSAE
from .train import TrainConfig, train_sae

__all__ = ["ARCHITECTURES", "SAEBase", "TopKSAE", "BatchTopKSAE", "ReLUSAE", "GatedSAE", "JumpReLUSAE",
           "TrainConfig", "train_sae", "save_saelens", "load_sae", "load_release"]
