"""Paulo & Belrose (2025), "Sparse autoencoders trained on the same data learn different features":
the paper's reference numbers and setup, and the rules that turn our numbers into verdicts on its claims.

Each `claims_<fig>(numbers)` takes the dict a notebook writes to `figures/<stem>.json` (the whole JSON works too)
and returns a list of claims `{"claim", "ours", "paper", "verdict"}` (see `saesanity.papers`); a verdict is True
(reproduced) or False (not reproduced). A rule whose numbers are undefined (None, or NaN before the JSON) is not
reproduced, except where a comparison cannot be made at all (the verdict is then None, inconclusive).
"""

from __future__ import annotations

import math
from typing import Any

from . import defined

# --- setup (Section 3 and the Fig. 1 caption) ------------------------------------------------------------------
SETUP = "Pythia-160M layer-6 MLP, 32,768 latents, k=32, 8B Pile tokens"
THRESHOLD = 0.7  # the cosine threshold of the paper's shared rule (Section 3)

# --- Fig. 1 (Pythia-160M layer-6 MLP, 32K latents, k=32, 8B tokens); alignments from the Fig. A2 caption ----------
FIG1 = {
    "shared_frac_paper": 0.416,  # both matchings agree and both cosines > 0.7 (Fig. 1; also Fig. 5 at 32K, k=32, 8B)
    "agree_frac": 0.793,  # encoder and decoder Hungarian matchings pick the same partner (Fig. 1)
    "mean_matched_dec_cos": 0.677,  # mean Hungarian-matched decoder cosine (Fig. 1)
    "mean_matched_enc_cos": 0.594,  # mean Hungarian-matched encoder cosine (Fig. 1)
    "mean_alignment_agree": 0.72,  # Fig. A2 caption: average alignment where the matchings agree
    "mean_alignment_disagree": 0.33,  # Fig. A2 caption: ... and where they disagree
}
SHARED_FRAC = FIG1["shared_frac_paper"]

# --- Fig. 5 (Pythia-160M; one axis moved at a time from Fig. 1's configuration): shared fraction, paper's rule --
FIG5 = {
    "d_sae": {32: 0.81, 768: 0.785, 4096: 0.696, 32768: 0.416, 131072: 0.276},  # left panel: number of latents
    "k": {32: 0.416, 64: 0.305, 128: 0.234, 256: 0.177},  # middle panel: active latents k
    "n_tokens": {800_000_000: 0.073, 8_000_000_000: 0.416, 80_000_000_000: 0.612},  # right panel: training tokens
}
FIG5_TREND = {"d_sae": -1, "k": -1, "n_tokens": 1}  # Section 4.2: more latents / larger k → fewer shared; more tokens → more
SHARED_FRAC_AT_4K_LATENTS = FIG5["d_sae"][4096]  # Fig. 5, the size nearest our default SAEs
SHARED_FRAC_AT_0P8B_TOKENS = FIG5["n_tokens"][800_000_000]  # Fig. 5, the paper's shortest training run

# --- Fig. 2 and Fig. A1 (9 seeds of a 32K-latent Pythia-160M SAE) ------------------------------------------------
N_SEEDS = 9
ONLY_IN_BASE = {2: 0.583, 3: 0.484, 4: 0.436, 5: 0.406, 6: 0.385, 7: 0.370, 8: 0.358, 9: 0.348}  # Fig. A1, N = 2…9
ONLY_IN_BASE_AT_9 = 0.351  # Section 4.1 / Fig. 2: latents of the base SAE in no other of the nine
IN_ALL_9 = 0.172  # Section 4.1 / Fig. 2: latents of the base SAE in all nine

# --- Fig. 4 (right panel): GPT-2, shared fraction under the decoder-only rule (decoder cosine > 0.7) ----------------
ARCH_DECODER_ONLY_GPT2 = {"gated": 0.856, "relu": 0.824, "topk": 0.742}
FIG4_CLAIMS = ["shared fraction lower at the first and last layers than in the flat middle (Pythia-160M)",
               "MLP shares more than the residual stream on SmolLM and GPT-2, not on Pythia",
               "L1-trained (ReLU, Gated) SAEs share more than TopK at matched sparsity"]  # Section 4.2

# --- Fig. 3 (Section 4.3): detection / fuzzing scores of two seeds' 32K latents (Llama-3.1-70B, 100 + 100 examples) --
MEAN_SCORE = 0.72  # mean detection/fuzzing score over all latents of two seeds
SCORE_QUARTILES = [0.62, 0.80]  # interquartile range of the scores

# --- Table 1: explanations of matched pairs by alignment (detection score in parentheses), ellipses as printed ------
TABLE1 = [  # (alignment, seed-1 explanation, score, seed-2 explanation, score)
    (0.10, "Abbreviated country name in United States Supreme Court case citations.", 0.865,
     "A single character or a small group of characters embedded within a larger word, often in a non-English language context (...).", 0.56),
    (0.27, "Definite articles and other words commonly used in formal and legal language, such as disclaimers, licensing terms, and court documents.", 0.91,
     "Punctuation marks or short words connecting or separating clauses, (...) and sometimes serving as conjunctions or prepositions.", 0.46),
    (0.44, "Abbreviated geographical or institutional references, usually in the context of legal citations.", 0.85, "Punctuation marks.", 0.49),
    (0.75, "Percent symbols marking numerical values representing proportions or rates.", 0.95,
     "A percentage symbol denoting the proportion of a quantity, (...) and usually in the form of a numerical value followed by the symbol.", 0.97),
    (0.97, "Adverbs that express frequency, such as 'often', 'sometimes', (...), used to indicate the occurrence or tendency of an event or action.", 0.94,
     "Adverbs indicating frequency, such as 'often', 'frequently', (...), are used to describe the regularity or likelihood of an event or situation.", 0.99),
]
GOOD_SCORE = 0.7  # ours: a latent "scores well" at AUROC (or accuracy) >= 0.7

AXIS_LABEL = {"d_sae": "number of latents", "k": "k (active latents)", "n_tokens": "training tokens"}
_TREND = {1: "rises", -1: "falls"}


def _claim(claim: str, ours: dict[str, Any], verdict: bool | None, paper: Any = None) -> dict[str, Any]:
    c = {"claim": claim, "ours": ours, "paper": paper, "verdict": verdict}
    if verdict is None:
        c["inconclusive"] = "a number it needs is undefined"
    return c


def _need(numbers: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in numbers]
    if missing:
        raise KeyError(f"these numbers need the keys {', '.join(missing)}")


def _ours(numbers: dict, key: str) -> Any:
    return numbers["compared"][key]["ours"]


def trend_ok(rho: float | None, sign: int) -> bool:
    """A Spearman correlation `rho` has the sign `sign` (+1 rises, -1 falls); undefined (constant) is not a trend."""
    if sign not in (1, -1):
        raise ValueError(f"a trend's sign is +1 or -1, not {sign!r}")
    return defined(rho) and rho * sign > 0


def sweep_trends(rows: dict[str, list[dict]]) -> dict[str, float]:
    """Fig. 5's trend along each sweep axis: the Spearman correlation of the shared fraction (paper's rule) with the
    axis value over the axis's points (`runs.sweeps`); NaN where it is undefined (fewer than two points or a
    constant shared fraction)."""
    from scipy.stats import spearmanr

    out = {}
    for axis, rs in rows.items():
        x, y = [r[axis] for r in rs], [r["shared_frac_paper"] for r in rs]
        out[axis] = float(spearmanr(x, y).statistic) if len(rs) >= 2 and len(set(y)) > 1 else float("nan")
    return out


def edge_minus_middle(by_layer: list[float]) -> float:
    """Fig. 4 (a): the mean shared fraction at the first and last layer minus its mean over the layers between,
    from the shared fractions in layer order; NaN with fewer than three layers."""
    v = [float(x) for x in by_layer]
    return (v[0] + v[-1]) / 2 - sum(v[1:-1]) / (len(v) - 2) if len(v) >= 3 else float("nan")


def claims_fig1(numbers: dict) -> list[dict]:
    """Fig. 1. (1) Latents whose encoder and decoder matchings agree are better aligned: mean alignment
    ((dec + enc cosine)/2) where they agree > where they disagree. (2) Our shared fraction (paper's rule) is at
    least the paper's 41.6% — with `shared_frac_seed_pairs` (`matching.pair_shared_spread`, ≥ 3 seeds), not below
    it beyond the noise floor: a shortfall of at most 2 seed-pair sd is not called one (the paper's own number has
    no spread to combine). Inconclusive where a number is undefined."""
    from ..metrics import beyond_noise

    _need(numbers, "compared")
    agree, disagree = _ours(numbers, "mean_alignment_agree"), _ours(numbers, "mean_alignment_disagree")
    shared = _ours(numbers, "shared_frac_paper")
    floor = numbers.get("shared_frac_seed_pairs")
    ours_shared: dict[str, Any] = {"shared_frac_paper": shared}
    if defined(shared):
        at_least = bool(shared >= SHARED_FRAC)
        if floor:
            below = bool(shared < SHARED_FRAC and beyond_noise(shared, SHARED_FRAC, floor["sd"], 0.0))
            ours_shared.update({"seed-pair sd": floor["sd"], "seed pairs": len(floor["values"]),
                                "below beyond noise": below})
            at_least = not below
    else:
        at_least = None
    return [
        _claim("Latents whose encoder and decoder matchings agree are the better-aligned ones",
               {"mean_alignment_agree": agree, "mean_alignment_disagree": disagree},
               bool(agree > disagree) if defined(agree) and defined(disagree) else None,
               {"mean_alignment_agree": FIG1["mean_alignment_agree"],
                "mean_alignment_disagree": FIG1["mean_alignment_disagree"]}),
        _claim("Shared fraction at least as high as the paper's headline"
               + (" (not below it beyond the seed pairs' noise floor)" if floor else ""), ours_shared,
               at_least, {"shared_frac_paper": SHARED_FRAC}),
    ]


def claims_fig2(numbers: dict) -> list[dict]:
    """Fig. 2: latents shared by more seeds are more similar across seeds — the mean similarity (matched decoder
    cosine averaged over the other seeds) never falls as the number of seeds sharing a latent grows (counts with
    no latents skipped; at least two counts needed)."""
    _need(numbers, "mean_similarity_by_count")
    by = numbers["mean_similarity_by_count"]
    sims = [v for _, v in sorted(by.items(), key=lambda kv: int(kv[0])) if defined(v)]
    rising = len(sims) > 1 and all(b >= a for a, b in zip(sims, sims[1:]))
    return [_claim("Latents shared by more seeds are more similar across seeds (mean similarity rises with the count)",
                   {"mean_similarity_by_count": dict(by)}, bool(rising))]


def claims_figA1(numbers: dict) -> list[dict]:
    """Fig. A1. (1) A power law with an offset fits the only-in-base curve better than one without (lower AIC).
    (2) The offset is positive and determined by the data: its bootstrap interval lies inside (0, 1] and its
    standard error is below its estimate."""
    _need(numbers, "fits", "offset_c")
    fits, c = numbers["fits"], numbers["offset_c"]
    aic_po, aic_p = fits["power_offset"]["aic"], fits["power"]["aic"]
    est, b, se = c["estimate"], c["bootstrap"], fits["power_offset"]["stderr"]["c"]
    lo, hi = b["lo"], b["hi"]
    return [
        _claim("A power law with an offset fits better than one without (AIC)",
               {"aic_power_offset": aic_po, "aic_power": aic_p, "preferred_fit": numbers.get("preferred_fit")},
               bool(defined(aic_po) and defined(aic_p) and aic_po < aic_p)),
        _claim("A positive offset, determined by the data (bootstrap interval inside (0, 1], standard error below c)",
               {"c": est, "bootstrap_lo": lo, "bootstrap_hi": hi, "stderr_c": se},
               bool(defined(lo) and lo > 0 and defined(hi) and hi <= 1 and defined(est)
                    and (se if defined(se) and se else float("inf")) < est)),
    ]


def claims_figA2(numbers: dict, tolerance: float = 0.02) -> list[dict]:
    """Fig. A2: the max-cosine rule and the Hungarian rule (both without agreement) give essentially the same
    shared fraction at threshold 0.7: they differ by at most `tolerance` (2 percentage points). Inconclusive when
    the difference is undefined."""
    _need(numbers, "max_minus_hungarian_at_0.7")
    gap = numbers["max_minus_hungarian_at_0.7"]
    return [_claim("Max-cosine and Hungarian rules give essentially the same shared fraction at 0.7 (within 2 points)",
                   {"max_minus_hungarian_at_0.7": gap}, bool(abs(gap) <= tolerance) if defined(gap) else None)]


def claims_figA3(numbers: dict) -> list[dict]:
    """Fig. A3: the Hungarian matching mostly picks nearest neighbours — more than half of the latents are matched
    to the latent of maximal decoder cosine."""
    _need(numbers, "frac_matched_to_nearest_neighbour")
    f = numbers["frac_matched_to_nearest_neighbour"]
    return [_claim("The Hungarian matching mostly picks nearest neighbours (more than half of latents)",
                   {"frac_matched_to_nearest_neighbour": f}, bool(defined(f) and f > 0.5))]


def claims_fig5(numbers: dict) -> list[dict]:
    """Fig. 5: the shared fraction falls with the number of latents and with k, and rises with training tokens:
    the Spearman correlation of the shared fraction with each axis has the paper's sign (FIG5_TREND); an undefined
    correlation (constant shared fraction) is no trend. With `base_seed_pairs` (the base point's spread over seed
    pairs, `runs.seed_pair_floor`) the axis's change from its first to its last point must also exceed the noise
    floor, 2 combined sd with the base point's sd taken for both ends (measured at the base only); the change and
    whether it is beyond noise are reported either way, so a trend against the paper's shows whether it is real."""
    from ..metrics import beyond_noise

    _need(numbers, "spearman_shared_vs_axis")
    rhos, floor = numbers["spearman_shared_vs_axis"], numbers.get("base_seed_pairs")
    out = []
    for axis, sign in FIG5_TREND.items():
        ours: dict[str, Any] = {"spearman_rho": rhos.get(axis)}
        ok = trend_ok(rhos.get(axis), sign)
        rows = sorted((numbers.get("ours") or {}).get(axis) or [], key=lambda r: r[axis])
        if floor and len(rows) >= 2:
            first, last = rows[0]["shared_frac_paper"], rows[-1]["shared_frac_paper"]
            beyond = beyond_noise(first, last, floor["sd"], floor["sd"])
            ours.update({"last − first": last - first, "base seed-pair sd": floor["sd"], "beyond noise": beyond})
            ok = ok and beyond
        out.append(_claim(f"Sharing {_TREND[sign]} with {AXIS_LABEL[axis]}"
                          + (" (beyond the seed pairs' noise floor)" if floor else ""), ours, ok, {"trend": sign}))
    return out


def claims_figA4(numbers: dict, tol: float = 1e-9) -> list[dict]:
    """Fig. A4: the mean max decoder cosine is at or above the mean Hungarian-matched one at every point of every
    sweep (up to `tol`)."""
    _need(numbers, "ours")
    rows = [r for rs in numbers["ours"].values() for r in rs]
    if not rows:
        raise ValueError("claims_figA4 needs at least one sweep point in numbers['ours']")
    ok = all(r["mean_max_dec_cos"] >= r["mean_matched_dec_cos"] - tol for r in rows)
    return [_claim("Max cosine at or above the matched cosine at every point",
                   {"points": len(rows), "points_below": sum(r["mean_max_dec_cos"] < r["mean_matched_dec_cos"] - tol
                                                             for r in rows)}, bool(ok))]


def claims_fig4(numbers: dict) -> list[dict]:
    """Fig. 4. (1) Sharing is lower at the first and last layer than in the middle: edge − middle < 0 at every size.
    (2) When two hookpoint kinds are compared, the first (MLP) shares more at more than half of the layers.
    (3) When TopK and an L1-trained architecture (ReLU, Gated) are compared, every L1-trained one shares more than
    TopK under the decoder rule. Claims (2) and (3) are present only when their panels are.

    With `seed_pairs` ({"paper": spread, "decoder_only": spread}: one point's shared fraction over every pair of
    ≥ 3 seeds, `runs.seed_pair_floor`; its sd taken for every point, measured at one only) each comparison must
    also exceed the noise floor, 2 sd of the compared quantity: edge − middle (a mean of 2 layers minus a mean of
    n − 2) has sd·√(1/2 + 1/(n − 2)); a difference of two points sd·√2. The differences and whether each is beyond
    noise are reported either way."""
    from ..metrics import beyond_noise

    _need(numbers, "ours")
    o = numbers["ours"]
    edges, mvr = o["edge_minus_middle_layers"], o.get("mlp_vs_resid") or {}
    shares = {r["architecture"]: r["shared_frac_decoder_only"] for r in o["architectures"]}
    l1 = [a for a in ("relu", "gated") if a in shares]
    floor = numbers.get("seed_pairs") or {}
    edge_ok = bool(edges) and all(defined(v) and v < 0 for v in edges.values())
    edge_ours: dict[str, Any] = {"edge_minus_middle": dict(edges)}
    if floor and edges:
        kind = o["layers"][0]["hookpoint"].split(".")[0]  # panel (a)'s kind comes first
        n = {s: sum(r["d_sae"] == int(s) and r["hookpoint"].split(".")[0] == kind for r in o["layers"]) for s in edges}
        sd = {s: floor["paper"]["sd"] * math.sqrt(1 / 2 + 1 / (n[s] - 2)) if n[s] > 2 else float("nan") for s in edges}
        below = {s: bool(defined(v) and v < 0 and beyond_noise(v, 0.0, sd[s], 0.0)) for s, v in edges.items()}
        edge_ours.update({"sd": sd, "below 0 beyond noise": below})
        edge_ok = all(below.values())
    out = [_claim("Sharing lower at the first and last layer than in the middle"
                  + (" (beyond the seed pairs' noise floor)" if floor else ""), edge_ours, edge_ok)]
    if mvr:
        more, n = mvr["layers_where_first_shares_more"], mvr["n_layers"]
        ours: dict[str, Any] = {"layers_where_first_shares_more": more, "n_layers": n}
        if floor and "first_minus_second" in mvr:
            sd = floor["paper"]["sd"]
            more = sum(d > 0 and beyond_noise(d, 0.0, sd, sd) for d in mvr["first_minus_second"])
            ours.update({"more beyond noise": more,
                         "fewer beyond noise": sum(d < 0 and beyond_noise(d, 0.0, sd, sd)
                                                   for d in mvr["first_minus_second"])})
        out.append(_claim(f"{mvr['kinds'][0]} shares more than {mvr['kinds'][1]} (as on SmolLM and GPT-2 in the paper)"
                          + (" at more than half the layers beyond noise" if "more beyond noise" in ours else ""),
                          ours, bool(2 * more > n)))
    if "topk" in shares and l1:
        ok = all(defined(shares[a]) and shares[a] > shares["topk"] for a in l1)
        ours = {a: shares[a] for a in ["topk", *l1]}
        if floor:
            sd = floor["decoder_only"]["sd"]
            beyond = {a: bool(defined(shares[a]) and beyond_noise(shares[a], shares["topk"], sd, sd)) for a in l1}
            ours.update({"decoder-rule seed-pair sd": sd, "beyond noise": beyond})
            ok = ok and all(beyond.values())
        out.append(_claim(f"L1-trained SAEs ({', '.join(l1)}) share more than TopK at matched L0 (decoder rule)"
                          + (" beyond noise" if floor else ""), ours, bool(ok),
                          {a: ARCH_DECODER_ONLY_GPT2.get(a) for a in ["topk", *l1]}))
    return out


def claims_fig3(rho: dict[str, float | None], at_chance: dict[str, bool],
                best_only_in_seed0: dict[str, float | None]) -> list[dict]:
    """Fig. 3, per scorer: (1) latents shared by more seeds score higher — Spearman(number of seeds sharing the
    latent, its AUROC) > 0; (2) some latents found only in seed 0 score well — the best such AUROC is at least
    GOOD_SCORE. Inconclusive for a scorer whose pooled scores are at chance (`at_chance[s]`)."""
    if set(rho) != set(at_chance) or set(rho) != set(best_only_in_seed0):
        raise ValueError("claims_fig3 needs rho, at_chance and best_only_in_seed0 for the same scorers")

    def decide(s, ok):
        return None if at_chance[s] else bool(ok)
    return ([{"claim": f"{s}: latents shared by more seeds score higher",
              "verdict": decide(s, defined(rho[s]) and rho[s] > 0), "ours": {"Spearman(seeds sharing, AUROC)": rho[s]}}
             for s in rho]
            + [{"claim": f"{s}: some latents found only in seed 0 score well (AUROC >= {GOOD_SCORE})",
                "verdict": decide(s, defined(best_only_in_seed0[s]) and best_only_in_seed0[s] >= GOOD_SCORE),
                "ours": {"best only-in-seed-0 AUROC": best_only_in_seed0[s]}} for s in rho])


def claims_table1(rows: list[dict], at_chance: bool, threshold: float = THRESHOLD) -> list[dict]:
    """Table 1: an unpaired latent (alignment < `threshold`) has a well-scoring explanation (score >= GOOD_SCORE)
    that its seed-1 partner lacks (partner's score lower). `rows`: {"alignment", "scores": [seed 0, seed 1]}.
    Inconclusive when the scores are at chance."""
    ok = any(r["alignment"] < threshold and r["scores"][0] >= GOOD_SCORE and r["scores"][1] < r["scores"][0] for r in rows)
    return [{"claim": f"an unpaired latent (alignment < {threshold:g}) has a well-scoring explanation (>= {GOOD_SCORE:g}) "
                      "that its seed-1 partner lacks",
             "verdict": None if at_chance else bool(ok), "ours": {"rows": len(rows)}}]


CLAIMS = {"paulo_fig1_matched_cosines": claims_fig1, "paulo_fig2_similarity_vs_frequency": claims_fig2,
          "paulo_figA1_power_law_offset": claims_figA1, "paulo_figA2_threshold_rules": claims_figA2,
          "paulo_figA3_hungarian_vs_max": claims_figA3, "paulo_fig5_overlap_vs_size_k_tokens": claims_fig5,
          "paulo_figA4_mean_cosines_vs_size_k_tokens": claims_figA4,
          "paulo_fig4_overlap_vs_layer_position_arch": claims_fig4}


def claims(stem: str, numbers: dict) -> list[dict]:
    """The claims of figure `stem`: those its JSON carries, else computed from its numbers by the rule above."""
    if "claims" in numbers:
        return numbers["claims"]
    if stem not in CLAIMS:
        raise KeyError(f"no Paulo & Belrose claims for {stem!r}; known: {', '.join(CLAIMS)}")
    return CLAIMS[stem](numbers)
