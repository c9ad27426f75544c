"""Latent-to-latent matching of two SAEs (Paulo & Belrose 2025, §3).

Directions: decoder rows `W_dec[f]` and encoder directions `W_enc[:, f]` (columns in the SAELens
layout), each normalised to unit length per latent. Cosine matrices C_dec[i, j] = d̂ᵃ_i · d̂ᵇ_j and
C_enc likewise, shape [F_a, F_b]. A Hungarian matching maximises the summed cosine over a
bijection; a max-cosine matching gives each latent of A its most similar latent of B (not a
bijection).

Two solvers give the same matching (`method`; tests and `bench/matching.py` check they agree):
- `"sparse"`: `assignment.sparse_assignment`, exact without the dense matrix — top candidates per
  row and column, a sparse solve, LP dual prices and a certificate that no pair of the dense matrix
  could improve the matching (see that module); memory O(F·32) instead of F²;
- `"scipy"`: the dense [F_a, F_b] cosine matrix and `scipy.optimize.linear_sum_assignment`
  (the papers' method; also used for SAEs of different sizes).
`"auto"` (the default) takes the sparse solver from `SPARSE_MIN` = 8,192 latents on — the papers'
32K and 131K SAEs — and dense scipy below, where it is faster (the measured crossover lies between
4K and 8K latents; `bench/RESULTS.md`).

Shared-latent rule (`SharedRule`), applied to each latent i of SAE A:
- `threshold`: the Hungarian-matched decoder cosine and, unless `decoder_only`, the matched encoder
  cosine exceed `threshold` (`strict=True`: >, else ≥);
- `require_agreement`: both Hungarian matchings pick the same partner j (the paper's headline rule);
- `decoder_only`: use the decoder matching alone (the paper's architecture/model comparisons);
- `method="max"`: use max cosines instead of Hungarian matched cosines (Fig. A2).
The paper's headline rule is `SharedRule(0.7, require_agreement=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .assignment import sparse_assignment
from .metrics import shared_effects_spread


class MatchingError(ValueError):
    pass


def unit_rows(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)


def directions(sae) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit encoder directions [F, D], unit decoder directions [F, D]) of an SAE in SAELens layout."""
    return unit_rows(sae.W_enc.detach().t().float()), unit_rows(sae.W_dec.detach().float())


def cosine_matrix(A_FD: torch.Tensor, B_GD: torch.Tensor) -> np.ndarray:
    """[F, G] cosines between the rows of A and B (rows normalised here)."""
    if A_FD.shape[1] != B_GD.shape[1]:
        raise MatchingError(f"cannot match SAEs of different d_model: {A_FD.shape[1]} vs {B_GD.shape[1]}")
    return (unit_rows(A_FD) @ unit_rows(B_GD).t()).numpy()


METHODS = ("auto", "sparse", "scipy")
SPARSE_MIN = 8192  # method="auto" uses the sparse solver from this many latents (dense scipy is faster below)
PARALLEL_MIN = 16384  # from this many latents match_pair solves encoder and decoder in two processes


def assign(A_FD: torch.Tensor, B_GD: torch.Tensor, method: str = "auto", progress: bool = False):
    """Hungarian matching of the rows of A to the rows of B on cosines.

    Returns (partner [F_a] (-1 where unmatched), matched cosine [F_a] (NaN where unmatched),
    row max [F_a], column max [F_b]).
    """
    if method not in METHODS:
        raise MatchingError(f"method {method!r}; valid: {', '.join(METHODS)}")
    if A_FD.shape[1] != B_GD.shape[1]:
        raise MatchingError(f"cannot match SAEs of different d_model: {A_FD.shape[1]} vs {B_GD.shape[1]}")
    square = A_FD.shape[0] == B_GD.shape[0]
    if method == "sparse" and not square:
        raise MatchingError(f"method='sparse' matches sets of one size; got {A_FD.shape[0]} and {B_GD.shape[0]} "
                            f"latents (use method='scipy')")
    if method == "scipy" or not square or (method == "auto" and A_FD.shape[0] < SPARSE_MIN):
        C = cosine_matrix(A_FD, B_GD)
        partner = hungarian(C)
        rows = np.arange(C.shape[0])
        matched = np.where(partner >= 0, C[rows, np.maximum(partner, 0)], np.nan)
        return partner, matched, C.max(1), C.max(0)
    a = sparse_assignment(unit_rows(A_FD.float()), unit_rows(B_GD.float()), progress=progress)
    return a.partner, a.matched, a.row_max, a.col_max


def _assign_worker(A: np.ndarray, B: np.ndarray, method: str):
    torch.set_num_threads(1)
    return assign(torch.from_numpy(A), torch.from_numpy(B), method)


def hungarian(C: np.ndarray) -> np.ndarray:
    """partner[i] = column matched to row i by a maximum-weight bijection (-1 if unmatched, F_a > F_b)."""
    rows, cols = linear_sum_assignment(C, maximize=True)
    partner = np.full(C.shape[0], -1, dtype=np.int64)
    partner[rows] = cols
    return partner


@dataclass
class Match:
    """Per-latent matching of SAE A [F_a latents] against SAE B."""

    dec_partner: np.ndarray  # [F_a] Hungarian partner on decoder cosines
    enc_partner: np.ndarray  # [F_a] Hungarian partner on encoder cosines
    dec_cos: np.ndarray  # [F_a] decoder cosine to the decoder-matched partner
    enc_cos: np.ndarray  # [F_a] encoder cosine to the encoder-matched partner
    dec_max: np.ndarray  # [F_a] max decoder cosine over B
    enc_max: np.ndarray  # [F_a] max encoder cosine over B

    @property
    def agree(self) -> np.ndarray:
        """[F_a] both matchings chose the same partner."""
        return (self.dec_partner == self.enc_partner) & (self.dec_partner >= 0)


def match_pair(sae_a, sae_b, method: str = "auto", parallel: bool | None = None,
               progress: bool = False) -> tuple[Match, Match]:
    """Matchings A→B and B→A from one Hungarian solve per direction type (the bijection is symmetric).

    `parallel` (default: from `PARALLEL_MIN` latents on) solves the encoder matching in a second
    process while this one solves the decoder: the sparse solve is single-threaded, so the two
    overlap on two cores. `progress` shows the sparse solver's cosine blocks and rounds (of the
    decoder matching when parallel).
    """
    enc_a, dec_a = directions(sae_a)
    enc_b, dec_b = directions(sae_b)
    if dec_a.shape[1] != dec_b.shape[1]:
        raise MatchingError(f"cannot match SAEs of different d_model: {dec_a.shape[1]} vs {dec_b.shape[1]}")
    if parallel is None:
        parallel = method != "scipy" and dec_a.shape[0] == dec_b.shape[0] >= max(PARALLEL_MIN, SPARSE_MIN)
    if parallel:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        threads = torch.get_num_threads()
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
            fut = ex.submit(_assign_worker, enc_a.numpy(), enc_b.numpy(), method)
            torch.set_num_threads(1)
            try:
                results = {"dec": assign(dec_a, dec_b, method, progress), "enc": fut.result()}
            finally:
                torch.set_num_threads(threads)
    else:
        results = {"dec": assign(dec_a, dec_b, method, progress), "enc": assign(enc_a, enc_b, method, progress)}
    ab, ba = {}, {}
    for name, (partner, matched, row_max, col_max) in results.items():
        rows = np.arange(partner.size)
        back = np.full(col_max.size, -1, dtype=np.int64)
        back_cos = np.full(col_max.size, np.nan)
        has = partner >= 0
        back[partner[has]] = rows[has]
        back_cos[partner[has]] = matched[has]
        ab.update({f"{name}_partner": partner, f"{name}_cos": matched, f"{name}_max": row_max})
        ba.update({f"{name}_partner": back, f"{name}_cos": back_cos, f"{name}_max": col_max})
    return Match(**ab), Match(**ba)


def match(sae_a, sae_b, method: str = "auto") -> Match:
    """Hungarian and max-cosine matchings of `sae_a`'s latents to `sae_b`'s, on encoder and decoder."""
    return match_pair(sae_a, sae_b, method)[0]


@dataclass(frozen=True)
class SharedRule:
    threshold: float = 0.7
    strict: bool = True
    require_agreement: bool = True
    decoder_only: bool = False
    method: str = "hungarian"  # or "max"

    def __post_init__(self):
        if self.method not in ("hungarian", "max"):
            raise MatchingError(f"method {self.method!r}; valid: 'hungarian', 'max'")
        if self.method == "max" and self.require_agreement:
            raise MatchingError("require_agreement needs Hungarian partners; use method='hungarian'")

    def describe(self) -> str:
        op = ">" if self.strict else "≥"
        parts = [f"{'max' if self.method == 'max' else 'matched'} dec cos {op} {self.threshold}"]
        if not self.decoder_only:
            parts.append(f"enc cos {op} {self.threshold}")
        if self.require_agreement:
            parts.append("same partner")
        return " & ".join(parts)


def shared(m: Match, rule: SharedRule = SharedRule()) -> np.ndarray:
    """[F_a] bool: which latents of A count as shared with B under `rule`."""
    dec, enc = (m.dec_max, m.enc_max) if rule.method == "max" else (m.dec_cos, m.enc_cos)
    above = np.greater if rule.strict else np.greater_equal
    ok = above(np.nan_to_num(dec, nan=-1.0), rule.threshold)
    if not rule.decoder_only:
        ok &= above(np.nan_to_num(enc, nan=-1.0), rule.threshold)
    if rule.require_agreement:
        ok &= m.agree
    return ok


PAPER_RULE = SharedRule(0.7, strict=True, require_agreement=True)


def standard_rules(threshold: float = 0.7) -> dict[str, SharedRule]:
    """The rules every seed-dependence figure reports, keyed by a short name."""
    return {
        "paper": SharedRule(threshold, require_agreement=True),
        "dec_and_enc": SharedRule(threshold, require_agreement=False),
        "decoder_only": SharedRule(threshold, require_agreement=False, decoder_only=True),
        "max_cosine": SharedRule(threshold, require_agreement=False, method="max"),
    }


def summarize(m: Match, threshold: float = 0.7) -> dict[str, float]:
    """Fractions of latents shared under each standard rule, agreement, and mean cosines.

    `mean_alignment_agree` / `_disagree`: mean over latents whose two Hungarian matchings pick the
    same / different partners of (matched decoder cosine + matched encoder cosine) / 2.
    """
    out = {f"shared_frac_{name}": float(shared(m, rule).mean()) for name, rule in standard_rules(threshold).items()}
    align = (m.dec_cos + m.enc_cos) / 2
    agree = m.agree
    out.update(
        mean_alignment_agree=float(np.nanmean(align[agree])) if agree.any() else float("nan"),
        mean_alignment_disagree=float(np.nanmean(align[~agree])) if (~agree).any() else float("nan"),
        agree_frac=float(m.agree.mean()),
        mean_matched_dec_cos=float(np.nanmean(m.dec_cos)),
        mean_matched_enc_cos=float(np.nanmean(m.enc_cos)),
        mean_max_dec_cos=float(m.dec_max.mean()),
        mean_max_enc_cos=float(m.enc_max.mean()),
        n_latents=int(m.dec_cos.size),
    )
    return out


# ---------------------------------------------------------------- several seeds

def pair_matchings(n: int, solve, progress: bool = False) -> dict[tuple[int, int], Match]:
    """{(i, j): Match of i→j} for every ordered pair of n SAEs; `solve(i, j)` returns (i→j, j→i) for i < j."""
    from tqdm.std import tqdm

    out: dict[tuple[int, int], Match] = {}
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    for i, j in tqdm(pairs, desc="Hungarian matchings", disable=not progress):
        out[i, j], out[j, i] = solve(i, j)
    return out


def pairwise_shared(saes: list, rule: SharedRule = PAPER_RULE, progress: bool = False) -> np.ndarray:
    """[n, n, F] bool: masks[i, j, f] — latent f of SAE i is shared with SAE j (masks[i, i] all True)."""
    F = saes[0].W_dec.shape[0]
    if any(s.W_dec.shape[0] != F for s in saes):
        raise MatchingError(f"multi-seed analysis needs SAEs of one size; got {[s.W_dec.shape[0] for s in saes]}")
    pairs = pair_matchings(len(saes), lambda i, j: match_pair(saes[i], saes[j]), progress)
    return masks_from_pairs(pairs, len(saes), rule)


def found_in(masks: np.ndarray, base: int, members: list[int] | None = None) -> np.ndarray:
    """[F] int: in how many SAEs of `members` (the base included) each base latent is found (1 = only base)."""
    members = list(range(masks.shape[0])) if members is None else list(members)
    if base not in members:
        raise MatchingError(f"base {base} is not among members {members}")
    others = [j for j in members if j != base]
    return 1 + masks[base, others].sum(0) if others else np.ones(masks.shape[2], dtype=int)


def exactly_m_of_n(masks: np.ndarray, base: int) -> np.ndarray:
    """[n] fractions: entry m-1 is the share of the base's latents found in exactly m of the n SAEs."""
    n = masks.shape[0]
    return np.bincount(found_in(masks, base), minlength=n + 1)[1:] / masks.shape[2]


def only_in_base_curve(masks: np.ndarray, max_draws: int = 2000, seed: int = 0) -> dict[int, dict]:
    """For N = 2…n: the fraction of a base SAE's latents found in no other SAE of an N-subset.

    Every (subset, base) pair is enumerated when there are at most `max_draws` of them for that N
    (as the paper does for 9 seeds: C(9,N)·N); otherwise `max_draws` random subsets with random
    bases are drawn. Returns {N: {"mean", "sd", "n_draws", "values", "bases"}}.
    """
    import itertools
    import math

    n = masks.shape[0]
    rng = np.random.default_rng(seed)
    out = {}
    for N in range(2, n + 1):
        if math.comb(n, N) * N <= max_draws:
            draws = [(sub, b) for sub in itertools.combinations(range(n), N) for b in sub]
        else:
            draws = []
            for _ in range(max_draws):
                sub = tuple(sorted(rng.choice(n, N, replace=False)))
                draws.append((sub, sub[rng.integers(N)]))
        vals = np.array([(found_in(masks, b, sub) == 1).mean() for sub, b in draws])
        out[N] = {"mean": float(vals.mean()), "sd": float(vals.std()), "n_draws": len(draws), "values": vals,
                  "bases": np.array([b for _, b in draws])}
    return out


def masks_from_pairs(pairs: dict[tuple[int, int], Match], n: int, rule: SharedRule = PAPER_RULE) -> np.ndarray:
    """[n, n, F] shared masks (as `pairwise_shared`) from already computed ordered-pair matchings."""
    F = next(iter(pairs.values())).dec_cos.size
    masks = np.ones((n, n, F), dtype=bool)
    for (i, j), m in pairs.items():
        masks[i, j] = shared(m, rule)
    return masks


def pair_shared_spread(masks: np.ndarray) -> dict:
    """The shared fraction of every unordered pair i < j of the n SAEs of `masks` (`masks_from_pairs`; the share
    of i's latents shared with j) and the noise floor of one seed pair's shared fraction over training seeds:
    {"mean", "sd", "spread_sd", "sd_factor", "values", "pairs" ("i-j", in the order of "values")}. The pairs
    share seeds, so their own spread ("spread_sd") understates one pair's variation; "sd" is the bound of
    `metrics.shared_effects_spread` (spread_sd × √1.5 at 5 seeds, × √2 at 3). Needs n >= 3 (two pairs)."""
    n = masks.shape[0]
    if masks.ndim != 3 or masks.shape[1] != n or n < 3:
        raise MatchingError(f"a seed-pair spread needs [n, n, F] masks of n >= 3 SAEs; got shape {masks.shape}")
    ij = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return {**shared_effects_spread([masks[i, j].mean() for i, j in ij], ij), "pairs": [f"{i}-{j}" for i, j in ij]}
