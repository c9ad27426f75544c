"""README "Results" section, generated from `figures/*.json` so no number is typed by hand.

    python -m saesanity.readme          # rewrite the block between the markers in README.md
    python -m saesanity.readme --check  # exit 1 if README.md is out of date (a test runs this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import convergence, machine
from .papers import paulo, render_claims, verdict_md
from .paths import REPO_ROOT, figures_dir

START, END = "<!-- results:start -->", "<!-- results:end -->"
EXAMPLE_START, EXAMPLE_END = "<!-- report-example:start -->", "<!-- report-example:end -->"
REPRO_START, REPRO_END = "<!-- reproducibility:start -->", "<!-- reproducibility:end -->"
EXAMPLE_COMMAND = "saesanity report --model smollm2-135m --hookpoint mlp_out.6 --train-seeds 2 --out figures/report"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _f(x: float | None, spec: str) -> str:
    """Format a JSON number; NaN/inf were written as null and show as a dash."""
    return "—" if x is None else format(x, spec)


def _fvus(r: dict) -> str:
    """A seed pair's held-out FVUs (`heldout_fvu`), each ± its sd over held-out shards where the JSON has them."""
    sds = r.get("heldout_fvu_shard_sd") or [None] * len(r["heldout_fvu"])
    return ", ".join(_pm({"v": v, "sd": sd}, "v", "sd", _num) for v, sd in zip(r["heldout_fvu"], sds))


def _pm(r: dict, key: str, sd_key: str, fmt=lambda v: f"{v:.3f}") -> str:
    """fmt(r[key]), with ± r[sd_key] to 3 decimals (its noise floor: sd over shards or seeds) where the JSON has one."""
    return fmt(r[key]) + (f" ± {r[sd_key]:.3f}" if r.get(sd_key) is not None else "")


def fig1_section(doc: dict) -> str:
    c = doc["compared"]
    aligned, headline = paulo.claims(doc["stem"], doc)
    rows = [
        ("shared latents, paper's rule (dec & enc > 0.7, same partner)", _pct, "shared_frac_paper"),
        ("shared latents, dec & enc > 0.7 (partners may differ)", _pct, "shared_frac_dec_and_enc"),
        ("shared latents, decoder only > 0.7", _pct, "shared_frac_decoder_only"),
        ("encoder and decoder matchings agree", _pct, "agree_frac"),
        ("mean Hungarian-matched decoder cosine", _num, "mean_matched_dec_cos"),
        ("mean Hungarian-matched encoder cosine", _num, "mean_matched_enc_cos"),
        ("mean max decoder cosine", _num, "mean_max_dec_cos"),
        ("mean alignment, matchings agree ((dec+enc)/2)", _num, "mean_alignment_agree"),
        ("mean alignment, matchings disagree", _num, "mean_alignment_disagree"),
    ]
    lines = [
        "### Paulo & Belrose Fig. 1 — two SAEs that differ only in seed",
        "",
        f"![Fig 1](figures/{doc['stem']}.png)",
        "",
        f"{_setup(doc)} Paper: {paulo.SETUP}.",
        "",
        "| quantity | ours | paper |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {fmt(c[key]['ours'])} | {fmt(c[key]['paper'])} |" for label, fmt, key in rows]
    held = doc["heldout"]
    fvus = ", ".join(_pm(h, "fvu", "fvu_shard_sd") for h in held)  # ± sd over held-out shards where measured
    lines += [
        "",
        f"Held-out FVU of the two SAEs: {fvus} "
        f"(L0 {held[0]['l0']:.0f}). In the paper's Fig. 5, 4K latents (the size nearest ours) share "
        f"{_pct(doc['paper_shared_frac_at_4k_latents'])}, and its shortest training run (0.8B tokens) shares "
        f"{_pct(doc['paper_shared_frac_at_0p8b_tokens'])}.",
        *_seed_pairs_line(doc.get("shared_frac_seed_pairs"), "the same SAE trained with"),
        "",
        "Verdicts (computed from the numbers above):",
        f"- {aligned['claim']}: {_v(aligned)}.",
        f"- {headline['claim']}: {_v(headline)}"
        + (" — our SAEs train on far fewer tokens than the paper's shortest run, and the paper finds sharing rises"
           " with training tokens." if doc["profile"] != "paper" else "."),
    ]
    return "\n".join(lines)


def _seed_pairs_line(floor: dict | None, what: str) -> list[str]:
    """The noise floor of a shared fraction over seed pairs (`runs.seed_pair_floor`), as a README line; none without."""
    if not floor:
        return []
    n_seeds = len({s for p in floor["pairs"] for s in p.split("-")})
    own = f"; the pairs' own spread {_pct(floor['spread_sd'])}, shared seeds" if "spread_sd" in floor else ""
    return ["", f"Noise floor over training seeds: {what} {n_seeds} seeds shares {_pct(floor['mean'])} ± "
                f"{_pct(floor['sd'])} over its {len(floor['values'])} seed pairs ({_pct(min(floor['values']))}–"
                f"{_pct(max(floor['values']))}; ± one pair's sd, `metrics.shared_effects_spread`{own})."]


def _v(claim: dict) -> str:
    """A claim's verdict as markdown."""
    return verdict_md(claim["verdict"], claim.get("inconclusive", "scores at chance"))


def _setup(doc: dict) -> str:
    """The setup line: profile, scale, machine, and the convergence check where the figure records one."""
    conv = f" {convergence.describe(doc['convergence'])}" if "convergence" in doc else ""
    return f"Setup: **{doc['setup']}** — {doc['scale']}. Made on: {machine.describe(doc.get('machine'))}.{conv}"


def _head(title: str, alt: str, doc: dict) -> list[str]:
    """Section heading, the figure, and the setup line every section starts with."""
    return [f"### {title}", "", f"![{alt}](figures/{doc['stem']}.png)", "", _setup(doc), ""]


def fig2_section(doc: dict) -> str:
    c, n = doc["compared"], doc["n_seeds"]
    (rising,) = paulo.claims(doc["stem"], doc)
    found = ", ".join(f"{m} of {n}: {_pct(f)}" for m, f in doc["found_in_exactly_m"].items())
    return "\n".join([
        *_head("Paulo & Belrose Fig. 2 — similarity vs firing frequency, by how many seeds share a latent", "Fig 2", doc),
        "| quantity | ours | paper |", "|---|---|---|",
        f"| base latents in no other of the {n} SAEs | {_pct(c['only_in_base_frac']['ours'])} | "
        f"{_pct(c['only_in_base_frac']['paper'])} (its Fig. A1 at N={n}) |",
        f"| base latents in all {n} SAEs | {_pct(c['in_all_frac']['ours'])} | "
        f"{_pct(c['in_all_frac']['paper']) if c['in_all_frac']['paper'] is not None else f'{_pct(paulo.IN_ALL_9)} of {paulo.N_SEEDS} (n differs)'} |",
        "", f"Found in exactly m of the {n} SAEs: {found}. Spearman correlation of log firing frequency with "
        f"similarity: {doc['spearman_logfreq_vs_similarity']:.2f}.", "",
        f"- {rising['claim']}: {_v(rising)}.",
    ])


def figA1_section(doc: dict) -> str:
    fits, best = doc["fits"], doc["preferred_fit"]
    c = doc["offset_c"]
    rows = [f"| {name} | " + ", ".join(f"{k}={_f(v, '.3g')}±{_f(f['stderr'][k], '.2g')}" for k, v in f["params"].items())
            + f" | {_f(f['aic'], '.1f')} | {_f(f['bic'], '.1f')} |" for name, f in fits.items()]
    curve = doc["curve"]
    ours = " ".join(_f(v["ours"]["mean"], ".3f") for v in curve.values())
    paper = " ".join(f"{v['paper']:.3f}" for v in curve.values() if v["paper"] is not None)
    b = c["bootstrap"]
    better, offset = paulo.claims(doc["stem"], doc)
    return "\n".join([
        *_head("Paulo & Belrose Fig. A1 — latents only in the base SAE vs number of SAEs", "Fig A1", doc),
        f"Only-in-base fraction for N = 2…{doc['n_seeds']}: ours {ours}; paper {paper}.", "",
        "| fit | parameters (± s.e.) | AIC | BIC |", "|---|---|---|---|", *rows, "",
        f"Offset c = {_f(c['estimate'], '.3f')}, 95% bootstrap interval over base seeds "
        f"[{_f(b['lo'], '.3f')}, {_f(b['hi'], '.3f')}].", "",
        f"- {better['claim']}: {_v(better)}; preferred model: `{best}`.",
        f"- {offset['claim']}: {_v(offset)}.",
    ])


def figA2_section(doc: dict) -> str:
    c = doc["compared"]
    gap = doc["max_minus_hungarian_at_0.7"]
    (same,) = paulo.claims(doc["stem"], doc)
    return "\n".join([
        *_head("Paulo & Belrose Fig. A2 — shared fraction vs threshold, by rule", "Fig A2", doc),
        "| quantity | ours | paper |", "|---|---|---|",
        f"| mean alignment, matchings agree | {_num(c['mean_alignment_agree']['ours'])} | "
        f"{_num(c['mean_alignment_agree']['paper'])} |",
        f"| mean alignment, matchings disagree | {_num(c['mean_alignment_disagree']['ours'])} | "
        f"{_num(c['mean_alignment_disagree']['paper'])} |",
        f"| shared at 0.7, paper's rule | {_pct(c['shared_frac_paper_rule_at_0.7']['ours'])} | "
        f"{_pct(c['shared_frac_paper_rule_at_0.7']['paper'])} |", "",
        f"- {same['claim'].removesuffix(')')}; ours differ by {_f(None if gap is None else 100 * gap, '+.2f')} points): "
        f"{_v(same)}.",
    ])


def figA3_section(doc: dict) -> str:
    (nearest,) = paulo.claims(doc["stem"], doc)
    return "\n".join([
        *_head("Paulo & Belrose Fig. A3 — Hungarian-matched vs max cosine", "Fig A3", doc),
        f"{_pct(doc['frac_matched_to_nearest_neighbour'])} of latents are matched to their nearest neighbour "
        f"({_pct(doc['frac_nearest_neighbour_among_agreeing'])} of those whose two matchings agree); the max cosine "
        f"exceeds the matched one by {doc['mean_max_minus_matched_dec_cos']:.3f} on average.", "",
        f"- {nearest['claim']}: {_v(nearest)}.",
    ])


_AXIS = {"d_sae": "number of latents", "k": "k", "n_tokens": "training tokens"}


def fig5_section(doc: dict) -> str:
    lines = [*_head("Paulo & Belrose Fig. 5 — shared fraction vs number of latents, k and training tokens", "Fig 5", doc),
             "| axis | ours (value → shared) | paper (value → shared) |", "|---|---|---|"]
    for axis, rs in doc["ours"].items():
        ours = ", ".join(f"{r[axis]:,} → {_pct(r['shared_frac_paper'])}" for r in rs)
        paper = ", ".join(f"{int(k):,} → {_pct(v)}" for k, v in doc["paper"][axis].items())
        lines.append(f"| {_AXIS[axis]} | {ours} | {paper} |")
    lines += [*_seed_pairs_line(doc.get("base_seed_pairs"), "the base point trained with"), ""]
    for claim in paulo.claims(doc["stem"], doc):
        rho = claim["ours"]["spearman_rho"]
        rho_txt = "undefined (constant)" if rho is None else f"{rho:+.2f}"
        change = claim["ours"].get("last − first")
        change_txt = ("" if change is None else f"; first to last point {change * 100:+.1f} points, "
                      f"{'beyond' if claim['ours']['beyond noise'] else 'within'} the noise floor")
        lines.append(f"- {claim['claim']} (Spearman ρ {rho_txt}{change_txt}): {_v(claim)}.")
    return "\n".join(lines)


def figA4_section(doc: dict) -> str:
    lines = [*_head("Paulo & Belrose Fig. A4 — mean matched and mean max cosine vs number of latents, k, tokens", "Fig A4",
                   doc),
             "| axis | value → mean matched / mean max decoder cosine |", "|---|---|"]
    for axis, rs in doc["ours"].items():
        vals = ", ".join(f"{r[axis]:,} → {r['mean_matched_dec_cos']:.3f} / {r['mean_max_dec_cos']:.3f}" for r in rs)
        lines.append(f"| {_AXIS[axis]} | {vals} |")
    lines += ["", *(f"- {c['claim']}: {_v(c)}." for c in paulo.claims(doc["stem"], doc))]
    return "\n".join(lines)


def fig4_section(doc: dict) -> str:
    o, paper_arch = doc["ours"], doc["paper"]["architectures_decoder_only_gpt2"]
    by_size: dict[int, list[str]] = {}
    for r in o["layers"]:
        by_size.setdefault((r["hookpoint"].split(".")[0], r["d_sae"]), []).append(
            f"{r['hookpoint'].split('.')[1]} → {_pct(r['shared_frac_paper'])}")
    lines = [*_head("Paulo & Belrose Fig. 4 — shared fraction vs layer × size, MLP vs residual stream, architecture",
                    "Fig 4", doc),
             "| hookpoint kind, latents | layer → shared (paper's rule) |", "|---|---|"]
    lines += [f"| {kind}, {size:,} | {', '.join(v)} |" for (kind, size), v in by_size.items()]
    lines += ["", "| architecture | coefficient | held-out L0 (seed 0, 1) | held-out FVU | shared, decoder rule: ours | "
                  "paper (GPT-2) |", "|---|---|---|---|---|---|"]
    for r in o["architectures"]:
        coef = "—" if r["sparsity_coefficient"] is None else f"λ = {r['sparsity_coefficient']:.3g}"
        lines.append(f"| {r['architecture']} | {coef} | {', '.join(_f(x, '.1f') for x in r['heldout_l0'])} | "
                     f"{_fvus(r)} | {_pct(r['shared_frac_decoder_only'])} | "
                     f"{_pct(paper_arch.get(r['architecture']))} |")
    floor = (doc.get("seed_pairs") or {}).get("paper")
    lines += _seed_pairs_line(floor, "panel (c)'s TopK point trained with")
    edge, *rest = paulo.claims(doc["stem"], doc)
    sds = edge["ours"].get("sd") or {}
    edge_txt = ", ".join(f"{int(s):,} latents {_f(v, '+.3f')}" + (f" (sd {_f(sds[s], '.3f')})" if s in sds else "")
                         for s, v in edge["ours"]["edge_minus_middle"].items())
    lines += ["", f"- {edge['claim']} (edge − middle: {edge_txt}): {_v(edge)}."]
    for claim in rest:
        if "layers_where_first_shares_more" in claim["ours"]:
            o_ = claim["ours"]
            beyond = (f"; beyond the noise floor more at {o_['more beyond noise']}, fewer at {o_['fewer beyond noise']}"
                      if "more beyond noise" in o_ else "")
            lines.append(f"- {claim['claim']}: more at {o_['layers_where_first_shares_more']} of "
                         f"{o_['n_layers']} layers{beyond}: {_v(claim)}.")
        else:
            lines.append(f"- {claim['claim']}: {_v(claim)}.")
    return "\n".join(lines)


def _claims(doc: dict) -> list[str]:
    return render_claims(doc["claims"]).splitlines()


def heap_metrics_section(doc: dict) -> str:
    ours = doc["ours"]
    layers = sorted({h for rs in ours.values() for h in rs}, key=lambda h: int(h.split(".")[1]))
    lines = [*_head("Heap et al. — SAE metrics vs layer for trained, re-randomized, initial and control models",
                    "Heap metrics", doc),
             "| variant | " + " | ".join(f"{h}: FVU / CE score / KL score" for h in layers) + " |",
             "|---|" + "---|" * len(layers)]
    def row(name: str, rs: dict) -> str:
        return f"| {name} | " + " | ".join(
            f"{_pm(rs[h], 'fvu', 'fvu_shard_sd', _num)} / {_f(rs[h]['ce_loss_score'], '.2f')} / {_f(rs[h]['kl_score'], '.2f')}"
            if h in rs else "—" for h in layers) + " |"

    lines += [row(v, rs) for v, rs in ours.items()]
    if doc.get("frozen"):
        from .baselines import FROZEN_LABEL

        lines += [row(f"trained, {FROZEN_LABEL.get(f, f)}", rs) for f, rs in doc["frozen"].items()]
    lookup = {v: hs for v, hs in (doc.get("lookup_null") or {}).items() if any(r is not None for r in hs.values())}
    if lookup:
        lines += ["", "Token lookup null (are random-transformer SAEs learning token identity?): each held-out row "
                  "predicted by the mean training activation of its token / bigram, each mean shrunk toward its back-off "
                  "with a cross-validated weight n / (n + λ) (`metrics.lookup_fvu`).", "",
                  "| variant | " + " | ".join(f"{h}: SAE FVU / token lookup / bigram lookup" for h in layers) + " |",
                  "|---|" + "---|" * len(layers)]
        for v, hs in lookup.items():
            cells = [f"{_num(ours[v][h]['fvu'])} / {_num(hs[h]['unigram_fvu'])} / {_num(hs[h]['bigram_fvu'])}"
                     if hs.get(h) else "—" for h in layers]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    massive = [f"{v} {h}: {rs[h]['massive']['frac_rows_above']:.1%} of rows, top dimension "
               f"{rs[h]['massive']['top_dim_variance_share']:.0%} of variance"
               for v, rs in ours.items() for h in rs if rs[h].get("massive", {}).get("frac_rows_above", 0) > 0.001]
    notes = ["", "Massive activations (rows with norm > 10× the median; they dominate FVU): "
             + ("; ".join(massive) if massive else "none above 0.1% of rows") + "."]
    return "\n".join([*lines, *notes, "", "The paper's claims and our checks, our verdicts:", "", *_claims(doc)])


def heap_entropy_section(doc: dict) -> str:
    med = doc["ours"]["median_entropy_bits"]
    layers = sorted({h for rs in med.values() for h in rs}, key=lambda h: int(h.split(".")[1]))
    lines = [*_head("Heap et al. — token-distribution entropy of latents vs layer", "Heap entropy", doc),
             f"Median over latents of the entropy (bits; max {doc['ours']['max_entropy_bits']:.2f}) of the tokens at "
             "each latent's top activations.", "",
             "| variant | " + " | ".join(layers) + " |", "|---|" + "---|" * len(layers)]
    lines += [f"| {v} | " + " | ".join(_f(rs.get(h), ".2f") for h in layers) + " |" for v, rs in med.items()]
    return "\n".join([*lines, "", "The paper's claims, our verdicts:", "", *_claims(doc)])


def heap_toy_section(doc: dict) -> str:
    h1, h2 = doc["ours"]["hypothesis1"], doc["ours"]["hypothesis2"]
    depths = sorted({r["depth"] for r in h1})
    ps = sorted({r["p"] for r in h1 if r["sweep"] == "sparsity"})
    lines = [*_head("Heap et al. Section 4 — toy models", "Heap toy models", doc),
             "| feature probability p" + (" (recovery ± sd over seeds)" if "recovery_seed_sd" in h1[0] else "") + " | "
             + " | ".join(f"recovery, {d} random MLP blocks" for d in depths) + " |", "|---|" + "---|" * len(depths)]
    for p in ps:
        cells = [next(_pm(r, "recovery", "recovery_seed_sd") for r in h1
                      if r["sweep"] == "sparsity" and r["p"] == p and r["depth"] == d) for d in depths]
        lines.append(f"| {p:g} | " + " | ".join(cells) + " |")
    lines += ["", "Dense N(0, I) input: FVU(network output) / FVU(covariance-matched Gaussian) by depth (± sd over "
              "seeds): " + ", ".join(f"{r['depth']} → {_pm(r, 'fvu_ratio', 'fvu_ratio_seed_sd')}" for r in h2) + ".",
              "", *_claims(doc)]
    return "\n".join(lines)


PAPER_EXPLAINER = ("To run the papers' explainer and scorer, serve Llama-3.1-70B-Instruct behind any OpenAI-compatible "
                   "endpoint (e.g. `vllm serve meta-llama/Llama-3.1-70B-Instruct`) and run "
                   "`make figure STEM=<stem> PROFILE=paper` (its `api_base` is `http://localhost:8000/v1`; the key, if "
                   "any, is read from `$OPENAI_API_KEY`), or set `llm_backend: openai-compatible`, `llm_model` and "
                   "`api_base` in a notebook's parameters.")


def calibration_section(doc: dict) -> str:
    summ = doc["summary"]
    lines = [*_head("Auto-interp calibration — what the offline explainer and scorers can detect", "calibration", doc),
             "Synthetic latents that fire on a known token rule vs random-noise latents, through the same pipeline "
             "as SAE latents. *Separation*: the fraction of (rule, noise) pairs whose rule latent has the higher "
             "per-latent AUROC (0.5 = chance). `top-tokens` is a baseline explainer (no model).", "",
             "| explainer | scorer | rule AUROC | noise AUROC | separation | P(yes)+P(no) mass |", "|---|---|---|---|---|---|"]
    for e, by in summ.items():
        for sc, v in by.items():
            lines.append(f"| {e} | {sc} | {v['rule_mean']:.2f} | {v['noise_mean']:.2f} | {v['separation']:.2f} | "
                         f"{_f(v.get('answer_mass'), '.2f')} |")
    ok = [c for c in doc["claims"] if c["verdict"]]
    lines += ["", "Pipelines that separate rule from noise latents (separation ≥ 0.8): "
              + (", ".join(c["claim"].split(" separates")[0] for c in ok) if ok else "none") + ".", "",
              "Per-latent AUROCs and every explanation are in the JSON. " + PAPER_EXPLAINER]
    return "\n".join(lines)


def heap_roc_section(doc: dict) -> str:
    au = doc["auroc"]
    layers = list(next(iter(next(iter(au.values())).values())))
    lines = [*_head("Heap et al. App. B — auto-interp ROC curves, trained vs random transformers", "Heap ROC", doc),
             "Pooled AUROC per scorer, variant and layer (bootstrap bands in the figure; the paper shows curves only).", "",
             "| scorer | variant | " + " | ".join(layers) + " |", "|---|---|" + "---|" * len(layers)]
    for sc, by in au.items():
        lines += [f"| {sc} | {v} | " + " | ".join(_f(r.get(h), ".2f") for h in layers) + " |" for v, r in by.items()]
    caveat = ("" if doc["profile"] == "paper" else
              " The calibration above shows the offline scorers cannot tell known rules from noise, so none of these "
              "verdicts is evidence either way.")
    return "\n".join([*lines, "", "The paper's claims, our verdicts. They are mechanical: a verdict is *inconclusive* only "
                       "when every pooled AUROC of that scorer is within 1.96 bootstrap sd of 0.5." + caveat, "",
                       *_claims(doc)])


def paulo_fig3_section(doc: dict) -> str:
    lines = [*_head("Paulo & Belrose Fig. 3 — interpretability of latents by how many seeds share them", "Paulo Fig 3", doc),
             "Mean per-latent AUROC of seed-0 latents by the number of seeds (of "
             f"{len(next(iter(doc['mean_auroc_by_found'].values())))}) in which each is found:", "",
             "| scorer | " + " | ".join(next(iter(doc["mean_auroc_by_found"].values()))) + " |",
             "|---|" + "---|" * len(next(iter(doc["mean_auroc_by_found"].values())))]
    lines += [f"| {sc} | " + " | ".join(_f(v, ".2f") for v in by.values()) + " |" for sc, by in doc["mean_auroc_by_found"].items()]
    lines += ["", "| quoted number | ours | paper |", "|---|---|---|"]
    lines += [f"| {k} | {_num(v['ours']) if not isinstance(v['ours'], list) else ', '.join(_num(x) for x in v['ours'])} | "
              f"{_num(v['paper']) if not isinstance(v['paper'], list) else ', '.join(_num(x) for x in v['paper'])} |"
              for k, v in doc["compared"].items()]
    return "\n".join([*lines, "", *_claims(doc)])


def paulo_table1_section(doc: dict) -> str:
    lines = [*_head("Paulo & Belrose Table 1 — explanations of matched pairs by alignment", "Paulo Table 1", doc),
             f"Score: {doc['score']}. Ours:", "", "| alignment | seed 0 | seed 1 |", "|---|---|---|"]
    cell = lambda e, s: f"{e} ({s:.2f})".replace("|", "/")  # noqa: E731
    lines += [f"| {r['alignment']:.2f} | {cell(r['explanations'][0], r['scores'][0])} | {cell(r['explanations'][1], r['scores'][1])} |"
              for r in doc["ours"]]
    lines += ["", "The paper (Pythia-160M, Llama-3.1-70B detection score):", "", "| alignment | seed 1 | seed 2 |", "|---|---|---|"]
    lines += [f"| {r['alignment']:.2f} | {cell(r['explanations'][0], r['scores'][0])} | {cell(r['explanations'][1], r['scores'][1])} |"
              for r in doc["paper"]]
    return "\n".join([*lines, "", *_claims(doc)])


def leask_novel_section(doc: dict) -> str:
    c = doc["compared"]["novel_fraction_consecutive_mean"]
    lines = [*_head("Leask et al. — novel vs reconstruction latents across dictionary sizes", "Leask novel", doc),
             f"Fraction of the larger SAE's latents that are novel (max decoder cosine to the smaller SAE < θ = {doc['theta']}):", "",
             "| pair | novel | reconstruction |", "|---|---|---|"]
    lines += [f"| {n} | {_pct(v)} | {_pct(1 - v)} |" for n, v in doc["novel_fraction_at_theta"].items()]
    lines += ["", f"Mean over consecutive pairs: ours {_pct(c['ours'])}, paper ≈ {_pct(c['paper'])} (GPT-2 small).", "", *_claims(doc)]
    return "\n".join(lines)


def leask_stitching_section(doc: dict) -> str:
    lines = [*_head("Leask et al. — SAE stitching", "Leask stitching", doc),
             "Held-out MSE per token of S, S with L's novel / reconstruction latents inserted, and L:", "",
             "| pair | S | S + novel | S + reconstruction | L | novel / reconstruction latents | swap groups |",
             "|---|---|---|---|---|---|---|"]
    for n, r in doc["insertion"].items():
        lines.append(f"| {n} | {r['small']['mse']:.4g} | {r['small+novel']['mse']:.4g} | {r['small+reconstruction']['mse']:.4g} | "
                     f"{r['large_mse']:.4g} | {r['n_novel']} / {r['n_reconstruction']} | {r['n_groups']} |")
    return "\n".join([*lines, "", "The paper's claims, our verdicts:", "", *_claims(doc)])


def leask_meta_section(doc: dict) -> str:
    lines = [*_head("Leask et al. — meta-SAEs on decoder directions", "Leask meta-SAE", doc),
             "| meta-SAE width | decoder FVU (± sd over meta-SAE seeds) | L0 | FVU on structureless rows |", "|---|---|---|---|"]
    lines += [f"| {m['meta_size']} | {_pm(m, 'fvu', 'fvu_seed_sd')} | {m['l0']:.2f} | "
              f"{_pm(m, 'gaussian_rows_fvu', 'gaussian_rows_fvu_seed_sd')} |" for m in doc["meta"]]
    lines += ["", f"Examples (width {doc['examples_meta_size']}): "]
    for e in doc["examples"][:3]:
        lines.append(f"- meta-latent {e['meta_latent']} ({e['n_members']} base latents): "
                     + "; ".join(f"{m['latent']} → {' '.join(m['top_tokens'])}" for m in e["members"]))
    return "\n".join([*lines, "", *_claims(doc)])


def consistency_section(doc: dict) -> str:
    sg, ch, base = doc["pw_mcc_signed"], doc["pw_mcc_chance"], doc["pw_mcc_base_pairs"]
    r, sub, st = doc["reappearance"], doc["subspaces"], doc["stabilisation"]
    mean = lambda form: sum(v[form] for v in base.values()) / len(base)  # noqa: E731
    lines = [*_head("Beyond the papers — seed consistency, calibrated (PW-MCC, reappearance, chance levels)",
                    "consistency", doc),
             "| statistic | seed pairs (0, j) | two random dictionaries of the same shape |", "|---|---|---|"]
    lines += [f"| {name} | {mean(form):.3f} | {ch[form]['mean']:.3f} ± {ch[form]['sd']:.3f} |"
              for name, form in (("PW-MCC, signed", "signed"), ("PW-MCC, absolute", "absolute"),
                                 ("mean max \\|cos\\| (not a matching)", "mean_max_abs"))]
    steps = ", ".join(f"{int(m):,}: {v:.3f}" for m, v in st["pw_mcc_by_tokens"].items())
    lines += ["", f"Signed PW-MCC over all {doc['n_seeds'] * (doc['n_seeds'] - 1) // 2} seed pairs: {sg['mean']:.3f}. "
              f"{_pct(r['never_frac'])} of latents reappear in no other seed and {_pct(r['always_frac'])} in every one; "
              f"the never-reappearing carry {_pct(r['share_of_reconstruction_by_never'])} of the base SAE's "
              f"reconstruction energy. Principal angles between rank-{sub['rank']} subspaces of seeds 0 and 1 "
              f"(mean): unstable latents {_f(sub['mean_angle_unstable'], '.0f')}°, stable "
              f"{_f(sub['mean_angle_stable'], '.0f')}°, random {_f(sub['mean_angle_random'], '.0f')}°. "
              f"Seeds 0 and 1 by training tokens (signed PW-MCC): {steps}."]
    nulls = doc.get("data_nulls") or {}
    if nulls:
        from .nulls import LABEL

        n = next(iter(nulls.values()))["n_tokens"]
        lines += ["", f"Data nulls: seeds 0 and 1 trained for {n:,} tokens (same recipe and batches) on the real "
                  "activations and on data keeping only some of their statistics (`saesanity.nulls`):", "",
                  "| training data | shared (paper's rule) | signed PW-MCC | absolute PW-MCC | FVU on its own held-out rows |",
                  "|---|---|---|---|---|"]
        lines += [f"| {LABEL.get(m, 'real activations')} | {_pct(v['shared_frac'])} | {v['pw_mcc_signed']:.3f} | "
                  f"{_f(v['pw_mcc_absolute'], '.3f')} | {v['fvu']:.3f} |" for m, v in nulls.items()]
    lines += ["", *_claims(doc)]
    return "\n".join(lines)


def matryoshka_section(doc: dict) -> str:
    names = {"topk": "TopK (Fig. 1's pair)", "batchtopk": "BatchTopK", "matryoshka": "Matryoshka BatchTopK"}
    rows, bands, ch = doc["architectures"], doc["bands"], doc["pw_mcc_chance"]
    head = " / ".join(f"{a:,}–{b:,}" for a, b in bands)
    lines = [*_head("Beyond the papers — is a nested dictionary more stable across seeds? (Matryoshka vs TopK)",
                    "matryoshka", doc),
             f"| architecture | shared (paper's rule) | signed PW-MCC | held-out FVU (seed 0, 1) | L0 | shared by band, latents "
             f"ranked by frequency: {head} | by nested level (index) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {names[a]} | {_pct(r['shared_frac'])} | {r['pw_mcc_signed']:.3f} | "
              f"{_fvus(r)} | {sum(r['heldout_l0']) / len(r['heldout_l0']):.1f} | "
              f"{' / '.join(_pct(v) for v in r['frequency_bands'])} | "
              f"{' / '.join(_pct(v) for v in r['level_bands']) if 'level_bands' in r else '—'} |"
              for a, r in rows.items()]
    lines += ["", f"Two random dictionaries of the same shape: signed PW-MCC {ch['mean']:.3f} ± {ch['sd']:.3f}.", "",
              *_claims(doc)]
    return "\n".join(lines)


def leask_matryoshka_section(doc: dict) -> str:
    names = {"topk": "TopK", "matryoshka": "Matryoshka BatchTopK"}
    nov, pre, meta = doc["novel"], doc["prefix"], doc["meta"]
    pairs, ms = list(nov["topk"]), list(pre["matryoshka"])
    sizes = " / ".join(str(r["meta_size"]) for r in meta["topk"])
    fvus = lambda rows: " / ".join(_pm(r, "fvu", "fvu_seed_sd") for r in rows)  # noqa: E731
    lines = [*_head("Beyond the papers — is a nested dictionary more canonical? (Matryoshka vs TopK size families)",
                    "leask matryoshka", doc),
             f"| family | novel at θ={doc['theta']}: {' / '.join(pairs)} | mean | meta-SAE decoder FVU at {sizes} "
             "meta-latents |", "|---|---|---|---|"]
    for a in nov:
        novel = " / ".join(_pct(nov[a][p]["at_theta"]) for p in pairs)
        lines.append(f"| {names[a]} | {novel} | {_pct(doc['novel_mean'][a])} | {fvus(meta[a])} |")
    lines += ["", f"Gaussian rows of the same shape: meta-SAE decoder FVU {fvus([r['gaussian_rows'] for r in meta['topk']])}.",
              "", "| latents of the largest SAE that are reconstruction latents of the width-m SAE: first m / the rest | "
              + " | ".join(f"m = {int(m):,}" for m in ms) + " |", "|---|" + "---|" * len(ms)]
    rows = [("Matryoshka, its prefix (by index)", "matryoshka", "by_index"),
            ("Matryoshka, m most frequent", "matryoshka", "by_frequency"), ("TopK, m most frequent", "topk", "by_frequency")]
    for label, a, o in rows:
        lines.append(f"| {label} | " + " | ".join(f"{_pct(pre[a][m][o]['prefix'])} / {_pct(pre[a][m][o]['rest'])}"
                                                  for m in ms) + " |")
    return "\n".join([*lines, "", *_claims(doc)])


def synthetic_section(doc: dict) -> str:
    lines = [*_head("Beyond the papers — do consistency measures track ground truth? (synthetic features)",
                    "synthetic", doc),
             f"True L0 of the synthetic model: {doc['true_l0']:.1f}.", "",
             "| k | true-feature MCC | true features recovered | seeds: shared | seeds: signed PW-MCC "
             "| true feature, reappearing / not | FVU |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['k']} | {r['gt_mcc']:.3f} | {_pct(r['gt_recovered'])} | {_pct(r['seed_shared'])} | "
              f"{r['seed_pw_mcc']:.3f} | {_pct(r['true_given_reappears'])} / {_pct(r['true_given_not'])} | "
              f"{r['fvu']:.3f} |" for r in doc["rows"]]
    return "\n".join([*lines, "", *_claims(doc)])


SECTIONS = {"paulo_fig1_matched_cosines": fig1_section, "paulo_fig2_similarity_vs_frequency": fig2_section,
            "paulo_figA1_power_law_offset": figA1_section, "paulo_figA2_threshold_rules": figA2_section,
            "paulo_figA3_hungarian_vs_max": figA3_section, "paulo_fig5_overlap_vs_size_k_tokens": fig5_section,
            "paulo_figA4_mean_cosines_vs_size_k_tokens": figA4_section,
            "paulo_fig4_overlap_vs_layer_position_arch": fig4_section,
            "heap_metrics_vs_layer": heap_metrics_section, "heap_token_entropy": heap_entropy_section,
            "heap_toy_models": heap_toy_section, "autointerp_calibration": calibration_section,
            "heap_figB_autointerp_roc": heap_roc_section, "paulo_fig3_interp_vs_sharing": paulo_fig3_section,
            "paulo_table1_unpaired_explanations": paulo_table1_section, "leask_novel_fraction": leask_novel_section,
            "leask_stitching": leask_stitching_section, "leask_meta_sae": leask_meta_section,
            "consistency_seeds": consistency_section, "consistency_synthetic": synthetic_section,
            "consistency_matryoshka": matryoshka_section, "leask_matryoshka": leask_matryoshka_section}


def render(figs: Path | None = None) -> str:
    figs = figs or figures_dir()
    parts = []
    for stem, fn in SECTIONS.items():
        path = figs / f"{stem}.json"
        if path.exists():
            parts.append(fn(json.loads(path.read_text())))
        else:
            parts.append(f"### {stem}\n\nNot generated yet: `make figure STEM={stem}`.")
    return "\n\n".join(parts)


def render_example(figs: Path | None = None) -> str:
    """The README's `saesanity report` example: `figures/report/report.json` rendered as the command renders
    its report.md (one heading level down, images under figures/report/)."""
    from .cli import markdown

    path = (figs or figures_dir()) / "report" / "report.json"
    if not path.exists():
        return f"Not generated yet: `make figures` runs `{EXAMPLE_COMMAND}`."
    result = json.loads(path.read_text())
    figs_ = {name: f"figures/report/{name}.png" for name in ("stability", "baseline")}
    return "\n".join([f"Made by `{EXAMPLE_COMMAND}` (run by `make figures`):", "",
                      *markdown(result, figs_, heading="###")]).rstrip()


def render_tolerances() -> str:
    """The table of what each figure reproduces on another CPU (saesanity.figcheck's TOLERANCE / ILLUSTRATIVE)."""
    from . import figcheck

    lines = ["| figure | another CPU: a number passes within | compared on one machine only |", "|---|---|---|"]
    for stem in sorted(SECTIONS):
        rules = figcheck.TOLERANCE.get(stem, figcheck.DEFAULT_TOLERANCE)
        def cell(pat: str, a: float, r: float) -> str:
            where = f"`{pat}`: ".replace("|", "\\|") if pat else ("otherwise " if len(rules) > 1 else "")
            return where + (f"±{a:g}" if r == 0 else f"±({a:g} + {r:g}·\\|x\\|)")

        text = "; ".join(cell(*rule) for rule in rules)
        if stem not in figcheck.TOLERANCE:
            text += " (not yet measured across CPUs)"
        only = ", ".join(f"`{p}`" for p in figcheck.ILLUSTRATIVE.get(stem, [])) or "—"
        lines.append(f"| `{stem}` | {text} | {only} |")
    return "\n".join(lines)


def updated_readme(text: str, block: str, start: str = START, end: str = END) -> str:
    if start not in text or end not in text:
        raise ValueError(f"README.md needs the markers {start} and {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}\n{end}{tail}"


def main(argv: list[str]) -> int:
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    new = updated_readme(text, render())
    new = updated_readme(new, render_example(), EXAMPLE_START, EXAMPLE_END)
    new = updated_readme(new, render_tolerances(), REPRO_START, REPRO_END)
    if "--check" in argv:
        if new != text:
            print("README.md results are out of date: run `python -m saesanity.readme`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
