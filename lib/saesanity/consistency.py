"""Seed consistency beyond the shared fraction: PW-MCC, per-latent reappearance, unstable subspaces, and
their chance levels (issue 18).

Definitions (one place each; `W` is a decoder [F, D] in the SAELens layout, rows normalised here):

- **PW-MCC, signed** of A against B: the mean over A's latents of cos(d^A_i, d^B_π(i)), where π is the
  Hungarian matching that maximises Σ_i cos(d^A_i, d^B_π(i)) — our decoder matching (`matching.assign`,
  exact at every size), so `pw_mcc_of(match)` is `Match.dec_cos`'s mean and no second matcher exists.
- **PW-MCC, absolute**: the mean of |cos(d^A_i, d^B_σ(i))| with σ maximising Σ_i |cos| — the form of
  Song, Muhamed et al. (2025)'s code and of SAELens' `sae_lens.synthetic.evals.mean_correlation_coefficient`
  (the test checks it against that). Solved by `matching.hungarian` on |C| (dense: up to `ABS_DENSE_MAX`
  latents). Signed ≤ absolute always: Σ cos(π) ≤ Σ |cos|(π) ≤ Σ |cos|(σ).
- **mean max |cos|**: the mean over A's latents of max_j |cos(d^A_i, d^B_j)| — not a matching; some
  repositories call this PW-MCC. It is reported beside the two so the numbers can be told apart.
  With unequal sizes, the Hungarian forms average over the min(F_A, F_B) matched latents.
- **Reappearance** of latent f of seed s among n seeds: the fraction of the other n − 1 seeds in which it
  is shared (`matching.shared` under a rule, the paper's by default): `masks[s, others, f].mean()`.
- **Reconstruction share** of latent f: E_x[z_f(x)²] ‖d_f‖² / Σ_g E_x[z_g(x)²] ‖d_g‖² over evaluation
  activations — the latent's part of the reconstruction's energy (cross terms between latents left out,
  so the shares sum to 1).
- **Unstable subspace angles**: the principal angles (degrees, `scipy.linalg.subspace_angles`) between
  span{d^A_f : f unstable in A} and span{d^B_g : g unstable in B}. Two random subspaces of dimensions
  p, q in R^D share a (p + q − D)-dimensional intersection when p + q > D, so the null (`random_subspace_angles`)
  is reported beside them.
- **Chance level** of each statistic: the same statistic on two dictionaries whose rows are independent
  isotropic Gaussian directions, of the same shape (`random_dictionary`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import subspace_angles

from .matching import Match, MatchingError, assign, cosine_matrix, hungarian, unit_rows

ABS_DENSE_MAX = 16384  # the absolute form's dense |C| (F² float32: 1 GiB at 16K latents)


def random_dictionary(F: int, D: int, seed: int) -> torch.Tensor:
    """[F, D] unit rows drawn uniformly on the sphere (normalised Gaussians) under `seed`."""
    g = torch.Generator().manual_seed(seed)
    return unit_rows(torch.randn(F, D, generator=g))


def pw_mcc(A_FD: torch.Tensor, B_GD: torch.Tensor, method: str = "auto", absolute: bool = True) -> dict[str, float]:
    """{"signed", "absolute", "mean_max_abs"} of decoder directions A [F, D] against B [G, D] (module docstring);
    `absolute=False`: the signed form alone (any size)."""
    A, B = unit_rows(A_FD.detach().float()), unit_rows(B_GD.detach().float())
    if absolute and max(A.shape[0], B.shape[0]) > ABS_DENSE_MAX:
        raise MatchingError(f"the absolute PW-MCC solves a dense |cos| matrix: {A.shape[0]} x {B.shape[0]} is above "
                            f"{ABS_DENSE_MAX} latents (absolute=False gives the signed form at any size)")
    _, matched, _, _ = assign(A, B, method)
    out = {"signed": float(np.nanmean(matched))}
    if not absolute:
        return out
    C = np.abs(cosine_matrix(A, B))
    partner = hungarian(C)
    has = partner >= 0
    out["absolute"] = float(C[np.flatnonzero(has), partner[has]].mean())
    out["mean_max_abs"] = float(C.max(1).mean())
    return out


def pw_mcc_of(m: Match) -> float:
    """Signed PW-MCC from an already computed matching (the mean Hungarian-matched decoder cosine)."""
    return float(np.nanmean(m.dec_cos))


def chance_pw_mcc(F: int, D: int, *, n_pairs: int = 3, seed: int = 0, G: int | None = None) -> dict[str, dict]:
    """PW-MCC of `n_pairs` pairs of random dictionaries of shapes [F, D] and [G (= F), D]: {form: {mean, sd, values}}."""
    vals = [pw_mcc(random_dictionary(F, D, seed + 2 * i), random_dictionary(G or F, D, seed + 2 * i + 1))
            for i in range(n_pairs)]
    return {k: {"mean": float(np.mean([v[k] for v in vals])), "sd": float(np.std([v[k] for v in vals])),
                "values": [v[k] for v in vals]} for k in vals[0]}


def reappearance(masks: np.ndarray) -> np.ndarray:
    """[n, F]: entry (s, f) is the fraction of the other seeds in which latent f of seed s is shared.

    `masks` is `matching.masks_from_pairs`' [n, n, F] (masks[s, t, f]: f of s shared with t)."""
    n = masks.shape[0]
    if masks.ndim != 3 or masks.shape[1] != n:
        raise MatchingError(f"masks must be [n, n, F]; got shape {masks.shape}")
    if n < 3:
        raise MatchingError(f"per-latent reappearance needs at least 3 seeds (a probability over >= 2 others); got {n}")
    off = ~np.eye(n, dtype=bool)
    return np.stack([masks[s, off[s]].mean(0) for s in range(n)])


@torch.no_grad()
def reconstruction_share(sae, acts: np.ndarray, batch: int = 8192) -> np.ndarray:
    """[F] each latent's share of the reconstruction energy (module docstring) over `acts` [N, D]."""
    sq = torch.zeros(sae.W_dec.shape[0], dtype=torch.float64)
    for i in range(0, acts.shape[0], batch):
        x = sae.transform_input(torch.as_tensor(np.asarray(acts[i:i + batch]), dtype=torch.float32))
        sq += sae.encode(x).double().pow(2).sum(0)
    energy = sq * sae.W_dec.detach().double().pow(2).sum(1)
    total = energy.sum()
    if total <= 0:
        raise ValueError("no latent fired on these activations: the reconstruction shares are undefined")
    return (energy / total).numpy()


def unstable_subspace_angles(W_a: torch.Tensor, W_b: torch.Tensor, unstable_a: np.ndarray,
                             unstable_b: np.ndarray) -> np.ndarray:
    """Principal angles (degrees, ascending) between the spans of A's and B's unstable decoder rows."""
    a, b = np.asarray(unstable_a, bool), np.asarray(unstable_b, bool)
    if not a.any() or not b.any():
        raise MatchingError(f"no unstable latents to span a subspace ({a.sum()} in A, {b.sum()} in B)")
    A = W_a.detach().double()[torch.from_numpy(a)].numpy().T
    B = W_b.detach().double()[torch.from_numpy(b)].numpy().T
    return np.sort(np.degrees(subspace_angles(A, B)))


def random_subspace_angles(D: int, p: int, q: int, seed: int = 0) -> np.ndarray:
    """The null of `unstable_subspace_angles`: angles between random p- and q-dimensional subspaces of R^D."""
    g = np.random.default_rng(seed)
    return np.sort(np.degrees(subspace_angles(g.standard_normal((D, p)), g.standard_normal((D, q)))))


def step0_alignment(sae_a, sae_b) -> dict[str, float]:
    """Signed PW-MCC of two SAEs before training and its chance level: runs that start aligned (a shared or
    deterministic initialisation) make a high trained PW-MCC meaningless, so `aligned_at_start` flags a
    start more than 0.1 above chance."""
    W_a, W_b = sae_a.W_dec.detach(), sae_b.W_dec.detach()
    start = pw_mcc(W_a, W_b)["signed"]
    chance = chance_pw_mcc(W_a.shape[0], W_a.shape[1], n_pairs=1, G=W_b.shape[0])["signed"]["mean"]
    return {"step0_pw_mcc": start, "chance_pw_mcc": chance, "aligned_at_start": bool(start > chance + 0.1)}
