"""Data nulls for the consistency numbers (issue 18): activations that keep some statistics of real ones and
nothing else, for a seed pair of SAEs to be trained on in place of the real activations.

Two seeds trained on null data share latents (or match decoders, PW-MCC) only as far as the kept statistics make
them; a real pair's number says something beyond those statistics only by as much as it exceeds the null pair's
(same recipe, size, k, tokens and seeds). Where two random dictionaries (`consistency.random_dictionary`) are the
floor of "no training at all", these are the floor of "training on data with no dictionary in it". Kinds (`KINDS`),
each defined on reference rows R [M, D] (the real training activations):

- **gaussian**: rows drawn from N(μ, Σ), μ and Σ R's mean and covariance (unbiased, `moments`): the second-order
  structure (principal directions and their variances) kept; sparsity, heavy tails and any dictionary gone. Drawn
  as μ + A z with z ~ N(0, I) and A = V Λ^½ from Σ's eigendecomposition (A Aᵀ = Σ, also when Σ is singular).
- **shuffled**: each dimension's values shuffled across rows, independently per dimension: entry (b, j) is R's
  entry (i_bj, j) with every i_bj an independent uniform draw from 0..M−1 — a draw from the product of R's
  empirical marginals (with replacement: the stream is longer than R). Every dimension's distribution kept (its
  heavy tail and any outlier dimension included); every dependence between dimensions (covariance included) gone.

Both are generated batch by batch as the SAEs train (`NullSource`, nothing written to disk): batch `step` is a
function of (`seed`, the SAE config's data_seed, step) alone — the same on every rank, in every run and for every
member of a family — so a shorter run's batches are a prefix of a longer one's and its snapshots are the shorter
runs. Held-out null rows (`NullData.sample`) come from a separate stream.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("gaussian", "shuffled")
LABEL = {"gaussian": "Gaussian (same mean, covariance)", "shuffled": "shuffled (same marginals)"}
_VERSION = 1  # bump when the draws change: it is part of every null SAE's cache key
_HELDOUT_STREAM = 2**31 - 1  # the data_seed slot of the held-out draws: no SAE config uses it


def moments(x: np.ndarray, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], unbiased covariance [D, D]) of the rows of `x` [M, D] (a memmap is fine), float64, in chunks:
    each chunk centred on the first chunk's mean (so the float32 products lose no precision to a large mean) and
    its sums accumulated in float64."""
    n, d = x.shape
    if n < 2:
        raise ValueError(f"moments need at least 2 rows; got {n}")
    shift = np.asarray(x[:chunk], np.float64).mean(0)
    shift32 = torch.from_numpy(shift.astype(np.float32))
    s, ss = torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    for i in range(0, n, chunk):
        c = torch.from_numpy(np.asarray(x[i:i + chunk], np.float32)) - shift32
        s += c.sum(0).double()
        ss += (c.T @ c).double()
    m = s / n
    cov = (ss - n * torch.outer(m, m)) / (n - 1)
    return (shift32.double() + m).numpy(), cov.numpy()


@dataclass(frozen=True, eq=False)
class NullData:
    """Null training data derived from reference rows `ref` [M, D] (module docstring). It stands where an activation
    array stands in `runs` (`acts`, with `acts_dir=None`); SAEs trained on it are keyed by `key()`."""

    kind: str
    ref: np.ndarray  # [M, D] the reference rows (a memmap is fine)
    ref_name: str  # names `ref` in cache keys: its activation artifact's folder
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"data null {self.kind!r}; valid: {list(KINDS)}")
        if self.ref.ndim != 2 or self.ref.shape[0] < 2:
            raise ValueError(f"a data null needs reference rows [M >= 2, D]; got shape {self.ref.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.ref.shape)

    def key(self) -> dict:
        return {"kind": self.kind, "of": self.ref_name, "rows": self.shape[0], "seed": self.seed, "version": _VERSION}

    @functools.cached_property
    def _gaussian(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ [D], Aᵀ [D, D]) float32 with A Aᵀ = Σ (module docstring)."""
        mean, cov = moments(self.ref)
        lam, V = np.linalg.eigh(cov)
        A = V * np.sqrt(np.clip(lam, 0, None))
        return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(np.ascontiguousarray(A.T, np.float32))

    def draw(self, n: int, seed: int, stream: int) -> torch.Tensor:
        """[n, D] float32 null rows; a function of (self.seed, `seed`, `stream`) alone."""
        rng = np.random.default_rng([self.seed, seed, stream])
        M, D = self.shape
        if self.kind == "gaussian":
            mu, At = self._gaussian
            z = torch.from_numpy(rng.standard_normal((n, D), dtype=np.float32))
            return torch.addmm(mu, z, At)
        flat = rng.integers(0, M, size=(n, D), dtype=np.int64) * D + np.arange(D)
        return torch.from_numpy(np.take(np.asarray(self.ref).reshape(-1), flat).astype(np.float32, copy=False))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """[n, D] held-out null rows (a stream no training batch uses), float32."""
        return self.draw(n, seed, _HELDOUT_STREAM).numpy()

    def source(self, cfg) -> "NullSource":
        """The batch source of an SAE config (`sae.TrainConfig`) trained on this null."""
        return NullSource(self, cfg.n_tokens // cfg.batch_size, cfg.batch_size, cfg.data_seed)


class NullSource:
    """A training source (as `sae.train.MemmapSource`): batch `step` is `null.draw(batch_size, data_seed, step)`,
    each rank taking its contiguous slice."""

    def __init__(self, null: NullData, n_steps: int, batch_size: int, data_seed: int):
        self.null, self.n_steps, self.batch_size, self.data_seed = null, n_steps, batch_size, data_seed
        self.d_in = null.shape[1]

    def batch(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        if not 0 <= step < self.n_steps:
            raise IndexError(f"batch {step} of a {self.n_steps}-step {self.null.kind} null stream")
        x = self.null.draw(self.batch_size, self.data_seed, step)
        per = self.batch_size // world
        return x[rank * per:(rank + 1) * per]

    def init_batch(self, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The batch initialisation is drawn from: the whole first batch, on every rank."""
        return self.batch(0)
