"""Curve fits of the "only in the base SAE" fraction y against the number of SAEs N.

Models (Paulo & Belrose 2025, Fig. A1):
- `power_offset`: y = a·N^b + c   (a power law with an offset: c > 0 means some latents stay unique)
- `power`:        y = a·N^b
- `exp_offset`:   y = a·exp(−b·N) + c

Each fit is least squares by `scipy.optimize.curve_fit`, optionally weighted by σ (the spread of y
at each N), within bounds that keep the curve a non-increasing fraction: a ≥ 0, b ≤ 0 for the power
laws (b ≥ 0 for the exponential), 0 ≤ c ≤ 1. Without them a 3-parameter fit to few points can wander
to c = 60 with a = −59 and still pass through the data. Standard errors are the square roots of the
diagonal of the returned covariance.
Goodness of fit, with n points, k parameters and RSS the (weighted) residual sum of squares:

    AIC = n·ln(RSS/n) + 2k        BIC = n·ln(RSS/n) + k·ln(n)

The preferred model is the one with the lowest AIC (BIC is reported beside it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.optimize import curve_fit


def power_offset(N, a, b, c):
    return a * np.power(N, b) + c


def power(N, a, b):
    return a * np.power(N, b)


def exp_offset(N, a, b, c):
    return a * np.exp(-b * N) + c


_INF = np.inf
MODELS: dict[str, tuple[Callable, list[str], Callable, tuple]] = {
    # name: (function, parameter names, initial guess from data, (lower bounds, upper bounds))
    "power_offset": (power_offset, ["a", "b", "c"],
                     lambda N, y: [max(y[0] - y[-1], 1e-3), -1.0, float(np.clip(y[-1] * 0.9, 1e-3, 0.999))],
                     ([0, -_INF, 0], [_INF, 0, 1])),
    "power": (power, ["a", "b"], lambda N, y: [max(y[0] * N[0] ** 0.5, 1e-3), -0.5], ([0, -_INF], [_INF, 0])),
    "exp_offset": (exp_offset, ["a", "b", "c"],
                   lambda N, y: [max((y[0] - y[-1]) * np.exp(N[0] * 0.5), 1e-3), 0.5, float(np.clip(y[-1], 1e-3, 0.999))],
                   ([0, 0, 0], [_INF, _INF, 1])),
}


class FitError(ValueError):
    pass


@dataclass
class Fit:
    model: str
    params: dict[str, float]
    stderr: dict[str, float]
    residuals: list[float]
    rss: float
    aic: float
    bic: float
    n_points: int
    converged: bool = True
    message: str = ""
    curve: Callable = field(repr=False, default=None)

    def predict(self, N) -> np.ndarray:
        return self.curve(np.asarray(N, dtype=float), *self.params.values())


def fit_model(name: str, N, y, sigma=None) -> Fit:
    """Fit one model; a fit that does not converge is returned with `converged=False` and NaNs."""
    if name not in MODELS:
        raise FitError(f"unknown model {name!r}; valid: {list(MODELS)}")
    fn, names, guess, bounds = MODELS[name]
    N, y = np.asarray(N, dtype=float), np.asarray(y, dtype=float)
    if N.shape != y.shape or N.ndim != 1:
        raise FitError(f"N and y must be 1-D of one length, got {N.shape} and {y.shape}")
    if not (np.isfinite(N).all() and np.isfinite(y).all()):
        raise FitError(f"N and y must be finite; y holds {int((~np.isfinite(y)).sum())} and N "
                       f"{int((~np.isfinite(N)).sum())} NaN/inf value(s)")
    if len(N) <= len(names):
        raise FitError(f"{name} has {len(names)} parameters; needs more than {len(names)} points, got {len(N)}")
    w = None if sigma is None else np.maximum(np.asarray(sigma, dtype=float), 1e-12)
    try:
        p, cov = curve_fit(fn, N, y, p0=guess(N, y), sigma=w, absolute_sigma=False, bounds=bounds, max_nfev=20000)
    except (RuntimeError, ValueError) as err:
        nan = {k: float("nan") for k in names}
        return Fit(name, nan, nan, [float("nan")] * len(N), float("nan"), float("nan"), float("nan"), len(N),
                   converged=False, message=str(err), curve=fn)
    resid = y - fn(N, *p)
    r = resid / w if w is not None else resid
    rss = float(np.sum(r**2))
    n, k = len(N), len(names)
    rss_n = max(rss / n, 1e-300)
    se = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(k, np.nan)
    return Fit(name, dict(zip(names, map(float, p))), dict(zip(names, map(float, se))), list(map(float, resid)), rss,
               aic=float(n * np.log(rss_n) + 2 * k), bic=float(n * np.log(rss_n) + k * np.log(n)), n_points=n,
               curve=fn)


def fit_all(N, y, sigma=None) -> dict[str, Fit]:
    return {name: fit_model(name, N, y, sigma) for name in MODELS}


def preferred(fits: dict[str, Fit]) -> str:
    """Name of the converged model with the lowest AIC."""
    ok = {k: f for k, f in fits.items() if f.converged and np.isfinite(f.aic)}
    if not ok:
        raise FitError("no model converged")
    return min(ok, key=lambda k: ok[k].aic)


def bootstrap(statistic: Callable[[np.ndarray], float], n_items: int, n_boot: int = 200, seed: int = 0,
              level: float = 0.95) -> dict[str, float]:
    """Percentile bootstrap over items (e.g. seeds): resample `n_items` indices with replacement.

    `statistic(indices)` computes the quantity on a resample; returns mean, sd and the `level` interval.
    Resamples where the statistic is undefined (NaN) are dropped and counted.
    """
    return bootstrap_summary([statistic(i) for i in bootstrap_indices(n_items, n_boot, seed)], level)


def bootstrap_indices(n_items: int, n_boot: int = 200, seed: int = 0):
    """The `n_boot` resamples of `bootstrap`: each `n_items` indices drawn with replacement, seeded."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n_items, n_items)


def bootstrap_summary(values, level: float = 0.95) -> dict[str, float]:
    """`bootstrap`'s summary of the resamples' statistics: mean, sd and the percentile `level` interval of the
    finite ones, with how many were undefined."""
    vals = np.asarray(values, dtype=float)
    n_boot = int(vals.size)
    good = vals[np.isfinite(vals)]
    lo, hi = np.quantile(good, [(1 - level) / 2, 1 - (1 - level) / 2]) if good.size else (np.nan, np.nan)
    return {"mean": float(np.mean(good)) if good.size else float("nan"), "sd": float(np.std(good)) if good.size else
            float("nan"), "lo": float(lo), "hi": float(hi), "level": level, "n_boot": n_boot,
            "n_undefined": int(vals.size - good.size)}


def median_bootstrap(values: np.ndarray, n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """The median of `values` (NaN ignored) and its noise floor over the items: `bootstrap` of the nanmedian over
    resamples of the items — {"median", and `bootstrap_summary`'s "sd", "lo", "hi", …}."""
    v = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample's median: undefined, counted
        return {"median": float(np.nanmedian(v)), **bootstrap(lambda i: float(np.nanmedian(v[i])), v.size, n_boot, seed)}


def curve_weighted_by_bases(curve: dict[int, dict], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, mean) of an only-in-base curve with each draw weighted by `weights[its base seed]`."""
    Ns, means = [], []
    for N, c in sorted(curve.items()):
        w = weights[c["bases"]]
        Ns.append(N)
        means.append(float(np.sum(w * c["values"]) / np.sum(w)) if np.sum(w) > 0 else float("nan"))
    return np.array(Ns, dtype=float), np.array(means)


def bootstrap_over_bases(curve: dict[int, dict], n_seeds: int, statistic: Callable[[np.ndarray, np.ndarray], float],
                         n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """Bootstrap over seeds as bases: resample the n seeds with replacement, re-weight every (subset, base)
    draw by how often its base was drawn, and recompute `statistic(N, mean)` on the re-weighted curve."""
    def stat(idx: np.ndarray) -> float:
        N, mean = curve_weighted_by_bases(curve, np.bincount(idx, minlength=n_seeds).astype(float))
        return statistic(N, mean)

    return bootstrap(stat, n_seeds, n_boot=n_boot, seed=seed)
