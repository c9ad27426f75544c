"""Heap et al. (2025), "Automated interpretability metrics do not distinguish trained and random transformers":
the paper's setup and the rules that turn our numbers into verdicts on its claims.

Each `claims_*` takes numbers as the notebook writes them to its JSON (so the committed JSONs can be re-judged)
and returns claims `{"claim", "ours", "verdict"}` (see `saesanity.papers`); True: reproduced, False: not.
"""

from __future__ import annotations

import math
from typing import Any

from . import defined

# Section 3: Pythia 70M–1B (and their re-randomized / step-0 / control variants), residual-stream SAEs at every
# layer; App. B: auto-interp with a Llama-3.1-70B explainer and scorer on 100 latents per SAE.
SETUP = "Pythia 70M–1B residual stream; Llama-3.1-70B explainer and scorer, 100 latents (App. B)"
CE_ABLATION_NATS = 1.0  # ours: zero-ablating a hookpoint "hurts" when it raises CE by more than this (nats)
RANDOM_VARIANTS_INIT = ("step0", "init")  # variants at initialisation, in order of preference
RERANDOMIZED = ("rerandomized_incl_emb", "rerandomized_excl_emb")


def layer_of(hookpoint: str) -> int:
    """The layer index of a hookpoint `<kind>.<layer>`."""
    try:
        return int(hookpoint.split(".")[1])
    except (IndexError, ValueError):
        raise ValueError(f"a hookpoint is <kind>.<layer>, not {hookpoint!r}") from None


def spearman_with_layer(values: dict[str, float]) -> float | None:
    """Spearman correlation of a per-hookpoint value with the layer index (None if undefined: < 3 layers, constant)."""
    from scipy.stats import spearmanr

    hs = sorted(values, key=layer_of)
    if len(hs) < 3:
        return None
    rho = spearmanr([layer_of(h) for h in hs], [values[h] for h in hs]).statistic
    return None if math.isnan(rho) else float(rho)


def fvu_beyond_noise(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    """Whether two rows' held-out FVUs differ beyond their noise floor: paired over the held-out shards they were
    both measured on (`metrics.paired_beyond_noise` on their `fvu_shard_values`: a t-test at 5% of the shard
    differences; every variant's held-out rows are the same text, cut at the same places), else — a row with
    only `fvu_shard_sd` — the conservative unpaired `metrics.beyond_noise` (2 combined shard sd); None when
    either row has neither (JSONs written before the noise floor)."""
    from ..metrics import beyond_noise, paired_beyond_noise

    va, vb = a.get("fvu_shard_values"), b.get("fvu_shard_values")
    if va is not None and vb is not None and len(va) == len(vb):
        return paired_beyond_noise(va, vb)
    if a.get("fvu_shard_sd") is None or b.get("fvu_shard_sd") is None:
        return None
    return beyond_noise(a["fvu"], b["fvu"], a["fvu_shard_sd"], b["fvu_shard_sd"])


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def claims_metrics(ours: dict[str, dict[str, dict[str, Any]]]) -> list[dict]:
    """Heap Fig. 1–3 (SAE metrics vs layer). `ours`: variant → hookpoint → {"fvu", "ce_clean", "ce_zero", …}.
    (1) control has lower explained variance (1 − FVU) than trained at every layer; (2) control's FVU rises with
    depth (Spearman > 0); (3) every re-randomized variant's mean |ΔFVU| to trained is below the initialised model's
    (step0, else init); (4) zero-ablating the hookpoint raises CE by more than 1 nat at every layer for trained and
    at not every layer for each random-weight variant. A claim is present only when its variants are."""
    claims = []
    if "trained" in ours and "control" in ours:
        tr, co = ours["trained"], ours["control"]
        ev_gap = [(1 - tr[h]["fvu"]) - (1 - co[h]["fvu"]) for h in tr]
        rho = spearman_with_layer({h: r["fvu"] for h, r in co.items()})
        claims.append({"claim": "control has much lower explained variance than trained",
                       "ours": {"mean_ev_trained_minus_control": float(_mean(ev_gap)),
                                "layers_where_control_lower": int(sum(g > 0 for g in ev_gap)), "n_layers": len(ev_gap)},
                       "verdict": bool(all(g > 0 for g in ev_gap))})
        claims.append({"claim": "control's reconstruction error grows with depth",
                       "ours": {"spearman_control_fvu_vs_layer": rho}, "verdict": bool(rho is not None and rho > 0)})
    inits = [v for v in RANDOM_VARIANTS_INIT if v in ours]
    rerands = [v for v in RERANDOMIZED if v in ours]
    if "trained" in ours and inits and rerands:
        tr = ours["trained"]
        dist = {v: float(_mean(abs(ours[v][h]["fvu"] - tr[h]["fvu"]) for h in tr)) for v in rerands + inits}
        claims.append({"claim": f"re-randomized variants track trained more closely than {inits[0]} (mean |ΔFVU|)",
                       "ours": dist, "verdict": bool(all(dist[r] < dist[inits[0]] for r in rerands))})
    randoms = [v for v in ours if v not in ("trained", "control")]
    if "trained" in ours and randoms:
        gaps = {v: {h: r["ce_zero"] - r["ce_clean"] for h, r in ours[v].items()} for v in ours}

        def hurts(v):
            return bool(all(g > CE_ABLATION_NATS for g in gaps[v].values()))

        claims.append({"claim": "the CE-loss score is meaningful only for trained: zero-ablation raises CE by > 1 nat "
                                "at every layer for trained and not for the random-weight variants",
                       "ours": {"ce_zero_minus_clean": gaps, "ablation_hurts_everywhere": {v: hurts(v) for v in ours}},
                       "verdict": bool(hurts("trained") and not any(hurts(v) for v in randoms))})
    return claims


def claims_baselines(ours: dict[str, dict[str, dict[str, Any]]], frozen: dict[str, dict[str, dict[str, Any]]],
                     lookup: dict[str, dict[str, dict | None]]) -> list[dict]:
    """Checks beyond the paper, on the stronger baselines of Korznikov et al. (2026) and the lookup null (issue 18),
    each labelled "(check, not a claim of Heap et al.)". `ours` as for `claims_metrics`; `frozen`: part →
    hookpoint → metrics of the trained model's frozen-weight SAEs; `lookup`: variant → hookpoint →
    {"unigram_fvu", "bigram_fvu"} or None (streamed activations). (1) The trained model's SAE has lower held-out
    FVU than each frozen-weight baseline at every layer, beyond the noise floor where the rows carry one
    (`fvu_beyond_noise`); (2) every variant's SAE has lower FVU than its unigram lookup null at every layer
    (beyond both noise floors where there are: `unigram_fvu_shard_sd`); (3)
    the unigram lookup null explains more of each random-weight variant's activations than of the trained
    model's (lower mean FVU over layers) — the suspicion that random-transformer activations are mostly token
    identity, which SAEs then "find"; (4) where the rows carry a noise floor, each random-weight variant's FVU
    differs from the trained model's beyond it at every layer — whether the "similar" numbers can be told
    apart at all. A check is present only when its inputs are."""
    claims, tag = [], " (check, not a claim of Heap et al.)"
    if "trained" in ours and frozen:
        tr = ours["trained"]
        gaps = {f: {h: m["fvu"] - tr[h]["fvu"] for h, m in fs.items()} for f, fs in frozen.items()}
        noise = {f: {h: fvu_beyond_noise(m, tr[h]) for h, m in fs.items()} for f, fs in frozen.items()}
        claims.append({"claim": "the trained model's SAE reconstructs better than every frozen-weight baseline at every "
                                "layer, beyond the noise floor" + tag,
                       "ours": {"fvu_frozen_minus_trained": gaps, "beyond_noise": noise},
                       "verdict": bool(all(g > 0 and noise[f][h] is not False
                                           for f, gs in gaps.items() for h, g in gs.items()))})
    uni = {v: {h: r["unigram_fvu"] for h, r in hs.items() if r is not None} for v, hs in lookup.items() if v in ours}
    uni = {v: hs for v, hs in uni.items() if hs}
    if uni:
        beats = {v: {h: ours[v][h]["fvu"] < f for h, f in hs.items()} for v, hs in uni.items()}
        noise = {v: {h: fvu_beyond_noise(ours[v][h], {"fvu": lookup[v][h]["unigram_fvu"],
                                                       "fvu_shard_sd": lookup[v][h].get("unigram_fvu_shard_sd"),
                                                       "fvu_shard_values": lookup[v][h].get("unigram_fvu_shard_values")})
                     for h in hs} for v, hs in uni.items()}
        claims.append({"claim": "every variant's SAE beats its token lookup null (unigram) at every layer, beyond the "
                                "noise floor" + tag,
                       "ours": {"sae_fvu_below_unigram_fvu": beats, "beyond_noise": noise},
                       "verdict": bool(all(b and noise[v][h] is not False for v, bs in beats.items()
                                           for h, b in bs.items()))})
    randoms = [v for v in uni if v not in ("trained", "control")]
    if "trained" in uni and randoms:
        mean = {v: float(_mean(uni[v].values())) for v in ["trained", *randoms]}
        claims.append({"claim": "a token lookup explains more of the random-weight variants' activations than of the "
                                "trained model's (mean unigram-null FVU over layers)" + tag,
                       "ours": {"mean_unigram_fvu": mean},
                       "verdict": bool(all(mean[v] < mean["trained"] for v in randoms))})
    weights = [v for v in ours if v not in ("trained", "control")]  # every random-weight variant, lookup or not
    if "trained" in ours and weights and all(r.get("fvu_shard_sd") is not None
                                             for v in ["trained", *weights] for r in ours[v].values()):
        tr = ours["trained"]
        apart = {v: {h: fvu_beyond_noise(ours[v][h], tr[h]) for h in tr if h in ours[v]} for v in weights}
        claims.append({"claim": "each random-weight variant's SAE FVU differs from the trained model's beyond the noise "
                                "floor (paired over held-out shards) at every layer" + tag,
                       "ours": {"fvu_minus_trained": {v: {h: ours[v][h]["fvu"] - tr[h]["fvu"] for h in apart[v]}
                                                      for v in weights},
                                "fvu_shard_sd": {v: {h: r["fvu_shard_sd"] for h, r in ours[v].items()}
                                                 for v in ["trained", *weights]},
                                "beyond_noise": apart},
                       "verdict": bool(all(b for bs in apart.values() for b in bs.values()))})
    return claims


def claims_entropy(median_entropy_bits: dict[str, dict[str, float]],
                   median_sd: dict[str, dict[str, float]] | None = None) -> list[dict]:
    """Heap token-entropy figure. `median_entropy_bits`: variant → hookpoint → median over latents of the entropy
    of the tokens at each latent's top activations. (1) trained entropy rises with depth (Spearman > 0);
    (2) every random variant is below trained at the deepest layer; (3) control is above trained at more than half
    of the layers. Present only when trained (and, for 2–3, the other variants) are. With `median_sd` (each
    median's bootstrap sd over latents, `fits.median_bootstrap`) the comparisons of (2) and (3) must also exceed
    the noise floor, 2 combined sd (`metrics.beyond_noise`)."""
    from ..metrics import beyond_noise

    med, sd = median_entropy_bits, median_sd

    def differs(v: str, h: str) -> bool:  # v's median vs trained's at h, beyond noise (always, without sd)
        return sd is None or beyond_noise(med[v][h], med["trained"][h], sd[v][h], sd["trained"][h])

    claims = []
    if "trained" not in med:
        return claims
    tr = med["trained"]
    rho = spearman_with_layer(tr)
    claims.append({"claim": "trained-model token entropy rises with depth",
                   "ours": {"spearman_median_entropy_vs_layer": rho}, "verdict": bool(rho is not None and rho > 0)})
    deep_h = max(tr, key=layer_of)
    randoms = [v for v in med if v not in ("trained", "control")]
    noise = " beyond the noise floor" if sd is not None else ""
    if randoms:
        ours = {v: med[v][deep_h] for v in ["trained", *randoms]}
        if sd is not None:
            ours["bootstrap sd"] = {v: sd[v][deep_h] for v in ["trained", *randoms]}
        claims.append({"claim": "random variants stay low: below trained at the deepest layer" + noise, "ours": ours,
                       "verdict": bool(all(defined(med[v][deep_h]) and med[v][deep_h] < tr[deep_h] and differs(v, deep_h)
                                           for v in randoms))})
    if "control" in med:
        above = sum(defined(med["control"][h]) and med["control"][h] > tr[h] and differs("control", h) for h in tr)
        claims.append({"claim": "control stays high: above trained" + noise,
                       "ours": {"layers_where_control_above_trained": int(above), "n_layers": len(tr)},
                       "verdict": bool(2 * above > len(tr))})
    return claims


def claims_toy(hypothesis1: list[dict], hypothesis2: list[dict], margin: float = 0.1) -> list[dict]:
    """Heap Section 4 (toy models). `hypothesis1`: rows {"sweep", "depth", "p", "recovery"}; `hypothesis2`: rows
    {"depth", "fvu_ratio", "fvu_ratio_seed_sd"} (its sd over seeds, `metrics.seed_spread`). (1) On the sparsity
    sweep, recovery after the deepest random MLP stack is within `margin` of the identity's (depth 0) at every p;
    (2) identity recovery at the smallest p exceeds that at the largest; (3) the FVU ratio (network output /
    covariance-matched Gaussian) is below 1 at every depth > 0, beyond the noise floor (1 − ratio > 2 sd of one
    run, `metrics.beyond_noise` against the constant 1)."""
    from scipy.stats import spearmanr

    from ..metrics import beyond_noise

    sp = [r for r in hypothesis1 if r["sweep"] == "sparsity"]
    if not sp:
        raise ValueError("claims_toy needs hypothesis-1 rows of the 'sparsity' sweep")
    deepest = max(r["depth"] for r in sp)
    ident = [r for r in sp if r["depth"] == 0]
    deep = [r for r in sp if r["depth"] == deepest]
    if not ident or [r["p"] for r in ident] != [r["p"] for r in deep]:
        raise ValueError("claims_toy needs depth 0 and the deepest depth at the same ps of the sparsity sweep")
    ps, rid, rdeep = [r["p"] for r in ident], [r["recovery"] for r in ident], [r["recovery"] for r in deep]
    h2_deep = [r for r in hypothesis2 if r["depth"] > 0]
    if any("fvu_ratio_seed_sd" not in r for r in hypothesis2):
        raise ValueError("claims_toy: hypothesis-2 rows lack fvu_ratio_seed_sd (rows from before the seed noise floor: "
                         "regenerate the figure)")
    below = {str(r["depth"]): bool(r["fvu_ratio"] < 1 and beyond_noise(r["fvu_ratio"], 1.0, r["fvu_ratio_seed_sd"], 0.0))
             for r in h2_deep}
    return [
        {"claim": "hypothesis 1: sparse superposed features stay recoverable after random MLP blocks "
                  f"(recovery after {deepest} blocks within {margin:g} of the identity's at every p)",
         "ours": {"recovery_identity": rid, f"recovery_depth_{deepest}": rdeep, "ps": ps},
         "verdict": bool(all(d > i - margin for d, i in zip(rdeep, rid)))},
        {"claim": "recovery falls as the input gets denser (larger p)",
         "ours": {"spearman_recovery_vs_p_identity": float(spearmanr(ps, rid).statistic)},
         "verdict": bool(rid[0] > rid[-1])},
        {"claim": "hypothesis 2: random MLP blocks add structure to dense Gaussian input (FVU ratio < 1 at depth > 0, "
                  "beyond the noise floor over seeds)",
         "ours": {"fvu_ratio_by_depth": {str(r["depth"]): r["fvu_ratio"] for r in hypothesis2},
                  "seed sd": {str(r["depth"]): r["fvu_ratio_seed_sd"] for r in hypothesis2}, "below 1 beyond noise": below},
         "verdict": bool(h2_deep and all(below.values()))},
    ]


def claims_roc(gap: dict[str, dict[str, float]], rho: dict[str, float | None], at_chance: dict[str, bool],
               margin: float = 0.1) -> list[dict]:
    """Heap App. B (auto-interp ROC curves), per scorer: (1) every random variant's pooled AUROC is within `margin`
    of trained's at every layer (`gap`: scorer → variant → max |AUROC − trained AUROC| over layers); (2) trained's
    AUROC falls with depth (`rho`: Spearman(layer, AUROC) < 0). Inconclusive for a scorer whose every pooled AUROC
    is at chance (`at_chance[s]`)."""
    def decide(s, ok):
        return None if at_chance[s] else bool(ok)
    return ([{"claim": f"{s}: every random variant's pooled AUROC within {margin:g} of trained at every layer",
              "verdict": decide(s, all(g <= margin for g in gap[s].values())), "ours": {"max gap": max(gap[s].values())}}
             for s in gap]
            + [{"claim": f"{s}: trained AUROC falls with depth", "verdict": decide(s, defined(rho[s]) and rho[s] < 0),
                "ours": {"Spearman(layer, AUROC)": rho[s]}} for s in rho])
