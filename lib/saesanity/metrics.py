"""SAE quality metrics, each with one written definition.

Shapes: x, x̂ [B, D] (rows are tokens), z [B, F] latents.
"""

from __future__ import annotations

import torch


def fvu(x_BD: torch.Tensor, x_hat_BD: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained, centred on the batch mean:

        FVU = Σ_b ‖x_b − x̂_b‖² / Σ_b ‖x_b − x̄‖²,   x̄ = (1/B) Σ_b x_b.

    1 − FVU is the explained variance. Not SAELens<6 / SAEBench's "explained variance", which
    divides by Σ‖x_b‖² (variance around zero) and so looks better on data with a large mean.
    """
    if x_BD.shape != x_hat_BD.shape or x_BD.ndim != 2:
        raise ValueError(f"fvu needs two [B, D] tensors of one shape, got {tuple(x_BD.shape)} and {tuple(x_hat_BD.shape)}")
    total = (x_BD - x_BD.mean(0, keepdim=True)).pow(2).sum()
    return (x_BD - x_hat_BD).pow(2).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


def l0(z_BF: torch.Tensor) -> torch.Tensor:
    """Mean number of non-zero latents per token: L0 = (1/B) Σ_b #{f : z_bf ≠ 0}."""
    return (z_BF != 0).sum(1).float().mean()


def firing_frequency(z_BF: torch.Tensor) -> torch.Tensor:
    """[F] fraction of tokens on which each latent is active: (1/B) Σ_b 1[z_bf ≠ 0]."""
    return (z_BF != 0).float().mean(0)
