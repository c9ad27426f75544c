"""Leask et al. (2025), "Sparse autoencoders do not find canonical units of analysis": the paper's reference
numbers and setup, and the rules that turn our numbers into verdicts on its claims.

Each `claims_*` takes numbers as the notebook writes them to its JSON and returns claims `{"claim", "ours",
"verdict"}` (see `saesanity.papers`); True: reproduced, False: not.
"""

from __future__ import annotations

from typing import Any

from . import defined

# Section 3 (SAE stitching): GPT-2 small layer-8 residual-stream SAEs of 768·2^n latents.
SETUP = "GPT-2 small layer-8 residual stream, SAEs of 768·2^n latents"
NOVEL_FRACTION = 0.35  # Section 3: roughly 35% novel / 65% reconstruction latents between consecutive sizes
NOVEL_RANGE = (0.2, 0.5)  # ours: "about a third" accepted between 20% and 50%
META_SAE = {"meta_latents": 2304, "k": 4, "base_latents": 49152}  # Section 4: meta-SAE on the 49,152-latent decoder
META_SETTING = "2,304 meta-latents, k=4, on the 49,152-latent GPT-2 SAE decoder"
META_CLAIM = "meta-latents decompose latents into more basic, often interpretable parts"
META_FVU_RATIO = 0.9  # ours: "shared structure" when the decoder FVU is at most 0.9 x that on structureless rows


def claims_novel_fraction(mean_novel: float) -> list[dict]:
    """Section 3: about a third of a larger SAE's latents are novel — the mean novel fraction over consecutive
    pairs lies in NOVEL_RANGE (inclusive)."""
    if not defined(mean_novel):
        raise ValueError(f"the mean novel fraction must be a number, not {mean_novel!r}")
    lo, hi = NOVEL_RANGE
    return [{"claim": f"about a third of a larger SAE's latents are novel ({100 * lo:.0f}–{hi:.0%}; paper ≈ {NOVEL_FRACTION:.0%})",
             "verdict": bool(lo <= mean_novel <= hi), "ours": {"mean over consecutive pairs": mean_novel}}]


def claims_meta(fvu_ratio: dict[Any, float], n_groups: int, mean_members: float | None) -> list[dict]:
    """Section 4. `fvu_ratio`: meta-SAE width → decoder FVU / FVU on structureless (Gaussian) rows; `n_groups`:
    meta-latents active on at least two base latents; `mean_members`: their mean number of base latents.
    (1) the ratio is at most META_FVU_RATIO at every width; (2) there are such groups, of at least 2 on average."""
    if not fvu_ratio:
        raise ValueError("claims_meta needs the FVU ratio of at least one meta-SAE width")
    return [{"claim": "meta-SAEs find shared structure in the decoder (FVU at most 0.9 x that on structureless rows, "
                      "at every width)",
             "verdict": bool(all(r <= META_FVU_RATIO for r in fvu_ratio.values())), "ours": {"FVU / Gaussian-rows FVU": fvu_ratio}},
            {"claim": "a meta-latent groups several base latents",
             "verdict": bool(n_groups > 0 and defined(mean_members) and mean_members >= 2),
             "ours": {"meta-latents active on >= 2 base latents": n_groups}}]


def claims_stitching(median_delta_novel: dict[str, float], median_delta_reconstruction: dict[str, float],
                     swap_path_summary: dict[str, dict]) -> list[dict]:
    """Section 3 (stitching), per size pair: (1) inserting one novel latent of L into S lowers the MSE (median
    single-latent ΔMSE < 0 at every pair with novel latents); (2) inserting a reconstruction latent raises it
    (median > 0); (3) the swap path from S to L interpolates: |Spearman(MSE, step)| > 0.9 and the MSE leaves the
    endpoints' range by at most 10% of it. Pairs without such latents are left out of (1) and (2)."""
    return [
        {"claim": "inserting a novel latent of L into S lowers the MSE (median single-latent ΔMSE < 0)",
         "verdict": all(v < 0 for v in median_delta_novel.values()), "ours": dict(median_delta_novel)},
        {"claim": "inserting a reconstruction latent of L into S raises the MSE (median single-latent ΔMSE > 0)",
         "verdict": all(v > 0 for v in median_delta_reconstruction.values()), "ours": dict(median_delta_reconstruction)},
        {"claim": "the swap path interpolates from S to L (MSE moves steadily, |Spearman| > 0.9, within 10% of the "
                  "endpoints' range)",
         "verdict": all(defined(s["spearman_mse_vs_step"]) and abs(s["spearman_mse_vs_step"]) > 0.9
                        and s["max_excursion_beyond_endpoints"] <= 0.1 for s in swap_path_summary.values()),
         "ours": {n: {"Spearman": s["spearman_mse_vs_step"], "excursion": s["max_excursion_beyond_endpoints"]}
                  for n, s in swap_path_summary.items()}},
    ]
