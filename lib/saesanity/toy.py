"""Toy models for Heap et al.'s two hypotheses on why SAEs find structure in random transformers.

Data (Sharkey et al. 2022 style): `n_features` ground-truth unit directions f_i in R^d (Gaussian,
normalised; n_features ≫ d is superposition). Each sample activates feature i independently with
probability p (Bernoulli) at a magnitude drawn from Uniform(0, 1): x = Σ_i a_i f_i.

Networks, all with fixed random weights (never trained), shaped like transformer MLP blocks at init:
- `identity`: x ↦ x;
- `random_mlp(depth)`: x ↦ x + W₂ ReLU(W₁ x + b₁) repeated `depth` times (residual blocks), W₁ ~ N(0, 1/d),
  W₂ ~ N(0, 1/width), b₁ ~ N(0, 0.1²), so each block adds an update of the same order as its input.

Hypothesis 1 (input already superposed, random networks preserve it): train an SAE on net(x) for sparse
x and measure recovery = mean over features of the max cosine between the feature's image and an SAE
decoder row. The image of feature i is net(m̄ f_i) − net(0), m̄ = 0.5 the mean magnitude (for identity,
f_i itself).

Hypothesis 2 (random networks introduce sparse structure into dense input): feed x ~ N(0, I_d) through
`random_mlp(depth)` and train an SAE on the output and on a Gaussian sample with the output's mean and
covariance (which has no structure beyond its covariance). `fvu_ratio` = FVU(network output) /
FVU(matched Gaussian) at the same k: below 1 means the network created structure a sparse code exploits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .sae import TrainConfig, train_sae
from .sae.base import SAEBase


class ToyError(ValueError):
    pass


@dataclass(frozen=True)
class SparseSource:
    n_features: int  # ground-truth directions
    d: int  # input dimension
    p: float  # probability that each feature is active in a sample
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.p <= 1 or self.n_features < 1 or self.d < 1:
            raise ToyError(f"need n_features >= 1, d >= 1 and 0 < p <= 1 (got {self.n_features}, {self.d}, {self.p})")

    def directions(self) -> np.ndarray:
        """[n_features, d] unit rows."""
        f = np.random.default_rng([self.seed, 0]).normal(size=(self.n_features, self.d))
        return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)

    def sample(self, n: int, seed: int = 1) -> np.ndarray:
        """[n, d] samples x = Σ_i a_i f_i, a_i = Bernoulli(p) · Uniform(0, 1)."""
        rng = np.random.default_rng([self.seed, seed])
        a = (rng.random((n, self.n_features)) < self.p) * rng.random((n, self.n_features))
        return (a.astype(np.float32) @ self.directions()).astype(np.float32)


def random_mlp(d: int, depth: int, width: int | None = None, seed: int = 0):
    """A function [n, d] -> [n, d]: `depth` random residual ReLU MLP blocks (module docstring); depth 0 is identity."""
    if depth < 0:
        raise ToyError(f"depth={depth} must be >= 0")
    width = width or 4 * d
    g = torch.Generator().manual_seed(seed)
    blocks = [(torch.randn(d, width, generator=g) / np.sqrt(d), torch.randn(width, generator=g) * 0.1,
               torch.randn(width, d, generator=g) / np.sqrt(width)) for _ in range(depth)]

    @torch.no_grad()
    def net(x: np.ndarray) -> np.ndarray:
        h = torch.from_numpy(np.asarray(x, dtype=np.float32))
        for w1, b1, w2 in blocks:
            h = h + torch.relu(h @ w1 + b1) @ w2
        return h.numpy()

    return net


def feature_images(source: SparseSource, net) -> np.ndarray:
    """[n_features, d] unit images net(m̄ f_i) − net(0) of each feature alone at mean magnitude m̄ = 0.5."""
    f = source.directions()
    img = net(0.5 * f) - net(np.zeros((1, source.d), dtype=np.float32))
    return img / np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)


def recovery(sae: SAEBase, targets: np.ndarray) -> float:
    """Mean over target directions of the max cosine to any SAE decoder row (decoder rows are unit norm)."""
    W = sae.W_dec.detach().numpy()
    W = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    return float((targets @ W.T).max(1).mean())


def fit(x: np.ndarray, d_sae: int, k: int, *, n_steps: int, batch_size: int = 512, lr: float = 3e-3,
        seed: int = 0) -> tuple[SAEBase, float]:
    """Train a TopK SAE on `x` (one epoch of `n_steps` batches; x must hold n_steps·batch_size rows) and
    return it with its FVU on `x` (centred on the mean of x, `metrics.fvu`)."""
    from .metrics import fvu

    need = n_steps * batch_size
    if x.shape[0] < need:
        raise ToyError(f"{x.shape[0]} samples < n_steps·batch_size = {need}")
    cfg = TrainConfig(d_sae=d_sae, k=k, batch_size=batch_size, lr=lr, n_tokens=need, seed=seed, warmup_steps=10,
                      dead_tokens=20 * batch_size)
    sae, _ = train_sae(x, cfg, progress=False)
    with torch.no_grad():
        xt = torch.from_numpy(x[:8192])
        return sae, float(fvu(xt, sae(xt)))


def gaussian_matched(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """[n, d] Gaussian samples with the mean and covariance of `x`."""
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(x.mean(0), np.cov(x, rowvar=False), size=n).astype(np.float32)


def k_for(n_features: int, p: float) -> int:
    """The TopK k of a hypothesis-1 SAE: the expected number of active features, n_features · p, rounded (>= 1)."""
    return max(1, round(n_features * p))


def hypothesis1(source: SparseSource, depth: int, *, k: int, n_steps: int, batch_size: int = 512,
                seed: int = 0) -> dict:
    """SAE (d_sae = n_features) on `random_mlp(depth)` of sparse input: recovery of the feature images and FVU."""
    net = random_mlp(source.d, depth, seed=seed + 100)
    x = net(source.sample(n_steps * batch_size, seed=seed + 1))
    sae, f = fit(x, source.n_features, k, n_steps=n_steps, batch_size=batch_size, seed=seed)
    return {"recovery": recovery(sae, feature_images(source, net)), "fvu": f}


def hypothesis2(d: int, depth: int, *, d_sae: int, k: int, n_steps: int, batch_size: int = 512,
                seed: int = 0) -> dict:
    """SAEs on `random_mlp(depth)` of dense N(0, I) input and on its covariance-matched Gaussian: both
    FVUs, their ratio, and the mean excess kurtosis of the output coordinates (0 for a Gaussian)."""
    from scipy.stats import kurtosis

    n = n_steps * batch_size
    x = random_mlp(d, depth, seed=seed + 100)(np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32))
    g = gaussian_matched(x, n, seed=seed + 1)
    f_net = fit(x, d_sae, k, n_steps=n_steps, batch_size=batch_size, seed=seed)[1]
    f_gauss = fit(g, d_sae, k, n_steps=n_steps, batch_size=batch_size, seed=seed)[1]
    return {"fvu_network": f_net, "fvu_matched_gaussian": f_gauss, "fvu_ratio": f_net / f_gauss,
            "excess_kurtosis": float(np.mean(kurtosis(x, axis=0)))}
