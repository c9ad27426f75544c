"""Sparse autoencoders: architectures, the training loop, and I/O (SAELens, sparsify, dictionary_learning, hub names)."""

from .arch import ARCHITECTURES, BatchTopKSAE, GatedSAE, JumpReLUSAE, MatryoshkaBatchTopKSAE, ReLUSAE
from .base import SAEBase
from .io import (FORMATS, SAEFormatError, detect_format, find_saes, load_release, load_sae, load_saes, resolve,
                 save_saelens)
from .topk import TopKSAE
from .train import TrainConfig, train_sae

__all__ = ["ARCHITECTURES", "SAEBase", "TopKSAE", "BatchTopKSAE", "MatryoshkaBatchTopKSAE", "ReLUSAE", "GatedSAE", "JumpReLUSAE",
           "TrainConfig", "train_sae", "save_saelens", "load_sae", "load_saes", "load_release", "find_saes",
           "detect_format", "resolve", "FORMATS", "SAEFormatError"]
