"""Leask et al. (2025), "Sparse autoencoders do not find canonical units of analysis": the paper's reference
numbers and setup, and the rules that turn our numbers into verdicts on its claims.

Each `claims_*` takes numbers as the notebook writes them to its JSON and returns claims `{"claim", "ours",
"verdict"}` (see `saesanity.papers`); True: reproduced, False: not.
"""

from __future__ import annotations

from . import defined

# Section 3 (SAE stitching): GPT-2 small layer-8 residual-stream SAEs of 768·2^n latents.
SETUP = "GPT-2 small layer-8 residual stream, SAEs of 768·2^n latents"
NOVEL_FRACTION = 0.35  # Section 3: roughly 35% novel / 65% reconstruction latents between consecutive sizes
NOVEL_RANGE = (0.2, 0.5)  # ours: "about a third" accepted between 20% and 50%
META_SAE = {"meta_latents": 2304, "k": 4, "base_latents": 49152}  # Section 4: meta-SAE on the 49,152-latent decoder
META_SETTING = "2,304 meta-latents, k=4, on the 49,152-latent GPT-2 SAE decoder"
META_CLAIM = "meta-latents decompose latents into more basic, often interpretable parts"
META_FVU_RATIO = 0.9  # ours: "shared structure" when the decoder FVU is at most 0.9 x that on structureless rows


def claims_novel_fraction(mean_novel: float, seed_sd: float | None = None) -> list[dict]:
    """Section 3: about a third of a larger SAE's latents are novel — the mean novel fraction over consecutive
    pairs lies in NOVEL_RANGE (inclusive). With `seed_sd` (that mean's sd over the seed combinations,
    `stitching.novel_fraction_seeds`) it may lie outside by at most 2 sd: a miss within the noise floor is not one."""
    if not defined(mean_novel):
        raise ValueError(f"the mean novel fraction must be a number, not {mean_novel!r}")
    lo, hi = NOVEL_RANGE
    ours: dict = {"mean over consecutive pairs": mean_novel}
    slack = 0.0
    if seed_sd is not None:
        slack = 2 * seed_sd
        ours.update({"seed sd": seed_sd, "outside the range beyond noise": not lo - slack <= mean_novel <= hi + slack})
    return [{"claim": f"about a third of a larger SAE's latents are novel ({100 * lo:.0f}–{hi:.0%}; paper ≈ {NOVEL_FRACTION:.0%})"
                      + (" within the seeds' noise floor" if seed_sd is not None else ""),
             "verdict": bool(lo - slack <= mean_novel <= hi + slack), "ours": ours}]


def claims_meta(meta: list[dict], n_groups: int, mean_members: float | None) -> list[dict]:
    """Section 4. `meta`: the JSON's rows, one per meta-SAE width — `meta_size`, the decoder `fvu`, the `fvu` on
    structureless (Gaussian) rows as `gaussian_rows_fvu`, and each one's noise floor over meta-SAE seeds,
    `fvu_seed_sd` / `gaussian_rows_fvu_seed_sd` (`stitching.meta_family`); `n_groups`: meta-latents active on at
    least two base latents; `mean_members`: their mean number of base latents.
    (1) decoder FVU / Gaussian-rows FVU is at most META_FVU_RATIO at every width; (2, a check of ours) the decoder
    FVU is below the Gaussian rows' beyond the noise floor (`metrics.beyond_noise`, 2 combined sd) at every width;
    (3) there are such groups, of at least 2 on average."""
    from ..metrics import beyond_noise

    if not meta:
        raise ValueError("claims_meta needs the rows of at least one meta-SAE width")
    missing = [k for k in ("meta_size", "fvu", "fvu_seed_sd", "gaussian_rows_fvu", "gaussian_rows_fvu_seed_sd")
               if any(k not in m for m in meta)]
    if missing:
        raise ValueError(f"claims_meta: meta rows lack {missing} (rows from before the seed noise floor: regenerate "
                         "the figure)")
    ratio = {m["meta_size"]: m["fvu"] / m["gaussian_rows_fvu"] for m in meta}
    below = {m["meta_size"]: bool(m["fvu"] < m["gaussian_rows_fvu"] and beyond_noise(
        m["fvu"], m["gaussian_rows_fvu"], m["fvu_seed_sd"], m["gaussian_rows_fvu_seed_sd"])) for m in meta}
    return [{"claim": "meta-SAEs find shared structure in the decoder (FVU at most 0.9 x that on structureless rows, "
                      "at every width)",
             "verdict": bool(all(r <= META_FVU_RATIO for r in ratio.values())), "ours": {"FVU / Gaussian-rows FVU": ratio}},
            {"claim": "the decoder rows' FVU is below the structureless rows' beyond the noise floor (2 sd over "
                      "meta-SAE seeds) at every width (check, not a claim of Leask et al.)",
             "verdict": all(below.values()),
             "ours": {"decoder FVU": {m["meta_size"]: m["fvu"] for m in meta},
                      "Gaussian-rows FVU": {m["meta_size"]: m["gaussian_rows_fvu"] for m in meta},
                      "seed sd (decoder, Gaussian)": {m["meta_size"]: [m["fvu_seed_sd"], m["gaussian_rows_fvu_seed_sd"]]
                                                      for m in meta},
                      "below beyond noise": below}},
            {"claim": "a meta-latent groups several base latents",
             "verdict": bool(n_groups > 0 and defined(mean_members) and mean_members >= 2),
             "ours": {"meta-latents active on >= 2 base latents": n_groups}}]


def _intervals(insertion: dict[str, dict], kind: str) -> dict[str, list[float]]:
    key = f"median_single_delta_{kind}_boot"
    return {n: [r[key]["lo"], r[key]["hi"]] for n, r in insertion.items() if r[f"n_{kind}"]}


def claims_stitching(insertion: dict[str, dict], swap_path_summary: dict[str, dict]) -> list[dict]:
    """Section 3 (stitching), per size pair. `insertion`: the JSON's rows by pair — `n_novel`, `n_reconstruction`,
    `median_single_delta_{novel,reconstruction}` and their noise floor `..._boot` (a percentile bootstrap over
    the held-out rows, `Stitcher.median_insert_delta_bootstrap`: lo, hi the 95% interval); `swap_path_summary`:
    `stitching.path_summary` by pair. (1) inserting one novel latent of L into S lowers the MSE: median
    single-latent ΔMSE < 0, beyond the noise floor (its 95% interval below 0), at every pair with novel latents;
    (2) inserting a reconstruction latent raises it (median > 0, its interval above 0); (3) the swap path from S to L interpolates: |Spearman(MSE, step)| > 0.9 and the MSE
    leaves the endpoints' range by at most 10% of it; (4, a check of ours) the path's midpoint MSE lies above
    both endpoints' beyond the noise floor (paired over the shards). Pairs without such latents are left out of
    (1) and (2)."""
    def signed(kind: str, sign: int) -> tuple[dict, dict]:
        rows = {n: r for n, r in insertion.items() if r[f"n_{kind}"]}
        key = f"median_single_delta_{kind}"
        if any(f"{key}_boot" not in r for r in rows.values()):
            raise ValueError(f"claims_stitching: insertion rows lack {key}_boot (rows from before the noise floor: "
                             "regenerate the figure)")
        beyond = {n: bool(sign * r[key] > 0 and (r[f"{key}_boot"]["hi"] < 0 if sign < 0 else r[f"{key}_boot"]["lo"] > 0))
                  for n, r in rows.items()}
        return {n: r[key] for n, r in rows.items()}, beyond

    novel, novel_ok = signed("novel", -1)
    recon, recon_ok = signed("reconstruction", +1)
    if any("mid_above_ends_beyond_noise" not in v for v in swap_path_summary.values()):
        raise ValueError("claims_stitching: the swap path summaries lack their noise floor (mse_shards): regenerate")
    return [
        {"claim": "inserting a novel latent of L into S lowers the MSE (median single-latent ΔMSE < 0, its 95% bootstrap "
                  "interval over held-out rows below 0)",
         "verdict": all(novel_ok.values()), "ours": {"median": novel, "interval": _intervals(insertion, "novel"),
                                                      "beyond noise": novel_ok}},
        {"claim": "inserting a reconstruction latent of L into S raises the MSE (median single-latent ΔMSE > 0, its 95% "
                  "bootstrap interval over held-out rows above 0)",
         "verdict": all(recon_ok.values()), "ours": {"median": recon, "interval": _intervals(insertion, "reconstruction"),
                                                      "beyond noise": recon_ok}},
        {"claim": "the swap path interpolates from S to L (MSE moves steadily, |Spearman| > 0.9, within 10% of the "
                  "endpoints' range)",
         "verdict": all(defined(s["spearman_mse_vs_step"]) and abs(s["spearman_mse_vs_step"]) > 0.9
                        and s["max_excursion_beyond_endpoints"] <= 0.1 for s in swap_path_summary.values()),
         "ours": {n: {"Spearman": s["spearman_mse_vs_step"], "excursion": s["max_excursion_beyond_endpoints"]}
                  for n, s in swap_path_summary.items()}},
        {"claim": "the swap path's midpoint MSE lies above both endpoints' beyond the noise floor (paired over held-out "
                  "shards): the path bulges (check, not a claim of Leask et al.)",
         "verdict": all(s["mid_above_ends_beyond_noise"] for s in swap_path_summary.values()),
         "ours": {n: {"midpoint − higher endpoint": s["mid_minus_higher_end"],
                      "beyond noise": s["mid_above_ends_beyond_noise"],
                      "endpoints differ beyond noise": s["ends_differ_beyond_noise"]} for n, s in swap_path_summary.items()}},
    ]
