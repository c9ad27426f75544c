"""ROC curves and AUROC of scorer outputs, pooled and per latent, with Heap et al.'s bootstrap band.

* Pooled: every scoring example of every sampled latent in one set (label 1 = activating /
  correctly marked), `sklearn.metrics.roc_curve` / `roc_auc_score` on it.
* Per latent: AUROC of that latent's examples alone (NaN when it lacks one of the classes).
* Bootstrap band: `n_boot` resamples of the pooled examples with replacement, stratified by label
  (each resample keeps the numbers of positives and negatives, so every resample has a curve); each
  resample's TPR is read on a `n_grid`-point FPR grid over [0, 1] (`tpr_on_grid`); the band is mean ± 1.96 sd across resamples, clipped
  to [0, 1].
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def pooled(labels: np.ndarray, scores: np.ndarray) -> dict:
    fpr, tpr, _ = roc_curve(labels, scores)
    return {"fpr": fpr, "tpr": tpr, "auroc": float(roc_auc_score(labels, scores))}


def latent_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of one latent's examples; NaN when they lack one of the classes."""
    return float(roc_auc_score(labels, scores)) if 0 < np.sum(labels) < len(labels) else float("nan")


def per_latent_auroc(results: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    return np.array([latent_auroc(y, s) for y, s in results])


def tpr_on_grid(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """TPR at each grid FPR on the ROC polyline (points joined by straight segments, as sklearn's
    curve is drawn); where the curve is vertical at a grid FPR, its highest point there."""
    i = np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, fpr.size - 1)  # last point with fpr <= x
    j = np.minimum(i + 1, fpr.size - 1)
    dx = fpr[j] - fpr[i]
    t = np.divide(grid - fpr[i], dx, out=np.zeros_like(grid, dtype=float), where=dx > 0)
    return tpr[i] + t * (tpr[j] - tpr[i])


def bootstrap_band(labels: np.ndarray, scores: np.ndarray, n_boot: int = 100, n_grid: int = 101,
                   seed: int = 0) -> dict:
    """{"fpr": [n_grid], "mean"/"lo"/"hi": [n_grid] TPR, "auroc_mean", "auroc_sd"} (module docstring)."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, float)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"a ROC band needs both classes; got {pos.size} positives and {neg.size} negatives")
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, n_grid)
    curves, aucs = np.empty((n_boot, n_grid)), np.empty(n_boot)
    for b in range(n_boot):
        idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        fpr, tpr, _ = roc_curve(labels[idx], scores[idx])
        curves[b] = tpr_on_grid(fpr, tpr, grid)
        aucs[b] = roc_auc_score(labels[idx], scores[idx])
    mean, sd = curves.mean(0), curves.std(0, ddof=1) if n_boot > 1 else np.zeros(n_grid)
    return {"fpr": grid, "mean": mean, "lo": np.clip(mean - 1.96 * sd, 0, 1), "hi": np.clip(mean + 1.96 * sd, 0, 1),
            "auroc_mean": float(aucs.mean()), "auroc_sd": float(aucs.std(ddof=1)) if n_boot > 1 else 0.0}


def separation(a: np.ndarray, b: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 for X drawn from `a` and Y from `b`: how well a score separates the latents of `a`
    (e.g. per-latent AUROCs of synthetic rule latents) from those of `b` (noise latents); 1 = every a above every b,
    0.5 = no separation. It is the AUROC of the score with `a` as positives (the Mann-Whitney U / (|a| |b|))."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"separation needs values on both sides (got {a.size} and {b.size})")
    d = a[:, None] - b[None, :]
    return float(((d > 0) + 0.5 * (d == 0)).mean())


def at_chance(labels: np.ndarray, scores: np.ndarray, n_boot: int = 100, seed: int = 0) -> bool:
    """Whether the pooled AUROC is within 1.96 bootstrap sd (`bootstrap_band`) of 0.5: a scorer at
    chance cannot support a claim about the latents it scored."""
    b = bootstrap_band(labels, scores, n_boot=n_boot, seed=seed)
    return bool(abs(b["auroc_mean"] - 0.5) <= 1.96 * b["auroc_sd"])
