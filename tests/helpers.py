"""Test data shared by several test modules."""

import numpy as np


def planted(n=8192, d=16, n_feat=32, seed=0, density=0.06):
    """Activations [n, d] = sparse non-negative codes over `n_feat` unit directions + 0.5; returns (acts, feats)."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_feat, d))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    coef = (rng.random((n, n_feat)) < density) * rng.uniform(1, 3, (n, n_feat))
    return (coef @ feats + 0.5).astype(np.float32), feats
