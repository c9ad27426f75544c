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
  the subspaces the unstable decoder rows of A and of B span — with `rank=r`, each side's r-dimensional
  principal subspace (top r left singular vectors of its unstable rows as columns [D, p]). An overcomplete
  SAE's unstable latents usually outnumber d_model and span all of R^D (every angle 0), hence the rank.
  Two random subspaces of dimensions p, q in R^D share a (p + q − D)-dimensional intersection when
  p + q > D, so the null (`random_subspace_angles`) is reported beside them.
- **Level sharing** (`band_sharing`): the shared fraction of seed 0's latents in each band [m_{g-1}, m_g) of the
  nested widths m_1 < … < m_G = F of a Matryoshka SAE, by latent index (its own order: the first m_1 form the
  smallest dictionary), and — for every architecture, as the control — over latents ranked by held-out firing
  frequency (most frequent first) into bands of the same sizes, since a Matryoshka SAE's inner latents are also
  its most frequent.
- **Chance level** of each statistic: the same statistic on two dictionaries whose rows are independent
  isotropic Gaussian directions, of the same shape (`random_dictionary`).
- **Data nulls** (`runs.data_null_stats`, `null_claims`): the shared fraction and PW-MCC of a seed pair trained,
  with the same recipe and tokens, on data that keeps some statistics of the activations and nothing else
  (`nulls`: Gaussian with their mean and covariance; each dimension shuffled across rows) — the level that
  training on structureless data of that kind reaches, against which the real pair's number is read.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import subspace_angles

from .matching import Match, MatchingError, assign, cosine_matrix, hungarian, unit_rows

ABS_DENSE_MAX = 32768  # the absolute form's dense |C|: scipy at 32K latents takes ~4 min and ~21 GiB (bench/matching.py)


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


def principal_subspace(W: torch.Tensor, rows: np.ndarray, rank: int | None = None) -> np.ndarray:
    """[D, r] orthonormal basis of the span of W's selected rows (`rank`: its top-r singular directions)."""
    sel = np.asarray(rows, bool)
    X = W.detach().double()[torch.from_numpy(sel)].numpy().T  # [D, p]
    if rank is None:
        return X
    if not 0 < rank <= min(X.shape):
        raise MatchingError(f"rank={rank}: must lie in 1..{min(X.shape)} (d_model {X.shape[0]}, {X.shape[1]} rows)")
    return np.linalg.svd(X, full_matrices=False)[0][:, :rank]


def unstable_subspace_angles(W_a: torch.Tensor, W_b: torch.Tensor, unstable_a: np.ndarray,
                             unstable_b: np.ndarray, rank: int | None = None) -> np.ndarray:
    """Principal angles (degrees, ascending) between the spans of A's and B's unstable decoder rows
    (`rank`: their r-dimensional principal subspaces; module docstring)."""
    a, b = np.asarray(unstable_a, bool), np.asarray(unstable_b, bool)
    if not a.any() or not b.any():
        raise MatchingError(f"no unstable latents to span a subspace ({a.sum()} in A, {b.sum()} in B)")
    return np.sort(np.degrees(subspace_angles(principal_subspace(W_a, a, rank), principal_subspace(W_b, b, rank))))


def random_subspace_angles(D: int, p: int, q: int, seed: int = 0) -> np.ndarray:
    """The null of `unstable_subspace_angles`: angles between random p- and q-dimensional subspaces of R^D."""
    g = np.random.default_rng(seed)
    return np.sort(np.degrees(subspace_angles(g.standard_normal((D, p)), g.standard_normal((D, q)))))


def step0_alignment(sae_a, sae_b, *, start: float | None = None, chance: float | None = None) -> dict[str, float]:
    """Signed PW-MCC of two SAEs before training and its chance level: runs that start aligned (a shared or
    deterministic initialisation) make a high trained PW-MCC meaningless, so `aligned_at_start` flags a
    start more than 0.1 above chance. `start` / `chance`: those two values where the caller has them already
    (`seed_suite`), else computed here (chance from one random pair of the same shape)."""
    W_a, W_b = sae_a.W_dec.detach(), sae_b.W_dec.detach()
    if start is None:
        start = pw_mcc(W_a, W_b, absolute=False)["signed"]
    if chance is None:
        chance = chance_pw_mcc(W_a.shape[0], W_a.shape[1], n_pairs=1, G=W_b.shape[0])["signed"]["mean"]
    return {"step0_pw_mcc": start, "chance_pw_mcc": chance, "aligned_at_start": bool(start > chance + 0.1)}


# ---------------------------------------------------------------- the notebook's numbers and claims

def seed_suite(P, saes: list, pairs: dict, masks: np.ndarray, held: np.ndarray, at_lengths: dict[int, list],
               freq: np.ndarray, *, progress: bool = True) -> tuple[dict, dict]:
    """(numbers for the JSON, arrays for the figure) of `consistency_seeds`: every statistic of the module
    docstring on `saes` (P.seeds, their `pairs` matchings and shared `masks`), each with its chance level.
    `freq` is the base SAE's held-out firing frequency; `at_lengths` is `runs.pair_at_lengths(P)`."""
    from scipy.stats import spearmanr
    from tqdm.std import tqdm

    n = len(saes)
    W = [s.W_dec.detach().float() for s in saes]
    F, D = W[0].shape
    signed = {f"{i}-{j}": pw_mcc_of(pairs[i, j]) for i in range(n) for j in range(i + 1, n)}
    full = {}
    for j in tqdm(range(1, P.absolute_pairs + 1), desc="absolute PW-MCC", disable=not progress):
        full[f"0-{j}"] = pw_mcc(W[0], W[j])
    chance = chance_pw_mcc(F, D, n_pairs=P.n_chance_pairs, seed=10_000)
    re = reappearance(masks)
    share = reconstruction_share(saes[0], held)
    logf = np.log10(np.maximum(freq, 1e-6))
    rank = max(1, round(P.subspace_dim_frac * D))
    unstable = [re[s] == 0 for s in (0, 1)]
    stable = [re[s] == 1 for s in (0, 1)]
    angles = {"unstable": unstable_subspace_angles(W[0], W[1], *unstable, rank=rank)
              if min(u.sum() for u in unstable) >= rank else None,
              "stable": unstable_subspace_angles(W[0], W[1], *stable, rank=rank)
              if min(u.sum() for u in stable) >= rank else None,
              "random": random_subspace_angles(D, rank, rank)}
    steps = {m: pw_mcc(a.W_dec, b.W_dec, absolute=False)["signed"] for m, (a, b) in at_lengths.items()}
    start = step0_alignment(*at_lengths[0], start=steps[0], chance=chance["signed"]["mean"])  # same shapes
    mean = lambda a: None if a is None else float(np.mean(a))  # noqa: E731
    numbers = {
        "n_seeds": n, "n_latents": int(F), "d_model": int(D),
        "pw_mcc_signed": {"pairs": signed, "mean": float(np.mean(list(signed.values())))},
        "pw_mcc_base_pairs": full,
        "pw_mcc_chance": {k: {"mean": v["mean"], "sd": v["sd"]} for k, v in chance.items()},
        "reappearance": {"mean": float(re.mean()), "never_frac": float((re == 0).mean()),
                         "always_frac": float((re == 1).mean()),
                         "spearman_vs_log_freq": float(spearmanr(re[0], logf).statistic),
                         "spearman_vs_reconstruction_share": float(spearmanr(re[0], share).statistic),
                         "share_of_reconstruction_by_never": float(share[re[0] == 0].sum()),
                         "share_of_reconstruction_by_always": float(share[re[0] == 1].sum())},
        "subspaces": {"rank": rank, "n_unstable": [int(u.sum()) for u in unstable],
                      "n_stable": [int(u.sum()) for u in stable],
                      **{f"mean_angle_{k}": mean(v) for k, v in angles.items()}},
        "stabilisation": {"pw_mcc_by_tokens": {str(m): v for m, v in steps.items()}, **start},
    }
    return numbers, {"reappearance": re, "share": share, "logf": logf, "angles": angles, "steps": steps,
                     "chance": chance}


def claims(numbers: dict) -> list[dict]:
    """The consistency suite's claims and verdicts (None where a statistic could not be formed)."""
    ch, sg = numbers["pw_mcc_chance"]["signed"], numbers["pw_mcc_signed"]
    least = min(sg["pairs"].values())
    r, sub, st = numbers["reappearance"], numbers["subspaces"], numbers["stabilisation"]
    gap = None if sub["mean_angle_unstable"] is None else sub["mean_angle_random"] - sub["mean_angle_unstable"]
    return [
        {"claim": "Every seed pair's signed PW-MCC is above two random dictionaries' by more than 5 chance sd",
         "ours": {"least pair": least, "chance mean": ch["mean"], "chance sd": ch["sd"]},
         "verdict": bool(least > ch["mean"] + 5 * max(ch["sd"], 1e-6))},
        {"claim": "Latents that fire more often reappear in more seeds (Spearman > 0; Gerasimov et al. 2026)",
         "ours": {"Spearman(reappearance, log freq)": r["spearman_vs_log_freq"]},
         "verdict": bool(r["spearman_vs_log_freq"] > 0)},
        {"claim": "Latents carrying more of the reconstruction reappear in more seeds (Spearman > 0)",
         "ours": {"Spearman(reappearance, share)": r["spearman_vs_reconstruction_share"]},
         "verdict": bool(r["spearman_vs_reconstruction_share"] > 0)},
        {"claim": "The unstable latents of two seeds span closer subspaces than random ones (mean principal "
                  "angle at least 10° below random)",
         "ours": {"unstable": sub["mean_angle_unstable"], "random": sub["mean_angle_random"],
                  "stable": sub["mean_angle_stable"], "rank": sub["rank"]},
         "verdict": None if gap is None else bool(gap >= 10)},
        {"claim": "The seeds start unaligned (step-0 PW-MCC within 0.1 of chance), so their agreement is learned",
         "ours": {"step 0": st["step0_pw_mcc"], "chance": st["chance_pw_mcc"]},
         "verdict": not st["aligned_at_start"]},
    ]


def level_bands(widths: list[int], F: int) -> list[tuple[int, int]]:
    """[(0, m_1), (m_1, m_2), …, (m_{G-1}, F)] of the inner widths m_1 < … < F."""
    edges = [0, *[int(w) for w in widths if 0 < w < F], F]
    if edges != sorted(set(edges)):
        raise ValueError(f"widths={list(widths)}: need strictly increasing inner widths in 1..{F - 1}")
    return list(zip(edges[:-1], edges[1:]))


def band_sharing(shared_F: np.ndarray, order: np.ndarray, bands: list[tuple[int, int]]) -> list[float]:
    """Shared fraction of the latents order[a:b] for each band (a, b): `order` lists latent indices in the order the
    bands cut (np.arange(F) for a Matryoshka SAE's own, frequency rank for the control)."""
    shared_F, order = np.asarray(shared_F, dtype=bool), np.asarray(order)
    if order.shape != shared_F.shape or bands[-1][1] != shared_F.size:
        raise ValueError(f"order {order.shape} and bands ending at {bands[-1][1]} must cover the {shared_F.size} latents")
    return [float(shared_F[order[a:b]].mean()) for a, b in bands]


def frequency_order(freq_F: np.ndarray) -> np.ndarray:
    """Latent indices by held-out firing frequency, most frequent first (ties by index)."""
    return np.argsort(-np.asarray(freq_F, dtype=float), kind="stable")


def architecture_suite(P, pairs: dict[str, tuple[Match, list[dict], np.ndarray]]) -> dict:
    """Numbers of `consistency_matryoshka`: for each architecture's seed pair (its `Match`, both SAEs' held-out
    metrics, seed 0's held-out firing frequencies) the shared fraction under P's rule, the signed PW-MCC, the
    sharing by frequency band and, for matryoshka, by its nested levels; with the random-dictionary chance level."""
    from .matching import SharedRule, shared

    rows, bands = {}, None
    for arch, (m, metrics, freq) in pairs.items():
        sh = shared(m, SharedRule(P.threshold))
        bands = level_bands(P.matryoshka_widths, sh.size)  # every pair has P.d_sae latents
        rows[arch] = {"shared_frac": float(sh.mean()), "pw_mcc_signed": pw_mcc_of(m),
                      "heldout_fvu": [e["fvu"] for e in metrics], "heldout_l0": [e["l0"] for e in metrics],
                      **({"heldout_fvu_shard_sd": [e["fvu_shard_sd"] for e in metrics]}
                         if all("fvu_shard_sd" in e for e in metrics) else {}),
                      "frequency_bands": band_sharing(sh, frequency_order(freq), bands)}
        if arch == "matryoshka":
            rows[arch]["level_bands"] = band_sharing(sh, np.arange(sh.size), bands)
    return {"architectures": rows, "bands": [list(b) for b in bands]}


def architecture_claims(numbers: dict) -> list[dict]:
    """Checks of `consistency_matryoshka` (questions after the papers, not claims of theirs), each computed. With
    `topk_seed_pairs` (TopK's shared fraction over every pair of ≥ 3 seeds, `runs.seed_pair_floor`) the shared
    fractions must also differ beyond that noise floor (2 combined sd, TopK's sd taken for both pairs)."""
    from .metrics import beyond_noise

    rows, ch = numbers["architectures"], numbers["pw_mcc_chance"]
    floor = numbers.get("topk_seed_pairs")
    out = [{"claim": "Every architecture's seed pair has a signed PW-MCC above two random dictionaries' by more than "
                     "5 chance sd (check)",
            "ours": {a: r["pw_mcc_signed"] for a, r in rows.items()} | {"chance mean": ch["mean"], "chance sd": ch["sd"]},
            "verdict": bool(min(r["pw_mcc_signed"] for r in rows.values()) > ch["mean"] + 5 * max(ch["sd"], 1e-6))}]
    if "matryoshka" in rows and "topk" in rows:
        mt, tk = rows["matryoshka"], rows["topk"]
        more = {"matryoshka": mt["shared_frac"], "topk": tk["shared_frac"]}
        more_ok = mt["shared_frac"] > tk["shared_frac"]
        if floor:
            beyond = beyond_noise(mt["shared_frac"], tk["shared_frac"], floor["sd"], floor["sd"])
            more.update({"topk seed-pair sd": floor["sd"], "beyond noise": beyond})
            more_ok = more_ok and beyond
        out += [
            {"claim": "A Matryoshka SAE's seed pair shares more latents than TopK's at the same size, k and training "
                      "tokens" + (", beyond the seed pairs' noise floor" if floor else "")
                      + " (check: is a nested dictionary more stable across seeds?)",
             "ours": more, "verdict": bool(more_ok)},
            {"claim": "... and has the higher signed PW-MCC (check)",
             "ours": {"matryoshka": mt["pw_mcc_signed"], "topk": tk["pw_mcc_signed"]},
             "verdict": bool(mt["pw_mcc_signed"] > tk["pw_mcc_signed"])},
            {"claim": "A Matryoshka SAE's innermost level is shared more than its outermost band (check)",
             "ours": {"innermost": mt["level_bands"][0], "outermost": mt["level_bands"][-1]},
             "verdict": bool(mt["level_bands"][0] > mt["level_bands"][-1])},
            {"claim": "... and more than TopK's most frequent latents of the same count, so the nesting and not "
                      "frequency alone makes it stable (check)",
             "ours": {"matryoshka innermost": mt["level_bands"][0], "topk most frequent": tk["frequency_bands"][0]},
             "verdict": bool(mt["level_bands"][0] > tk["frequency_bands"][0])},
        ]
    return out


def null_claims(nulls: dict[str, dict], chance_signed: float) -> list[dict]:
    """Claims of the data nulls (`runs.data_null_stats`' {"real", kind: stats}): for each kind, the real pair
    shares more latents and has a higher signed PW-MCC than the pair trained on that null; and whether the null
    pair itself lies above two random dictionaries (training on structureless data of the kind already aligns
    two seeds)."""
    from .nulls import LABEL

    real, out = nulls["real"], []
    for kind, st in nulls.items():
        if kind == "real":
            continue
        out.append({"claim": f"At {st['n_tokens']:,} tokens the real seed pair shares more latents and has a higher "
                             f"signed PW-MCC than a pair trained on {LABEL[kind]} data",
                    "ours": {"shared real": real["shared_frac"], f"shared {kind}": st["shared_frac"],
                             "PW-MCC real": real["pw_mcc_signed"], f"PW-MCC {kind}": st["pw_mcc_signed"]},
                    "verdict": bool(real["shared_frac"] > st["shared_frac"]
                                    and real["pw_mcc_signed"] > st["pw_mcc_signed"])})
        out.append({"claim": f"Two seeds trained on {LABEL[kind]} data already agree beyond two random dictionaries "
                             f"(signed PW-MCC above chance by more than 0.05)",
                    "ours": {f"PW-MCC {kind}": st["pw_mcc_signed"], "chance": chance_signed},
                    "verdict": bool(st["pw_mcc_signed"] > chance_signed + 0.05)})
    return out
